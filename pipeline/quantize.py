"""Full-int8 TFLite Micro export of the BiGRU student: a one-token *step* model and a *head* model.

A Keras GRU converts either to a WHILE loop (its int8 calibration fails) or, unrolled, to megabytes,
so the recurrence runs in the caller (the ESP32 firmware, or :func:`step_loop_int8` here):

* ``step.tflite``: inputs ``tokens`` int32 ``[1, 2]`` (forward token ``ids[t]``, backward token
  ``ids[T-1-t]``), ``h_fwd`` and ``h_bwd`` int8 ``[1, U]``; one GATHER looks both tokens up, then one
  GRU cell step per direction (Keras ``reset_after=True`` math, the student's weights; after
  conversion its sigmoids and tanh are 256-entry lookup tables, :mod:`pipeline.lut`); outputs the
  new int8 states ``h_fwd``, ``h_bwd``. Each state output has *exactly* its input's scale and zero
  point, so the caller feeds the output bytes straight back.
* ``head.tflite``: input ``pooled`` int8 ``[1, 2U]`` (mean of the states over time) -> Dense ->
  sigmoid -> int8 ``prob``.
* ``quant.json``: the constants the loop needs (state / pooled / prob scale and zero point, the
  tensor index of every input and output in each model, arena sizes, MACs, the optional
  ``id_map`` of a compacted embedding table).

The device loop, for ``T`` token ids (right padding removed; when pruning emptied embedding rows,
``quant.json`` has an ``id_map`` and every id ``i`` becomes ``id_map[i]`` first, see
:func:`compact_rows`)::

    hf[:] = zp_fwd; hb[:] = zp_bwd; sf[:] = 0; sb[:] = 0            # int8 states, int32 sums
    for t in 0..T-1:
        tokens = {ids[t], ids[T-1-t]}                                 # set EVERY input each step
        hf, hb = step(tokens, hf, hb); sf += hf; sb += hb
    pooled[j] = T ? clamp(floor(float(sf[j] - T*zp_fwd) * m_fwd / float(T) + 0.5f) + zp_pooled)
                  : zp_pooled                                          # likewise sb with m_bwd
    P(positive) = prob_scale * (head(pooled) - prob_zero_point)

with float32 ``m_fwd = fwd_scale / pooled_scale`` (``quant.json`` stores ``m_fwd``, ``m_bwd``).
Under Keras masking with right padding the backward GRU starts at the last real token, so the
backward state after step ``t`` is Keras' backward feature at position ``T-1-t``; the mean over time
only needs the sums, whose order does not matter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.lut import lut_activations, tflite_schema
from pipeline.models import TokenEmbedding

log = logging.getLogger(__name__)

STEP_FILE, HEAD_FILE, QUANT_FILE = "step.tflite", "head.tflite", "quant.json"
STEP_INPUTS, STEP_OUTPUTS = ("tokens", "h_fwd", "h_bwd"), ("h_fwd", "h_bwd")
HEAD_INPUTS, HEAD_OUTPUTS = ("pooled",), ("prob",)
MIN_ARENA_FLOOR = 1024  # smaller arenas are never tried (the wrapper crashes on 512 B or less)
FORMAT_VERSION = 1  # of quant.json and the step / head interface the device loop relies on
CONVERSION_VERSION = 2  # bump when convert_int8 makes different bytes from the same student (2: LUTs)

StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
HeadFn = Callable[[np.ndarray], Any]


# ----------------------------------------------------------------------------- float models


@keras.utils.register_keras_serializable(package="pipeline")
class TokenLookup(TokenEmbedding):
    """The student's ``tf.gather`` embedding without the padding mask (one GATHER op)."""

    def compute_mask(self, ids, mask=None):
        return None


@keras.utils.register_keras_serializable(package="pipeline")
class GRUStep(keras.layers.Layer):
    """One step of a Keras ``GRUCell(reset_after=True)`` (sigmoid gates, tanh candidate).

    ``call([x, h])`` with ``x [B, E]``, ``h [B, U]``; gates are ordered z, r, h as in Keras::

        gx = x @ kernel + input_bias;  gh = h @ recurrent_kernel + recurrent_bias
        z = sigmoid(gx_z + gh_z);  r = sigmoid(gx_r + gh_r);  c = tanh(gx_h + r * gh_h)
        h' = c + z * (h - c)        # = z * h + (1 - z) * c

    z and r stay two sigmoids: one sigmoid over both (one lookup table per direction instead of
    two, :mod:`pipeline.lut`) shares one int8 scale between them, and in a trial on the full run
    that pushed label agreement with the float student under the 99.5% bar.
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape) -> None:
        dim, u3 = int(input_shape[0][-1]), 3 * self.units
        self.kernel = self.add_weight(name="kernel", shape=(dim, u3))
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(self.units, u3))
        self.input_bias = self.add_weight(name="input_bias", shape=(u3,))
        self.recurrent_bias = self.add_weight(name="recurrent_bias", shape=(u3,))
        super().build(input_shape)

    def call(self, inputs):
        x, h = inputs
        xz, xr, xh = tf.split(tf.matmul(x, self.kernel) + self.input_bias, 3, axis=-1)
        hz, hr, hh = tf.split(tf.matmul(h, self.recurrent_kernel) + self.recurrent_bias, 3, axis=-1)
        z = tf.sigmoid(xz + hz)
        r = tf.sigmoid(xr + hr)
        c = tf.tanh(xh + r * hh)
        return c + z * (h - c)

    def set_from_cell(self, cell: keras.layers.GRUCell) -> None:
        """Copy a Keras ``GRUCell``'s weights (bias ``[2, 3U]``: input row, recurrent row)."""
        if not cell.reset_after or cell.activation is not keras.activations.tanh or (
            cell.recurrent_activation is not keras.activations.sigmoid
        ):
            raise ValueError("GRUStep reproduces GRU(reset_after=True, tanh, sigmoid) only")
        kernel, recurrent, bias = cell.get_weights()
        self.set_weights([kernel, recurrent, bias[0], bias[1]])

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def _student_parts(student: keras.Model) -> tuple[np.ndarray, keras.layers.Bidirectional]:
    table = student.get_layer("embedding").get_weights()[0]
    bigru = student.get_layer("bigru")
    if bigru.merge_mode != "concat":
        raise ValueError("the student's BiGRU must concatenate its directions")
    return table, bigru


def compact_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Drop embedding rows that are entirely zero (pruned), keeping one shared zero row.

    Returns ``(rows, id_map)``: ``rows[id_map[i]] == table[i]`` for every token id ``i``; ``id_map``
    is None (and ``rows`` the table) when fewer than two rows are zero. Row 0 (padding) never
    reaches the step model and counts as droppable. TFLM stores zeros densely, so this is how
    pruning shrinks the flash image.
    """
    zero = ~np.any(table != 0, axis=1)
    zero[0] = True
    if zero.sum() < 2:
        return table, None
    keep = np.nonzero(~zero)[0]
    id_map = np.full(len(table), len(keep), np.int32)  # dropped ids -> the shared zero row
    id_map[keep] = np.arange(len(keep), dtype=np.int32)
    rows = np.concatenate([table[keep], np.zeros((1, table.shape[1]), table.dtype)])
    return rows, id_map


def build_step_model(student: keras.Model, table: np.ndarray | None = None) -> keras.Model:
    """Float one-token model ``(tokens [1,2] int32, h_fwd [1,U], h_bwd [1,U]) -> (h_fwd, h_bwd)``.

    ``table`` replaces the student's embedding rows (:func:`compact_rows`); tokens index it.
    """
    full, bigru = _student_parts(student)
    table = full if table is None else table
    units = bigru.forward_layer.units
    tokens = keras.Input(shape=(2,), batch_size=1, dtype="int32", name="tokens")
    h_fwd = keras.Input(shape=(units,), batch_size=1, name="h_fwd")
    h_bwd = keras.Input(shape=(units,), batch_size=1, name="h_bwd")
    lookup = TokenLookup(*table.shape, name="embedding")
    x = lookup(tokens)
    lookup.set_weights([table])
    x_fwd, x_bwd = tf.unstack(x, axis=1)  # one UNPACK op
    out = []
    for name, x_dir, h, layer in (("h_fwd_next", x_fwd, h_fwd, bigru.forward_layer),
                                  ("h_bwd_next", x_bwd, h_bwd, bigru.backward_layer)):
        step = GRUStep(units, name=name)
        out.append(step([x_dir, h]))
        step.set_from_cell(layer.cell)
    return keras.Model([tokens, h_fwd, h_bwd], out, name="student_step")


def build_head_model(student: keras.Model) -> keras.Model:
    """Float head ``pooled [1, 2U] -> P(positive) [1, 1]`` with the student's output layer."""
    prob = student.get_layer("prob")
    pooled = keras.Input(shape=(prob.get_weights()[0].shape[0],), batch_size=1, name="pooled")
    dense = keras.layers.Dense(1, activation="sigmoid", name="prob")
    out = dense(pooled)
    dense.set_weights(prob.get_weights())
    return keras.Model(pooled, out, name="student_head")


def float_runners(student: keras.Model) -> tuple[StepFn, HeadFn]:
    """``(step_fn, head_fn)`` for :func:`step_loop` from the float step and head models."""
    step_model, head_model = build_step_model(student), build_head_model(student)
    step_call = tf.function(lambda a, b, c: step_model([a, b, c], training=False))
    head_call = tf.function(lambda p: head_model(p, training=False))

    def step_fn(tokens: np.ndarray, hf: np.ndarray, hb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, b = step_call(tf.constant(tokens), tf.constant(hf), tf.constant(hb))
        return f.numpy(), b.numpy()

    return step_fn, lambda pooled: float(head_call(tf.constant(pooled)).numpy().reshape(-1)[0])


# ----------------------------------------------------------------------------- quantization-aware training


def _qk():
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras


def _quantize_configs() -> dict[str, type]:
    """The tfmot ``QuantizeConfig`` classes of the QAT student (defined lazily: tfmot loads slowly)."""
    if _QCONFIGS:
        return _QCONFIGS
    qk = _qk()

    def weight_quantizer():
        return qk.quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                                narrow_range=True)

    def output_quantizer():
        return qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                    narrow_range=False)

    class GRUQuantizeConfig(qk.QuantizeConfig):
        """A ``Bidirectional(GRU)`` rounded as the int8 step model rounds it.

        Weights: kernel and recurrent kernel of both directions, 8-bit symmetric per tensor. Output:
        the per-timestep states, 8-bit asymmetric (moving-average range), like the step model's int8
        ``h_fwd``/``h_bwd``. Biases stay float (int32 on the device).
        """

        @staticmethod
        def _cells(layer):
            return layer.forward_layer.cell, layer.backward_layer.cell

        def get_weights_and_quantizers(self, layer):
            return [(getattr(c, n), weight_quantizer()) for c in self._cells(layer)
                    for n in ("kernel", "recurrent_kernel")]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            f, b = self._cells(layer)
            f.kernel, f.recurrent_kernel, b.kernel, b.recurrent_kernel = quantize_weights

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [output_quantizer()]

        def get_config(self):
            return {}

    class LogitQuantizeConfig(GRUQuantizeConfig):
        """A linear ``Dense``: 8-bit kernel, 8-bit output (the head's FULLY_CONNECTED output)."""

        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, weight_quantizer())]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]

    _QCONFIGS.update(GRUQuantizeConfig=GRUQuantizeConfig, LogitQuantizeConfig=LogitQuantizeConfig)
    return _QCONFIGS


_QCONFIGS: dict[str, type] = {}


def _built(layer: keras.layers.Layer, input_shape: tuple, weights: list[np.ndarray]):
    layer(tf.zeros(input_shape))
    layer.set_weights(weights)
    return layer


def build_qat_model(student: keras.Model) -> keras.Model:
    """The student with tfmot fake quantization where the int8 models round (QAT).

    ``ids -> embedding -> QuantizeWrapperV2(BiGRU, GRUQuantizeConfig) -> masked mean ->
    QuantizeWrapperV2(Dense "logit", 8-bit kernel + output) -> sigmoid``. The padding mask is passed
    explicitly (tfmot's wrapper does not propagate Keras masks). Starts from ``student``'s weights.
    """
    from pipeline.models import MaskedMeanPooling

    qk = _qk()
    table, bigru = _student_parts(student)
    prob = student.get_layer("prob")
    units = bigru.forward_layer.units
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    emb = TokenEmbedding(*table.shape, name="embedding")
    x = emb(ids)
    emb.set_weights([table])
    mask = keras.layers.Lambda(lambda t: tf.not_equal(t, 0), name="mask")(ids)
    inner = _built(keras.layers.Bidirectional.from_config(bigru.get_config()), (1, 2, table.shape[1]),
                   bigru.get_weights())
    qc = _quantize_configs()
    h = qk.QuantizeWrapperV2(inner, qc["GRUQuantizeConfig"](), name="bigru")(x, mask=mask)
    pooled = MaskedMeanPooling(name="pool")(h, mask=mask)
    dense = _built(keras.layers.Dense(1, name="logit_dense"), (1, 2 * units), prob.get_weights())
    logit = qk.QuantizeWrapperV2(dense, qc["LogitQuantizeConfig"](), name="logit")(pooled)
    out = keras.layers.Activation("sigmoid", name="prob")(logit)
    return keras.Model(ids, out, name="student_qat")


def student_from_qat(qat: keras.Model, student: keras.Model) -> keras.Model:
    """A plain student (same architecture as ``student``) holding ``qat``'s trained float weights."""
    out = keras.models.clone_model(student)
    out.set_weights(student.get_weights())
    out.get_layer("embedding").set_weights(qat.get_layer("embedding").get_weights())
    wrapper = qat.get_layer("bigru")
    kernels = [v.numpy() for v, _, _ in wrapper._weight_vars]  # fwd k, fwd rk, bwd k, bwd rk
    biases = [wrapper.layer.forward_layer.cell.bias.numpy(), wrapper.layer.backward_layer.cell.bias.numpy()]
    out.get_layer("bigru").set_weights(kernels[:2] + biases[:1] + kernels[2:] + biases[1:])
    logit = qat.get_layer("logit")
    out.get_layer("prob").set_weights([logit._weight_vars[0][0].numpy(), logit.layer.bias.numpy()])
    return out


def qat_prunable_weights(qat: keras.Model) -> dict[str, tf.Variable]:
    """The QAT model's float weights under :func:`pipeline.prune.prunable_weights`' names."""
    gru, logit = qat.get_layer("bigru"), qat.get_layer("logit")
    k = [v for v, _, _ in gru._weight_vars]  # fwd kernel, fwd recurrent, bwd kernel, bwd recurrent
    return {"embedding/embeddings": qat.get_layer("embedding").embeddings,
            "bigru/forward/kernel": k[0], "bigru/forward/recurrent_kernel": k[1],
            "bigru/backward/kernel": k[2], "bigru/backward/recurrent_kernel": k[3],
            "prob/kernel": logit._weight_vars[0][0]}


def qat_student(student_dir: Path, data_dir: Path, out_dir: Path, work_dir: Path, cfg,
                make_step=None, seq_len: int | None = None) -> dict[str, Any]:
    """Stage: quantization-aware fine-tuning of a float student -> a float student directory.

    Fine-tunes :func:`build_qat_model` (tfmot fake quantization of the GRU weights and states and of
    the output layer) with :func:`pipeline.train.fit` (``make_step``: e.g. the distillation step;
    default: labels only), then writes the trained float weights back into the plain student
    architecture, which :func:`quantize_student` converts. The fine-tuned weights are kept only if
    they lower the validation loss of the starting weights (early stopping with the start as epoch
    0); ``summary["kept"]`` says which. Reports validation loss and accuracy before/after.
    A pruned student (``masks.npz`` beside its model) keeps its zeros: the masks are re-applied
    after every step. ``seq_len`` (the release length) replaces the tokenizer's: fine-tuning,
    validation and everything downstream then see that many tokens per review.
    """
    from pipeline.models import load_model, save_model
    from pipeline.tokenizer import Tokenizer
    from pipeline.train import (
        bce,
        fit,
        labelled_ids,
        predict_proba,
        set_determinism,
        write_model_info,
    )

    set_determinism(cfg.seed)
    tok = Tokenizer.load(student_dir)
    if seq_len is not None:
        tok = Tokenizer(tok.model_proto, dataclasses.replace(tok.cfg, seq_len=seq_len))
    student = load_model(Path(student_dir) / "model.keras")
    splits = labelled_ids(data_dir, tok)
    x_val, y_val = splits["val"]
    p0 = predict_proba(student, x_val)
    before = float(np.mean((p0 >= 0.5) == (y_val >= 0.5)))
    loss_before = bce(y_val, p0)
    qat = build_qat_model(student)
    masks_file = Path(student_dir) / "masks.npz"
    if masks_file.exists():
        from pipeline.prune import load_masks, masked_step

        make_step = masked_step(load_masks(masks_file), make_step, qat_prunable_weights)
    state = fit(qat, splits["train"], splits["val"], cfg, Path(work_dir), make_step=make_step)
    tuned = student_from_qat(qat, student)
    p1 = predict_proba(tuned, x_val)
    after = float(np.mean((p1 >= 0.5) == (y_val >= 0.5)))
    # Early stopping with the starting point as epoch 0: fine-tuning is kept only if it lowers the
    # validation loss of the float weights that will be converted.
    kept = "qat" if bce(y_val, p1) < loss_before else "start"
    if kept == "start":
        log.info("qat: fine-tuning did not lower the validation loss (%.5f -> %.5f): keeping the "
                 "starting weights", loss_before, bce(y_val, p1))
        tuned = student
    out_dir = Path(out_dir)
    tok.save(out_dir)
    save_model(tuned, out_dir / "model.keras")
    summary = {"best_epoch": state["best_epoch"], "seq_len": tok.cfg.seq_len, "kept": kept,
               "val_loss_before": loss_before, "val_loss_after": bce(y_val, p1),
               "val_accuracy_before": before,
               "val_accuracy_after": after, "params": int(tuned.count_params())}
    if masks_file.exists():
        shutil.copyfile(masks_file, out_dir / "masks.npz")
    write_model_info(out_dir, {"keras": "model.keras"}, kind="student-qat", files=["model.keras"],
                     params=int(tuned.count_params()), qat=summary)
    (out_dir / "history.json").write_text(json.dumps(state, indent=2))
    return summary


# ----------------------------------------------------------------------------- reference loops


def step_loop(step_fn: StepFn, head_fn: HeadFn, ids: Sequence[int], units: int) -> float:
    """Float reference loop: P(positive) for one review's ids (no padding), like the student.

    ``step_fn(tokens int32 [1,2], h_fwd [1,U], h_bwd [1,U]) -> (h_fwd, h_bwd)``;
    ``head_fn(pooled [1, 2U]) -> P``.
    """
    T = len(ids)
    hf = np.zeros((1, units), np.float32)
    hb = np.zeros((1, units), np.float32)
    sf = np.zeros((1, units), np.float64)
    sb = np.zeros((1, units), np.float64)
    for t in range(T):
        hf, hb = step_fn(np.array([[ids[t], ids[T - 1 - t]]], np.int32), hf, hb)
        sf += hf
        sb += hb
    pooled = np.concatenate([sf, sb], axis=1) / max(T, 1)
    return float(head_fn(pooled.astype(np.float32)))


def requantize_pooled(sums: np.ndarray, n: int, zero_points: np.ndarray, multipliers: np.ndarray,
                      out_zero_point: int) -> np.ndarray:
    """int32 state sums over ``n`` steps -> the head's int8 ``pooled`` input (float32 math as in C).

    ``pooled = clamp(floor(float(sum - n*zp) * m / float(n) + 0.5) + out_zp, -128, 127)``.
    """
    if n == 0:
        return np.full(sums.shape, out_zero_point, np.int8)
    centred = (sums.astype(np.int64) - n * zero_points.astype(np.int64)).astype(np.float32)
    x = centred * multipliers.astype(np.float32) / np.float32(n) + np.float32(0.5)
    return np.clip(np.floor(x).astype(np.int64) + out_zero_point, -128, 127).astype(np.int8)


def step_loop_int8(step_fn: StepFn, head_fn: HeadFn, ids: Sequence[int], meta: dict) -> float:
    """The int8 device loop (the module docstring's pseudo-code): P(positive) for one review.

    ``step_fn`` maps int32 tokens and int8 states to int8 states, ``head_fn`` int8 pooled ``[1, 2U]``
    to the int8 prob; ``meta`` is :func:`convert_int8`'s ``meta`` (``quant.json``).
    """
    q, units, T = meta["quant"], meta["units"], len(ids)
    if meta.get("id_map") is not None:  # pruned rows dropped from the table (compact_rows)
        ids = [meta["id_map"][i] for i in ids]
    hf = np.full((1, units), q["h_fwd"]["zero_point"], np.int8)
    hb = np.full((1, units), q["h_bwd"]["zero_point"], np.int8)
    tokens = np.empty((T, 1, 2), np.int32)
    tokens[:, 0, 0], tokens[:, 0, 1] = ids, ids[::-1]
    states = np.empty((T, 2, units), np.int8)  # summed once at the end: same int32 sums
    for t in range(T):
        hf, hb = step_fn(tokens[t], hf, hb)
        states[t, 0], states[t, 1] = hf[0], hb[0]
    sums = states.sum(axis=0, dtype=np.int32).reshape(1, 2 * units)
    zps = np.repeat([q["h_fwd"]["zero_point"], q["h_bwd"]["zero_point"]], units)
    mult = np.repeat(np.float32([q["m_fwd"], q["m_bwd"]]), units)
    pooled = requantize_pooled(sums, T, zps, mult, q["pooled"]["zero_point"])
    out = int(np.asarray(head_fn(pooled)).reshape(-1)[0])
    return q["prob"]["scale"] * (out - q["prob"]["zero_point"])


# ----------------------------------------------------------------------------- calibration


def calibration_data(
    student: keras.Model, calibration_ids: Sequence[Sequence[int]], max_steps: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Real ``(tokens, h_fwd, h_bwd)`` step inputs and ``pooled`` head inputs from float runs.

    States come from the student's own BiGRU features: before step ``t`` the forward state is the
    feature at ``t-1`` and the backward state the backward feature at ``T-t`` (zeros at ``t=0``).
    """
    from pipeline.train import pad_batch

    rows = [list(r) for r in calibration_ids if len(r)]
    if not rows:
        raise ValueError("calibration needs at least one non-empty id list")
    units = student.get_layer("bigru").forward_layer.units
    feats = keras.Model(student.input, student.get_layer("bigru").output)
    steps: list[dict[str, np.ndarray]] = []
    heads: list[dict[str, np.ndarray]] = []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        H = np.asarray(feats.predict_on_batch(pad_batch(batch)), np.float32)
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


# ----------------------------------------------------------------------------- flatbuffer helpers



def _tensor_type_names() -> dict[int, str]:
    t = tflite_schema().TensorType
    return {v: k for k, v in vars(t).items() if not k.startswith("_")}


def _op_names() -> dict[int, str]:
    b = tflite_schema().BuiltinOperator
    return {v: k for k, v in vars(b).items() if not k.startswith("_")}


def io_map(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """Signature names -> positions in the flatbuffer's input / output lists (not signature order)."""
    s = tflite_schema()
    m = s.Model.GetRootAs(model_bytes, 0)
    sig, sg = m.SignatureDefs(0), m.Subgraphs(0)
    ins = [sg.Inputs(i) for i in range(sg.InputsLength())]
    outs = [sg.Outputs(i) for i in range(sg.OutputsLength())]
    return {
        "inputs": {sig.Inputs(i).Name().decode(): ins.index(sig.Inputs(i).TensorIndex())
                   for i in range(sig.InputsLength())},
        "outputs": {sig.Outputs(i).Name().decode(): outs.index(sig.Outputs(i).TensorIndex())
                    for i in range(sig.OutputsLength())},
    }


def _io_tensor(model_bytes: bytes, kind: str, pos: int):
    sg = tflite_schema().Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    return sg.Tensors(sg.Inputs(pos) if kind == "inputs" else sg.Outputs(pos))


def tensor_quant(model_bytes: bytes, kind: str, pos: int) -> dict[str, Any]:
    """``{"scale", "zero_point", "dtype"}`` of input/output ``pos`` (``kind``: inputs|outputs)."""
    t = _io_tensor(model_bytes, kind, pos)
    q = t.Quantization()
    has = q is not None and q.ScaleLength() > 0
    return {"scale": float(q.Scale(0)) if has else 0.0,
            "zero_point": int(q.ZeroPoint(0)) if has else 0,
            "dtype": _tensor_type_names()[t.Type()]}


def copy_quant(model_bytes: bytes, src_input: int, dst_output: int) -> bytes:
    """Give output ``dst_output`` the scale and zero point of input ``src_input`` (patched in place).

    The output is produced by an op that derives its requantization from the tensor at Prepare
    time (ADD here), so nothing else in the model depends on the old values.
    """
    buf = bytearray(model_bytes)
    src = _io_tensor(model_bytes, "inputs", src_input).Quantization()
    dst = _io_tensor(model_bytes, "outputs", dst_output).Quantization()
    for q in (src, dst):
        if q is None or q.ScaleLength() != 1 or q.ZeroPointLength() != 1:
            raise ValueError("expected per-tensor quantization on the state tensors")
    struct.pack_into("<f", buf, dst._tab.Vector(dst._tab.Offset(8)), src.Scale(0))
    struct.pack_into("<q", buf, dst._tab.Vector(dst._tab.Offset(10)), src.ZeroPoint(0))
    return bytes(buf)


def op_report(model_bytes: bytes) -> list[dict[str, Any]]:
    """Every operator with the types of its input and output tensors (``-1`` inputs omitted)."""
    m = tflite_schema().Model.GetRootAs(model_bytes, 0)
    names, types = _op_names(), _tensor_type_names()
    out = []
    for g in range(m.SubgraphsLength()):
        sg = m.Subgraphs(g)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            code = m.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ins, outs = (
                [types[sg.Tensors(j).Type()] for j in ix if j >= 0]
                for ix in (op.InputsAsNumpy(), op.OutputsAsNumpy())
            )
            out.append({"op": names.get(builtin, str(builtin)), "inputs": ins, "outputs": outs})
    return out


def float_ops(model_bytes: bytes) -> list[str]:
    """Operators touching a non-integer tensor (empty for a full-integer model)."""
    integer = {"INT8", "INT16", "INT32", "INT64"}
    return [o["op"] for o in op_report(model_bytes)
            if not set(o["inputs"] + o["outputs"]) <= integer]


def count_macs(model_bytes: bytes) -> int:
    """Multiply-accumulates of one invoke: the FULLY_CONNECTED weight sizes (batch 1)."""
    m = tflite_schema().Model.GetRootAs(model_bytes, 0)
    sg, names = m.Subgraphs(0), _op_names()
    total = 0
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        if names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) == "FULLY_CONNECTED":
            total += int(np.prod(sg.Tensors(op.Inputs(1)).ShapeAsNumpy()))
    return total


# ----------------------------------------------------------------------------- conversion


def _to_int8(model: keras.Model, samples: list[dict[str, np.ndarray]]) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter(samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def convert_int8(
    student: keras.Model, calibration_ids: Sequence[Sequence[int]], max_steps: int = 2000
) -> dict[str, Any]:
    """Calibrate and convert: ``{"step": bytes, "head": bytes, "meta": quant.json dict}``.

    Raises ``ValueError`` if any operator of either model touches a float tensor.
    """
    steps, heads = calibration_data(student, calibration_ids, max_steps)
    full_table, _ = _student_parts(student)
    rows, id_map = compact_rows(full_table)
    if id_map is not None:
        for s in steps:
            s["tokens"] = id_map[s["tokens"]]
    step = _to_int8(build_step_model(student, rows), steps)
    head = _to_int8(build_head_model(student), heads)
    step_io, head_io = io_map(step), io_map(head)
    for name, nxt in (("h_fwd", "h_fwd_next"), ("h_bwd", "h_bwd_next")):
        step = copy_quant(step, step_io["inputs"][name], step_io["outputs"][nxt])
    step, n_lut = lut_activations(step)  # the per-token model only: the head runs once a review
    log.info("step model: %d int8 activations replaced by lookup tables", n_lut)
    step_io["outputs"] = {n: step_io["outputs"][f"{n}_next"] for n in STEP_OUTPUTS}
    for name, blob in (("step", step), ("head", head)):
        if bad := float_ops(blob):
            raise ValueError(f"{name} model is not full-integer: float tensors at {bad}")
    table, bigru = _student_parts(student)
    q = {n: tensor_quant(step, "inputs", step_io["inputs"][n]) for n in STEP_OUTPUTS}
    q["pooled"] = tensor_quant(head, "inputs", head_io["inputs"]["pooled"])
    q["prob"] = tensor_quant(head, "outputs", head_io["outputs"]["prob"])
    for d in ("fwd", "bwd"):
        q[f"m_{d}"] = float(np.float32(q[f"h_{d}"]["scale"] / q["pooled"]["scale"]))
    meta = {
        "format": FORMAT_VERSION,
        "vocab_size": int(table.shape[0]), "embed_dim": int(table.shape[1]),
        "table_rows": int(rows.shape[0]),
        "id_map": None if id_map is None else id_map.tolist(),
        "units": int(bigru.forward_layer.units),
        **{name: {"file": file, **io, "bytes": len(blob), "macs": count_macs(blob),
                  "arena_bytes": min_arena(blob), "ops": sorted({o["op"] for o in op_report(blob)})}
           for name, file, io, blob in (("step", STEP_FILE, step_io, step),
                                        ("head", HEAD_FILE, head_io, head))},
        "quant": q,
    }
    return {"step": step, "head": head, "meta": meta}


def macs_per_review(meta: dict, n_tokens: int) -> int:
    """Multiply-accumulates for a review of ``n_tokens`` ids: ``n * step + head`` (FC layers only)."""
    return n_tokens * meta["step"]["macs"] + meta["head"]["macs"]


# ----------------------------------------------------------------------------- runtimes


def _tflm(model_bytes: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)


# A child process probes arena sizes: for some too-small arenas the TFLM Python wrapper crashes the
# process (seen at 512 B and below, and at 9,200 B for a 13 KB step model) instead of raising.
_ARENA_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
n_inputs = int(sys.argv[2])
for line in sys.stdin:
    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=int(line))
        for i in range(n_inputs):
            d = it.get_input_details(i)
            it.set_input(np.zeros(d["shape"], d["dtype"]), i)
        it.invoke()
        ok = 1
    except (RuntimeError, ValueError):
        ok = 0
    print(ok, flush=True)
"""


class _ArenaProber:
    """Answers "does the model build and invoke in N bytes?" from a child TFLM process.

    A crash of the child counts as "does not fit"; the next question starts a new child.
    """

    def __init__(self, model_bytes: bytes) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="arena-")
        self._model = Path(self._dir.name) / "model.tflite"
        self._model.write_bytes(model_bytes)
        self._inputs = len(io_map(model_bytes)["inputs"])
        self._child: subprocess.Popen | None = None

    def fits(self, size: int) -> bool:
        if self._child is None or self._child.poll() is not None:
            self._stop_child()
            self._child = subprocess.Popen(
                [sys.executable, "-c", _ARENA_PROBE, str(self._model), str(self._inputs)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            self._child.stdin.write(f"{size}\n")
            self._child.stdin.flush()
            answer = self._child.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:  # the child crashed on this size
            self._child.wait()
            return False
        return answer.strip() == "1"

    def _stop_child(self) -> None:
        if self._child is not None:
            for pipe in (self._child.stdin, self._child.stdout):
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()  # a live child reads EOF and exits
            self._child.wait()
            self._child = None

    def close(self) -> None:
        self._stop_child()
        self._dir.cleanup()

    def __enter__(self) -> _ArenaProber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fits_arena(model_bytes: bytes, size: int) -> bool:
    """Whether the TFLM interpreter builds the model in a ``size``-byte arena and invokes it."""
    with _ArenaProber(model_bytes) as probe:
        return probe.fits(size)


def min_arena(model_bytes: bytes, hi: int = 1 << 20) -> int:
    """Smallest TFLM arena that builds and invokes the model (host build; a multiple of 16 B).

    Bisection between 1 KB and ``hi``; smaller arenas are never tried (they crash the wrapper).
    """
    with _ArenaProber(model_bytes) as probe:
        if probe.fits(MIN_ARENA_FLOOR):
            return MIN_ARENA_FLOOR
        if not probe.fits(hi):
            raise ValueError(f"model does not fit a {hi}-byte arena")
        lo, hi = MIN_ARENA_FLOOR // 16, hi // 16  # in 16-byte units; lo fails, hi fits
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if probe.fits(16 * mid) else (mid, hi)
        return 16 * hi


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


class TflmModel:
    """The int8 step + head models in the TFLM interpreter (or ``tf.lite``), run by the device loop.

    ``arena`` defaults to each model's ``meta`` minimum (host-measured) plus ``arena_margin`` bytes.
    """

    def __init__(self, converted: dict[str, Any], runtime: str = "tflm",
                 arena: dict[str, int] | None = None, arena_margin: int = 0) -> None:
        meta = self.meta = converted["meta"]
        arena = arena or {k: meta[k]["arena_bytes"] + arena_margin for k in ("step", "head")}
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

    def predict(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """P(positive) per review, float32."""
        return np.array([self.predict_one(r) for r in ids], np.float32)


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


# ----------------------------------------------------------------------------- release files


def write_release(out_dir: Path, converted: dict[str, Any]) -> None:
    """Write ``step.tflite``, ``head.tflite`` and ``quant.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STEP_FILE).write_bytes(converted["step"])
    (out_dir / HEAD_FILE).write_bytes(converted["head"])
    (out_dir / QUANT_FILE).write_text(json.dumps(converted["meta"], indent=2, sort_keys=True))


def load_release(model_dir: Path) -> dict[str, Any]:
    """Read what :func:`write_release` wrote back into :func:`convert_int8`'s dict."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / QUANT_FILE).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{model_dir / QUANT_FILE}: format {meta.get('format')} is not "
                         f"{FORMAT_VERSION}")
    return {"step": (model_dir / meta["step"]["file"]).read_bytes(),
            "head": (model_dir / meta["head"]["file"]).read_bytes(), "meta": meta}


def copy_release(model_dir: Path, dest: Path) -> list[Path]:
    """Copy an int8 model folder's release files (models, ``quant.json``, tokenizer) to ``dest``."""
    model_dir, dest = Path(model_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = [STEP_FILE, HEAD_FILE, QUANT_FILE, "model.json", "tokenizer.model", "tokenizer.json"]
    for name in names:
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(model_dir / name, tmp)
        tmp.replace(dest / name)
    return [dest / n for n in names]


def load_tflm_predictor(
    model_dir: Path, runtime: str = "tflm"
) -> Callable[[Sequence[Sequence[int]]], np.ndarray]:
    """Truncated id lists -> P(positive) float32, from a release folder (``tflm`` or ``tflite``)."""
    return TflmModel(load_release(model_dir), runtime=runtime).predict


# ----------------------------------------------------------------------------- pipeline stage


def quantize_student(student_dir: Path, data_dir: Path, out_dir: Path,
                     calibration_reviews: int = 500) -> dict[str, Any]:
    """Stage: float student model directory -> full-int8 release folder (``--runtime tflm``).

    Calibrates on the first ``calibration_reviews`` training reviews (the split's order is a
    seeded hash order), writes ``step.tflite``, ``head.tflite``, ``quant.json``, the tokenizer and
    ``model.json`` with the device figures: flash bytes, minimum arenas, MACs, host TFLM ms.
    """
    from pipeline.data import read_jsonl
    from pipeline.models import load_model
    from pipeline.tokenizer import Tokenizer
    from pipeline.train import write_model_info

    tok = Tokenizer.load(student_dir)
    student = load_model(Path(student_dir) / "model.keras")
    rows = read_jsonl(Path(data_dir) / "train.jsonl")[:calibration_reviews]
    converted = convert_int8(student, [r for r in tok.ids([t for t, _ in rows]) if r])
    out_dir = Path(out_dir)
    write_release(out_dir, converted)
    tok.save(out_dir)
    meta = converted["meta"]
    device = {
        "flash_bytes": meta["step"]["bytes"] + meta["head"]["bytes"],
        # both interpreters live side by side on the device: their arenas add up
        "arena_bytes": meta["step"]["arena_bytes"] + meta["head"]["arena_bytes"],
        "macs_per_128_tokens": macs_per_review(meta, 128),
        "host_tflm_ms_per_128_tokens": round(ms_per_review(TflmModel(converted), 128), 3),
        "ops": {"step": meta["step"]["ops"], "head": meta["head"]["ops"]},
    }
    write_model_info(out_dir, {"tflm": QUANT_FILE, "tflite": QUANT_FILE}, kind="student-int8",
                     files=[STEP_FILE, HEAD_FILE], device=device)
    return device
