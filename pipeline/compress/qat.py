"""Quantization-aware training of the BiGRU student (tfmot), where the device step rounds.

The fake quantization follows the ``TINYSENT_BIGRU`` SPEC (``pipeline/device/gru.py``) where it
matters: the embedding table exactly as the conversion stores it at the release's
``embedding_bits`` (4 / 2: per-row 4-bit / 2-bit codes rescaled to one int8 scale; 8: per-tensor
asymmetric int8) by a straight-through estimator (:class:`QuantEmbedding`); the GRU's kernels and
recurrent kernels per-row symmetric int8 (tfmot ``LastValueQuantizer``, per axis over the 3U output rows); the
per-timestep states at the spec's fixed scale 1/128 (``FixedQuantizer`` over [-1, 127/128]); the
output layer 8-bit like the head. tfmot's ``quantize_model`` rejects ``Bidirectional(GRU)``, so the
model is built by hand with ``QuantizeWrapperV2``. Not simulated: the int8 rounding of the state fed
back inside the recurrence (Keras' fused GRU loop), the Q9 gate pre-activations and the tables.
The stage fine-tunes it and writes the kept weights (QAT's, or the start's when QAT did not help) back
into the plain student, its embedding table as the device stores it: the int8 release's float
reference, with the float table beside it, which :mod:`pipeline.device.convert` quantizes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.device.gru import (
    EMB2_INT8_MAX,
    EMB2_SHIFT,
    EMB4_INT8_MAX,
    EMB_MULT_LIMIT,
    EMB_SHIFT,
    SIG_SHIFT,
    TANH_SHIFT,
    F,
    sig_table,
    tanh_table,
)
from pipeline.nn.models import TokenEmbedding, student_parts
from pipeline.text.records import IdRecords

log = logging.getLogger(__name__)


def fake_embedding(w: tf.Tensor, bits: int) -> tf.Tensor:
    """The real values the conversion stores for table ``w`` (``pipeline.device.gru.quantize``).

    4: ``r_v = max|row| / 7``, ``q = clip(round(w / r_v), -7, 7)``, ``s_e = max|w| / 111``,
    ``M_v = round(r_v / s_e * 2^ES)``, ``e = floor((q * M_v + 2^(ES-1)) / 2^ES)``, real ``s_e * e``;
    2: ``D_v = RMS(row_v)``, ``q = clip(2 * floor(w / D_v) + 1, -3, 3)``, ``s_e = 1.5 * max D_v / 94``,
    ``M_v = round(D_v / 2 / s_e * 2^3)``, ``e = floor((q * M_v + 2^2) / 2^3)``, real ``s_e * e``;
    8: per-tensor asymmetric int8 over the table's range (including 0).
    """
    if bits == 2:
        d = tf.sqrt(tf.reduce_mean(tf.square(w), axis=1, keepdims=True))  # 0: an all-zero row, M 0
        q = tf.clip_by_value(2.0 * tf.floor(w / tf.where(d > 0, d, 1.0)) + 1.0, -3.0, 3.0)
        s_e = 1.5 * tf.reduce_max(d) / EMB2_INT8_MAX
        s_e = tf.where(s_e > 0, s_e, 1.0)
        m = tf.minimum(tf.round(d / 2.0 / s_e * 2.0 ** EMB2_SHIFT), EMB_MULT_LIMIT - 1.0)
        return tf.floor((q * m + 2.0 ** (EMB2_SHIFT - 1)) / 2.0 ** EMB2_SHIFT) * s_e
    if bits == 4:
        a = tf.abs(w)
        s_e = tf.reduce_max(a) / EMB4_INT8_MAX
        s_e = tf.where(s_e > 0, s_e, 1.0)
        r = tf.reduce_max(a, axis=1, keepdims=True) / 7.0
        q = tf.clip_by_value(tf.round(w / tf.where(r > 0, r, 1.0)), -7.0, 7.0)
        m = tf.minimum(tf.round(r / s_e * 2.0 ** EMB_SHIFT), EMB_MULT_LIMIT - 1.0)
        return tf.floor((q * m + 2.0 ** (EMB_SHIFT - 1)) / 2.0 ** EMB_SHIFT) * s_e
    if bits == 8:
        lo, hi = tf.minimum(tf.reduce_min(w), 0.0), tf.maximum(tf.reduce_max(w), 0.0)
        scale = tf.where(hi > lo, (hi - lo) / 255.0, 1.0)
        zp = tf.clip_by_value(tf.round(-128.0 - lo / scale), -128.0, 127.0)
        return (tf.clip_by_value(tf.round(w / scale) + zp, -128.0, 127.0) - zp) * scale
    raise ValueError(f"embedding bits must be 2, 4 or 8, not {bits}")


class QuantEmbedding(TokenEmbedding):
    """:class:`TokenEmbedding` whose lookups see the table as the device stores it (forward) while
    gradients reach the float table unchanged (straight-through estimator)."""

    def __init__(self, vocab_size: int, dim: int, bits: int = 4, **kwargs) -> None:
        super().__init__(vocab_size, dim, **kwargs)
        self.bits = bits

    def call(self, ids):
        w = self.embeddings
        return tf.gather(w + tf.stop_gradient(fake_embedding(w, self.bits) - w), ids)

    def get_config(self) -> dict:
        return {**super().get_config(), "bits": self.bits}


def _ste(x: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """``q`` forward, the gradient of ``x`` backward (straight-through estimator)."""
    return x + tf.stop_gradient(q - x)


def _table(pre: tf.Tensor, table: np.ndarray, shift: int, scale: float) -> tf.Tensor:
    """A spec lookup table read at a real pre-activation: index = ``pre`` in Q``F`` shifted right by
    ``shift`` (rounded half up), clamped to int8, + 128; value = entry * ``scale``."""
    steps = 2.0 ** (F - shift)
    idx = tf.cast(tf.clip_by_value(tf.floor(pre * steps + 0.5), -128.0, 127.0), tf.int32) + 128
    return tf.gather(tf.constant(table.astype(np.float32) * scale), idx)


@keras.utils.register_keras_serializable(package="pipeline")
class SpecGRUCell(keras.layers.GRUCell):
    """A ``GRUCell(reset_after=True)`` whose step rounds where the ``TINYSENT_BIGRU`` SPEC does.

    Forward: the gates are the spec's ``SIG`` / ``TANH`` table entries (``gru.sig_table``,
    ``gru.tanh_table``, read at the pre-activation rounded to 1/16 resp. 1/32) and the new state is
    rounded to the state scale 1/128 and clamped, so the state fed back at the next step is the
    device's. Backward: the float GRU's gradients (straight-through). The Q9 rounding of the
    pre-activations (2^-9, finer than every table step) is left out.
    """

    def call(self, inputs, states, training=None):
        h = states[0] if tf.nest.is_nested(states) else states
        xz, xr, xh = tf.split(tf.matmul(inputs, self.kernel) + self.bias[0], 3, axis=-1)
        hz, hr, hh = tf.split(tf.matmul(h, self.recurrent_kernel) + self.bias[1], 3, axis=-1)

        def sig(pre):
            return _ste(tf.sigmoid(pre), _table(pre, sig_table(), SIG_SHIFT, 1.0 / 256))

        z, r = sig(xz + hz), sig(xr + hr)
        pc = xh + r * hh
        c = _ste(tf.tanh(pc), _table(pc, tanh_table(), TANH_SHIFT, 1.0 / 128))
        new = c + z * (h - c)
        new = _ste(new, tf.clip_by_value(tf.floor(new * 128.0 + 0.5), -128.0, 127.0) / 128.0)
        return new, [new] if tf.nest.is_nested(states) else new


def _qk():
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras


def _quantize_configs() -> dict[str, type]:
    """The tfmot ``QuantizeConfig`` classes of the QAT student (defined lazily: tfmot loads slowly)."""
    if _QCONFIGS:
        return _QCONFIGS
    qk = _qk()

    def weight_quantizer(per_row: bool = False):
        return qk.quantizers.LastValueQuantizer(num_bits=8, per_axis=per_row, symmetric=True,
                                                narrow_range=True)

    def state_quantizer():  # the spec's states: int8 at scale 1/128, zero point 0
        return qk.quantizers.FixedQuantizer(num_bits=8, init_min=-1.0, init_max=127.0 / 128.0,
                                            narrow_range=False)

    def output_quantizer():
        return qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                    narrow_range=False)

    class GRUQuantizeConfig(qk.QuantizeConfig):
        """A ``Bidirectional(GRU)`` rounded as the ``TINYSENT_BIGRU`` step rounds it.

        Weights: kernel ``[E, 3U]`` and recurrent kernel ``[U, 3U]`` of both directions, 8-bit
        symmetric per output row (the last axis). Output: the per-timestep states at the fixed
        scale 1/128. Biases stay float (int32 on the device).
        """

        @staticmethod
        def _cells(layer):
            return layer.forward_layer.cell, layer.backward_layer.cell

        def get_weights_and_quantizers(self, layer):
            return [(getattr(c, n), weight_quantizer(per_row=True)) for c in self._cells(layer)
                    for n in ("kernel", "recurrent_kernel")]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            f, b = self._cells(layer)
            f.kernel, f.recurrent_kernel, b.kernel, b.recurrent_kernel = quantize_weights

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [state_quantizer()]

        def get_config(self):
            return {}

    class LogitQuantizeConfig(GRUQuantizeConfig):
        """A linear ``Dense``: 8-bit kernel, 8-bit output (the head's FULLY_CONNECTED output)."""

        def get_output_quantizers(self, layer):
            return [output_quantizer()]

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


def build_qat_model(student: keras.Model, embedding_bits: int = 8,
                    spec_cell: bool = False) -> keras.Model:
    """The student with fake quantization where the device rounds (QAT; module docstring).

    ``ids -> QuantEmbedding(embedding_bits) -> QuantizeWrapperV2(BiGRU, GRUQuantizeConfig) -> masked mean ->
    QuantizeWrapperV2(Dense "logit", 8-bit kernel + output) -> sigmoid``. The padding mask is passed
    explicitly (tfmot's wrapper does not propagate Keras masks). Starts from ``student``'s weights.
    ``spec_cell``: the BiGRU's cells are :class:`SpecGRUCell` in a Keras ``RNN`` (the tables and the
    state rounding of the recurrence simulated too).
    """
    from pipeline.nn.models import MaskedMeanPooling

    qk = _qk()
    table, bigru = student_parts(student)
    prob = student.get_layer("prob")
    units = bigru.forward_layer.units
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    emb = QuantEmbedding(*table.shape, bits=embedding_bits, name="embedding")
    x = emb(ids)
    emb.set_weights([table])
    mask = keras.layers.Lambda(lambda t: tf.not_equal(t, 0), name="mask")(ids)
    if spec_cell:
        rnn = keras.layers.RNN(SpecGRUCell(units, reset_after=True), return_sequences=True)
        inner = keras.layers.Bidirectional(rnn, name=bigru.name)
    else:
        inner = keras.layers.Bidirectional.from_config(bigru.get_config())
    inner = _built(inner, (1, 2, table.shape[1]), bigru.get_weights())
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
    """The QAT model's float weights under :func:`pipeline.compress.prunable.prunable_weights`' names."""
    gru, logit = qat.get_layer("bigru"), qat.get_layer("logit")
    k = [v for v, _, _ in gru._weight_vars]  # fwd kernel, fwd recurrent, bwd kernel, bwd recurrent
    return {"embedding/embeddings": qat.get_layer("embedding").embeddings,
            "bigru/forward/kernel": k[0], "bigru/forward/recurrent_kernel": k[1],
            "bigru/backward/kernel": k[2], "bigru/backward/recurrent_kernel": k[3],
            "prob/kernel": logit._weight_vars[0][0]}


def _head(ids, n: int) -> list:
    """The first ``n`` training rows: sliced, or read from :class:`IdRecords`' shards."""
    return ids.head(n) if isinstance(ids, IdRecords) else ids[:n]


def save_float_reference(model: keras.Model, out_dir: Path, embedding_bits: int) -> None:
    """Write ``model`` as the int8 release's float reference: ``model.keras`` looks its embedding up
    as the device stores it (``model``'s table is replaced in place), the float table lies beside
    it (``LATENT_TABLE``), which the conversion quantizes, so that it makes exactly the codes the
    fake quantization simulated (of starting weights: exactly PTQ's codes)."""
    from pipeline.device.convert import LATENT_TABLE
    from pipeline.nn.models import save_model

    table = model.get_layer("embedding").get_weights()[0]
    np.save(Path(out_dir) / LATENT_TABLE, table)
    model.get_layer("embedding").set_weights([fake_embedding(tf.constant(table), embedding_bits).numpy()])
    save_model(model, Path(out_dir) / "model.keras")


def qat_student(student_dir: Path, data_dir: Path, out_dir: Path, work_dir: Path, cfg,
                make_step=None, seq_len: int | None = None, embedding_bits: int = 8,
                compare: Callable[..., dict] | None = None,
                calibration_reviews: int = 500, spec_cell: bool = False,
                records: bool = False) -> dict[str, Any]:
    """Stage: quantization-aware fine-tuning of a float student -> a float student directory.

    Fine-tunes :func:`build_qat_model` (fake quantization as the device rounds, the embedding at
    ``embedding_bits``) with :func:`pipeline.nn.train.fit` (``make_step``: e.g. the distillation
    step; default: labels only), then writes the kept weights (fine-tuned or starting) back into
    the plain student architecture: ``model.keras`` holds the embedding table as the device stores
    it (``summary["saved_with_device_table"]``: its validation loss and accuracy) and
    ``LATENT_TABLE`` the float table, which :func:`quantize_student` converts.
    ``compare(start, tuned, splits, calibration_ids, embedding_bits)``
    (``pipeline.device.convert.compare_precisions``) scores the float start, PTQ at 8 bits and at
    ``embedding_bits`` and QAT through the device path: ``summary["precision"]``. Kept
    (``summary["kept"]``): the fine-tuned weights only if their device-path validation loss at
    ``embedding_bits`` is at most PTQ's (loss, not accuracy: a proper score, less noisy than
    accuracy on a few thousand reviews, and what QAT optimizes); without ``compare``, only if they
    lower the float validation loss (early stopping with the start as
    epoch 0). Reports validation loss and accuracy before/after.
    A pruned student (``masks.npz`` beside its model) keeps its zeros: the masks are re-applied
    after every step. ``seq_len`` (the release length) replaces the tokenizer's: fine-tuning,
    validation and everything downstream then see that many tokens per review. ``records``
    (``data.stream``): the training ids go through TFRecord shards and ``tf.data``
    (:class:`pipeline.text.records.IdRecords`).
    """
    from pipeline.nn.models import load_model
    from pipeline.nn.train import (
        bce,
        fit,
        labelled_ids,
        predict_proba,
        set_determinism,
        write_model_info,
    )
    from pipeline.text.tokenizer import Tokenizer

    set_determinism(cfg.seed)
    tok = Tokenizer.load(student_dir)
    if seq_len is not None:
        tok = Tokenizer(tok.model_proto, dataclasses.replace(tok.cfg, seq_len=seq_len))
    student = load_model(Path(student_dir) / "model.keras")
    has_test = compare is not None and (Path(data_dir) / "test.jsonl").exists()
    splits = labelled_ids(data_dir, tok, ("train", "val", "test") if has_test else ("train", "val"),
                          work_dir, records)
    x_val, y_val = splits["val"]
    p0 = predict_proba(student, x_val)
    before = float(np.mean((p0 >= 0.5) == (y_val >= 0.5)))
    loss_before = bce(y_val, p0)
    qat = build_qat_model(student, embedding_bits, spec_cell)
    masks_file = Path(student_dir) / "masks.npz"
    if masks_file.exists():
        from pipeline.compress.prune import load_masks, masked_step

        make_step = masked_step(load_masks(masks_file), make_step, qat_prunable_weights)
    state = fit(qat, splits["train"], splits["val"], cfg, Path(work_dir), make_step=make_step)
    tuned = student_from_qat(qat, student)
    p1 = predict_proba(tuned, x_val)
    after = float(np.mean((p1 >= 0.5) == (y_val >= 0.5)))
    precision = None
    if compare is not None:
        precision = compare(student, tuned, {k: v for k, v in splits.items() if k != "train"},
                            _head(splits["train"][0], calibration_reviews), embedding_bits)
        dev = precision["splits"]["val"]
        ptq, qat_dev = dev[f"ptq_{embedding_bits}"], dev[f"qat_{embedding_bits}"]
        kept = "qat" if qat_dev["loss"] <= ptq["loss"] else "start"
        criterion = f"device-path validation loss at {embedding_bits}-bit embedding"
        log.info("qat: %s %.5f (PTQ) -> %.5f (QAT), accuracy %.4f -> %.4f", criterion, ptq["loss"],
                 qat_dev["loss"], ptq["accuracy"], qat_dev["accuracy"])
    else:
        # Early stopping with the starting point as epoch 0: fine-tuning is kept only if it lowers
        # the validation loss of the float weights that will be converted.
        kept = "qat" if bce(y_val, p1) < loss_before else "start"
        criterion = "float validation loss"
    if kept == "start":
        log.info("qat: fine-tuning did not improve the %s: keeping the starting weights", criterion)
        tuned = student
    out_dir = Path(out_dir)
    tok.save(out_dir)
    save_float_reference(tuned, out_dir, embedding_bits)  # QAT's weights or the start's alike
    p2 = predict_proba(tuned, x_val)
    saved = {"val_loss": bce(y_val, p2), "val_accuracy": float(np.mean((p2 >= 0.5) == (y_val >= 0.5)))}
    summary = {"best_epoch": state["best_epoch"], "seq_len": tok.cfg.seq_len, "kept": kept,
               "val_loss_before": loss_before, "val_loss_after": bce(y_val, p1),
               "val_accuracy_before": before,
               "val_accuracy_after": after, "params": int(tuned.count_params()),
               "embedding_bits": embedding_bits, "kept_by": criterion, "precision": precision,
               "saved_with_device_table": saved}
    if masks_file.exists():
        shutil.copyfile(masks_file, out_dir / "masks.npz")
    write_model_info(out_dir, {"keras": "model.keras"}, kind="student-qat", files=["model.keras"],
                     params=int(tuned.count_params()), qat=summary)
    (out_dir / "history.json").write_text(json.dumps(state, indent=2))
    return summary
