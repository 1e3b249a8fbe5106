"""Full-int8 conversion of the BiGRU student: calibration, TFLite conversion, the ``int8`` stage.

The step model is one custom operator, ``TINYSENT_BIGRU`` (:mod:`pipeline.device.gru`: the SPEC, its
constants quantized straight from the student's weights, no calibration: the states are fixed at
scale 1/128). The head model (:mod:`pipeline.device.step`) is calibrated on the student's own pooled
BiGRU features and converted with ``TFLiteConverter`` to full int8. ``step_format="builtin"`` still
makes the older builtin-operator step (calibrated on real step inputs, its state outputs given
their inputs' quantization, sigmoid / tanh as lookup tables, :mod:`pipeline.device.lut`). Both are
written as a release folder (:mod:`pipeline.device.release`) with the device figures.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.device import flatbuf, gru
from pipeline.device.arena import min_arena
from pipeline.device.lut import lut_activations
from pipeline.device.release import (
    FORMAT_VERSION,
    HEAD_FILE,
    QUANT_FILE,
    STEP_FILE,
    STEP_OUTPUTS,
    write_release,
)
from pipeline.device.runtime import TflmModel, ms_per_review
from pipeline.device.step import build_head_model, build_step_model, compact_rows
from pipeline.nn.models import student_parts

log = logging.getLogger(__name__)

CONVERSION_VERSION = 4  # bump when convert_int8 makes different bytes from the same student
# (2: LUTs, 3: the TINYSENT_BIGRU custom-operator step, 4: its spec v2, ``embedding_bits``)
STEP_FORMATS = ("custom", "builtin")
# A QAT output folder's float embedding table (pipeline.compress.qat): its model.keras holds the
# table as the device stores it, and quantize_student converts this one
LATENT_TABLE = "latent_embedding.npy"
# The custom step's arena is not measured here (the TFLM Python interpreter cannot load the custom
# operator): its only non-constant tensors are the 2 tokens and 4 states, plus TFLM's per-tensor
# bookkeeping (11 tensors) and the operator's ~100 B of OpData. The native 32-bit figure comes from
# the firmware build (``info`` prints the bytes really used).
CUSTOM_STEP_ARENA_BYTES = 2048


def calibration_data(
    student: keras.Model, calibration_ids: Sequence[Sequence[int]], max_steps: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Real ``(tokens, h_fwd, h_bwd)`` step inputs and ``pooled`` head inputs from float runs.

    States come from the student's own BiGRU features: before step ``t`` the forward state is the
    feature at ``t-1`` and the backward state the backward feature at ``T-t`` (zeros at ``t=0``).
    """
    from pipeline.nn.train import pad_batch, predict_batch

    rows = [list(r) for r in calibration_ids if len(r)]
    if not rows:
        raise ValueError("calibration needs at least one non-empty id list")
    units = student.get_layer("bigru").forward_layer.units
    feats = keras.Model(student.input, student.get_layer("bigru").output)
    steps: list[dict[str, np.ndarray]] = []
    heads: list[dict[str, np.ndarray]] = []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        H = np.asarray(predict_batch(feats, pad_batch(batch)), np.float32)
        for r, h in zip(batch, H, strict=True):
            T = len(r)
            heads.append({"pooled": h[:T].mean(0, keepdims=True)})
            z = np.zeros((1, units), np.float32)
            for t in range(T):
                steps.append({
                    "tokens": np.array([[r[t], r[T - 1 - t]]], np.int32),
                    "h_fwd": h[t - 1 : t, :units] if t else z,
                    "h_bwd": h[T - t : T - t + 1, units:] if t else z,
                })
    rng = np.random.default_rng(seed)
    if len(steps) > max_steps:
        steps = [steps[i] for i in sorted(rng.choice(len(steps), max_steps, replace=False))]
    return steps, heads


def _to_int8(model: keras.Model, samples: list[dict[str, np.ndarray]]) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter(samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def _cell_weights(cell: keras.layers.GRUCell) -> list[np.ndarray]:
    """``[kernel, recurrent_kernel, bias [2, 3U]]`` of a ``GRUCell(reset_after=True)``."""
    if not cell.reset_after or cell.activation is not keras.activations.tanh or (
            cell.recurrent_activation is not keras.activations.sigmoid):
        raise ValueError("the custom step implements GRU(reset_after=True, tanh, sigmoid) only")
    return cell.get_weights()


def _custom_step(student: keras.Model, rows: np.ndarray, embedding_bits: int = 8
                 ) -> tuple[bytes, dict[str, Any]]:
    """The ``TINYSENT_BIGRU`` step model and its ``quant.json`` entries."""
    _, bigru = student_parts(student)
    params = gru.quantize(rows, [_cell_weights(layer.cell)
                                 for layer in (bigru.forward_layer, bigru.backward_layer)],
                          embedding_bits=embedding_bits)
    step = gru.build_step_flatbuffer(params)
    extra = {"macs": gru.macs(params.embed_dim, params.units),
             "arena_bytes": CUSTOM_STEP_ARENA_BYTES, "arena_measured": False,
             "custom_op": {"name": gru.OP_NAME, "spec_version": gru.spec_version(params),
                           "pack_ru": gru.PACK_RU, "shift": params.shift,
                           "embedding_bits": params.embedding_bits,
                           "embedding_bytes": int(params.emb.nbytes) + (
                               0 if params.emb_mult is None else int(params.emb_mult.nbytes)),
                           "embedding": {"scale": params.emb_scale,
                                         "zero_point": params.emb_zero_point}}}
    return step, extra


def _builtin_step(student: keras.Model, rows: np.ndarray, steps: list[dict[str, np.ndarray]]
                  ) -> tuple[bytes, dict[str, Any]]:
    """The builtin-operator step model (format of the first releases) and its ``quant.json`` entries."""
    step_model = flatbuf.load(_to_int8(build_step_model(student, rows), steps))
    step_io = flatbuf.io_map(step_model)
    for name, nxt in (("h_fwd", "h_fwd_next"), ("h_bwd", "h_bwd_next")):
        flatbuf.copy_quant(step_model, step_io["inputs"][name], step_io["outputs"][nxt])
    n_lut = lut_activations(step_model)  # the per-token model only: the head runs once a review
    log.info("step model: %d int8 activations replaced by lookup tables", n_lut)
    step = flatbuf.pack(step_model)
    outputs = {n: step_io["outputs"][f"{n}_next"] for n in STEP_OUTPUTS}
    return step, {"outputs": outputs, "macs": flatbuf.count_macs(step),
                  "arena_bytes": min_arena(step)}


def convert_int8(
    student: keras.Model, calibration_ids: Sequence[Sequence[int]], max_steps: int = 2000,
    step_format: str = "custom", embedding_bits: int = 8,
) -> dict[str, Any]:
    """Calibrate and convert: ``{"step": bytes, "head": bytes, "meta": quant.json dict}``.

    ``step_format``: ``custom`` (the ``TINYSENT_BIGRU`` operator, its embedding table in
    ``embedding_bits`` 8 or 4, :mod:`pipeline.device.gru`) or ``builtin`` (8 only). Raises
    ``ValueError`` if any operator of either model touches a float tensor.
    """
    if step_format not in STEP_FORMATS:
        raise ValueError(f"step_format {step_format!r} is not one of {STEP_FORMATS}")
    if step_format == "builtin" and embedding_bits != 8:
        raise ValueError("the builtin-operator step has an 8-bit embedding table only")
    steps, heads = calibration_data(student, calibration_ids, max_steps)
    full_table, bigru = student_parts(student)
    rows, id_map = compact_rows(full_table)
    if step_format == "custom":
        step, step_meta = _custom_step(student, rows, embedding_bits)
    else:
        if id_map is not None:
            for s in steps:
                s["tokens"] = id_map[s["tokens"]]
        step, step_meta = _builtin_step(student, rows, steps)
    head = flatbuf.exact_fc_scales(_to_int8(build_head_model(student), heads))  # same in every TFLM
    step_io, head_io = flatbuf.io_map(step), flatbuf.io_map(head)
    step_io.update({k: v for k, v in step_meta.items() if k == "outputs"})
    for name, blob in (("step", step), ("head", head)):
        if bad := flatbuf.float_ops(blob):
            raise ValueError(f"{name} model is not full-integer: float tensors at {bad}")
    q = {n: flatbuf.tensor_quant(step, "inputs", step_io["inputs"][n]) for n in STEP_OUTPUTS}
    q["pooled"] = flatbuf.tensor_quant(head, "inputs", head_io["inputs"]["pooled"])
    q["prob"] = flatbuf.tensor_quant(head, "outputs", head_io["outputs"]["prob"])
    for d in ("fwd", "bwd"):
        q[f"m_{d}"] = float(np.float32(q[f"h_{d}"]["scale"] / q["pooled"]["scale"]))
    step_entry = {"file": STEP_FILE, **step_io, "bytes": len(step), "ops": flatbuf.op_set(step),
                  **{k: v for k, v in step_meta.items() if k != "outputs"}}
    head_entry = {"file": HEAD_FILE, **head_io, "bytes": len(head), "macs": flatbuf.count_macs(head),
                  "arena_bytes": min_arena(head), "ops": flatbuf.op_set(head)}
    meta = {
        "format": FORMAT_VERSION,
        "vocab_size": int(full_table.shape[0]), "embed_dim": int(full_table.shape[1]),
        "table_rows": int(rows.shape[0]),
        "id_map": None if id_map is None else id_map.tolist(),
        "units": int(bigru.forward_layer.units),
        "step": step_entry, "head": head_entry,
        "quant": q,
    }
    return {"step": step, "head": head, "meta": meta}


def compare_precisions(
    start: keras.Model, tuned: keras.Model, splits: dict[str, tuple[Sequence[Sequence[int]], np.ndarray]],
    calibration_ids: Sequence[Sequence[int]], embedding_bits: int, max_reviews: int = 2000,
) -> dict[str, Any]:
    """What QAT buys, through the device path: per split (``{name: (ids, labels)}``, the first
    ``max_reviews`` of each), accuracy and loss of the float ``start`` student, PTQ of ``start`` at
    an 8-bit and at an ``embedding_bits`` embedding table, and the QAT-``tuned`` student converted
    at ``embedding_bits`` (``convert_int8`` + :class:`TflmModel`, the ``--runtime tflm`` loop), with
    each release's model bytes and embedding-table bytes.
    """
    from pipeline.nn.train import bce, predict_proba

    variants = {"ptq_8": (start, 8), f"ptq_{embedding_bits}": (start, embedding_bits),
                f"qat_{embedding_bits}": (tuned, embedding_bits)}
    models = {}
    for name, (student, bits) in variants.items():
        c = convert_int8(student, calibration_ids, embedding_bits=bits)
        op = c["meta"]["step"]["custom_op"]
        models[name] = (TflmModel(c), {"embedding_bits": bits, "model_bytes": len(c["step"]) + len(c["head"]),
                                       "embedding_bytes": op["embedding_bytes"]})
    out: dict[str, Any] = {"embedding_bits": embedding_bits, "max_reviews": max_reviews, "splits": {}}
    for split, (ids, y) in splits.items():
        ids, y = list(ids[:max_reviews]), np.asarray(y[:max_reviews], np.float32)

        def score(p: np.ndarray, y: np.ndarray = y) -> dict[str, float]:
            return {"accuracy": float(np.mean((p >= 0.5) == (y >= 0.5))), "loss": bce(y, p)}

        rows: dict[str, Any] = {"reviews": len(y), "float": score(predict_proba(start, ids)),
                                "qat_float": score(predict_proba(tuned, ids))}
        for name, (model, info) in models.items():
            rows[name] = {**score(model.predict(ids)), **info}
        out["splits"][split] = rows
    return out


def macs_per_review(meta: dict, n_tokens: int) -> int:
    """Multiply-accumulates for a review of ``n_tokens`` ids: ``n * step + head`` (FC layers only)."""
    return n_tokens * meta["step"]["macs"] + meta["head"]["macs"]


def measure_arena_32bit(release_dir: Path) -> dict[str, int] | None:
    """The 32-bit arena minimums of a release (the riscv32 firmware build under QEMU), or None
    with a warning when the toolchain is missing (the firmware then sizes its arena from the
    64-bit host minimum: larger)."""
    from pipeline.device.native import NativeBuildError, missing_tools

    if missing := missing_tools("riscv32"):
        log.warning("32-bit arena not measured (missing %s): the firmware's arena is sized from "
                    "the 64-bit host minimum", ", ".join(missing))
        return None
    from pipeline.device.bench import arena_minimum

    try:
        return arena_minimum(release_dir, "riscv32", kernels=("esp_nn",))["esp_nn"]
    except (NativeBuildError, RuntimeError, OSError) as e:
        log.warning("32-bit arena not measured (%s)", e)
        return None


def quantize_student(student_dir: Path, data_dir: Path, out_dir: Path,
                     calibration_reviews: int = 500, embedding_bits: int = 8) -> dict[str, Any]:
    """Stage: float student model directory -> full-int8 release folder (``--runtime tflm``).

    Calibrates on the first ``calibration_reviews`` training reviews (the split's order is a
    seeded hash order), the step's embedding table in ``embedding_bits``, writes ``step.tflite``,
    ``head.tflite``, ``quant.json``, the tokenizer and ``model.json`` with the device figures: flash
    bytes, minimum arenas, MACs, host ms (the custom step runs in NumPy on the host, so that figure
    is no longer TFLM's).
    """
    from pipeline.data import iter_jsonl
    from pipeline.nn.models import load_model
    from pipeline.nn.train import write_model_info
    from pipeline.text.tokenizer import Tokenizer

    tok = Tokenizer.load(student_dir)
    student = load_model(Path(student_dir) / "model.keras")
    latent = Path(student_dir) / LATENT_TABLE
    if latent.exists():  # a QAT output: quantize the float table QAT kept (exactly its codes)
        student.get_layer("embedding").set_weights([np.load(latent)])
    rows = list(itertools.islice(iter_jsonl(Path(data_dir) / "train.jsonl"), calibration_reviews))
    converted = convert_int8(student, [r for r in tok.ids([t for t, _ in rows]) if r],
                             embedding_bits=embedding_bits)
    out_dir = Path(out_dir)
    write_release(out_dir, converted)
    tok.save(out_dir)
    meta = converted["meta"]
    if arena_32bit := measure_arena_32bit(out_dir):
        for name in ("step", "head"):
            meta[name]["arena_bytes_32bit"] = arena_32bit[name]
        write_release(out_dir, converted)
    device = {
        "flash_bytes": meta["step"]["bytes"] + meta["head"]["bytes"],
        # both interpreters live side by side on the device: their arenas add up
        "arena_bytes": meta["step"]["arena_bytes"] + meta["head"]["arena_bytes"],
        "arena_bytes_32bit": (meta["step"].get("arena_bytes_32bit", 0)
                              + meta["head"].get("arena_bytes_32bit", 0)) or None,
        "macs_per_128_tokens": macs_per_review(meta, 128),
        "host_tflm_ms_per_128_tokens": round(ms_per_review(TflmModel(converted), 128), 3),
        "ops": {"step": meta["step"]["ops"], "head": meta["head"]["ops"]},
    }
    write_model_info(out_dir, {"tflm": QUANT_FILE, "tflite": QUANT_FILE}, kind="student-int8",
                     files=[STEP_FILE, HEAD_FILE], device=device)
    return device
