"""The int8 release run by an interpreter: TFLM's Python interpreter (``tflm``) or ``tf.lite``.

``TflmModel`` drives the device loop of :mod:`pipeline.device.loop`. The head model runs in the TFLM
Python interpreter (``tflite-micro``) or, for comparison, in ``tf.lite`` (which is not bit-exact with
TFLM). The step model: a custom-operator step (``quant.json``'s ``step.custom_op``, format 2) runs
by the NumPy SPEC of :mod:`pipeline.device.gru` on the constants read back from the ``.tflite``
bytes, under both runtimes (the independent cross-check of the firmware's C kernel); a
builtin-operator step (format 1 releases) in the same interpreter as the head. Only ``tflite``
imports TensorFlow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.device import gru
from pipeline.device.loop import head_probability, step_loop_int8
from pipeline.device.release import HEAD_INPUTS, HEAD_OUTPUTS, STEP_INPUTS, STEP_OUTPUTS, load_release


def _tflm(model_bytes: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)


class _Runner:
    """One model in TFLM or ``tf.lite``: ``run(*inputs by signature name order) -> outputs``."""

    def __init__(self, model_bytes: bytes, io: dict, in_names: Sequence[str],
                 out_names: Sequence[str], runtime: str, arena_size: int) -> None:
        self.in_pos = [io["inputs"][n] for n in in_names]
        self.out_pos = [io["outputs"][n] for n in out_names]
        self.runtime = runtime
        if runtime == "tflm":
            self.interp = _tflm(model_bytes, arena_size)
        elif runtime == "tflite":
            import tensorflow as tf

            self.interp = tf.lite.Interpreter(
                model_content=model_bytes, num_threads=1,
                experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
            self.interp.allocate_tensors()
            ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
            self.in_idx = [ins[p]["index"] for p in self.in_pos]
            self.out_idx = [outs[p]["index"] for p in self.out_pos]
        else:
            raise ValueError(f"unknown runtime {runtime!r} (tflm or tflite)")

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        it = self.interp
        if self.runtime == "tflm":
            for pos, x in zip(self.in_pos, inputs, strict=True):
                it.set_input(x, pos)  # every input, every invoke: TFLM may reuse their memory
            it.invoke()
            return [it.get_output(p) for p in self.out_pos]  # get_output returns a copy
        for idx, x in zip(self.in_idx, inputs, strict=True):
            it.set_tensor(idx, x)
        it.invoke()
        return [it.get_tensor(i).copy() for i in self.out_idx]


class _SpecStep:
    """A ``TINYSENT_BIGRU`` step model run by the NumPy SPEC (:mod:`pipeline.device.gru`)."""

    def __init__(self, model_bytes: bytes, op: dict) -> None:
        if op.get("name") != gru.OP_NAME or op.get("spec_version") not in (1, 2, gru.GRU_SPEC_VERSION):
            raise ValueError(f"step custom operator {op} is not {gru.OP_NAME} spec "
                             f"v{gru.GRU_SPEC_VERSION} (or v1, v2)")
        self.params = gru.read_step_flatbuffer(model_bytes)
        self._step = gru.step_fn(self.params)

    def run(self, tokens: np.ndarray, hf: np.ndarray, hb: np.ndarray) -> list[np.ndarray]:
        return list(self._step(tokens, hf, hb))


class TflmModel:
    """The int8 step + head models in the TFLM interpreter (or ``tf.lite``), run by the device loop.

    ``arena`` defaults to each model's ``meta`` minimum (host-measured) plus ``arena_margin`` bytes.
    """

    def __init__(self, converted: dict[str, Any], runtime: str = "tflm",
                 arena: dict[str, int] | None = None, arena_margin: int = 0) -> None:
        meta = self.meta = converted["meta"]
        arena = arena or {k: meta[k]["arena_bytes"] + arena_margin for k in ("step", "head")}
        if meta["step"].get("custom_op") is not None:
            if runtime not in ("tflm", "tflite"):
                raise ValueError(f"unknown runtime {runtime!r} (tflm or tflite)")
            self.step: _Runner | _SpecStep = _SpecStep(converted["step"], meta["step"]["custom_op"])
        else:
            self.step = _Runner(converted["step"], meta["step"], STEP_INPUTS, STEP_OUTPUTS,
                                runtime, arena["step"])
        self.head = _Runner(converted["head"], meta["head"], HEAD_INPUTS, HEAD_OUTPUTS,
                            runtime, arena["head"])

    def step_fn(self, tokens: np.ndarray, hf: np.ndarray, hb: np.ndarray) -> tuple[np.ndarray, ...]:
        f, b = self.step.run(tokens, hf, hb)
        return f, b

    def head_fn(self, pooled: np.ndarray) -> np.ndarray:
        return self.head.run(pooled)[0]

    def predict_one(self, ids: Sequence[int]) -> float:
        """P(positive) for one review's (truncated, unpadded) ids."""
        return step_loop_int8(self.step_fn, self.head_fn, ids, self.meta)

    def predict(self, ids: Sequence[Sequence[int]], batch: int = 256) -> np.ndarray:
        """P(positive) per review, float32.

        A custom-operator step runs the SPEC over ``batch`` reviews of similar length at once (the
        same integer math per review as :meth:`predict_one`); a builtin-operator step, one review
        at a time in the interpreter.
        """
        if not isinstance(self.step, _SpecStep):
            return np.array([self.predict_one(r) for r in ids], np.float32)
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.empty(len(ids), np.float32)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            out[idx] = self._spec_batch([ids[i] for i in idx])
        return out

    def _spec_batch(self, rows: list[Sequence[int]]) -> np.ndarray:
        """:func:`step_loop_int8` for reviews sorted by length: the SPEC step on the live rows."""
        meta, p = self.meta, self.step.params
        q, units = meta["quant"], meta["units"]
        if meta.get("id_map") is not None:
            rows = [[meta["id_map"][i] for i in r] for r in rows]
        lens = np.array([len(r) for r in rows], np.int64)
        tokens = np.zeros((len(rows), 2, int(lens.max(initial=0))), np.int64)
        for k, r in enumerate(rows):
            tokens[k, 0, :len(r)], tokens[k, 1, :len(r)] = r, r[::-1]
        h = np.empty((len(rows), 2, units), np.int8)
        h[:, 0], h[:, 1] = q["h_fwd"]["zero_point"], q["h_bwd"]["zero_point"]
        sums = np.zeros((len(rows), 2, units), np.int64)
        for t in range(tokens.shape[2]):
            k0 = int(np.searchsorted(lens, t, side="right"))  # rows still running: k0 ...
            h[k0:] = gru.step(p, tokens[k0:, :, t], h[k0:])
            sums[k0:] += h[k0:]
        return np.array([head_probability(sums[k], int(lens[k]), self.head_fn, meta)
                         for k in range(len(rows))], np.float32)


def ms_per_review(model: TflmModel, n_tokens: int = 128, repeats: int = 20) -> float:
    """Host wall-clock ms of :meth:`TflmModel.predict_one` on an ``n_tokens`` review (best of N)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, model.meta["vocab_size"], n_tokens).tolist()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_one(ids)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best



def load_tflm_predictor(
    model_dir: Path, runtime: str = "tflm"
) -> Callable[[Sequence[Sequence[int]]], np.ndarray]:
    """Truncated id lists -> P(positive) float32, from a release folder (``tflm`` or ``tflite``)."""
    return TflmModel(load_release(model_dir), runtime=runtime).predict
