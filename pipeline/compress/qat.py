"""Quantization-aware training of the BiGRU student (tfmot), where the int8 step model rounds.

tfmot's ``quantize_model`` rejects ``Bidirectional(GRU)``, so the QAT model is built by hand with
``QuantizeWrapperV2`` and the project's own ``QuantizeConfig`` classes: the GRU's kernels and states
and the output layer are fake-quantized to 8 bits. The stage fine-tunes it and writes the trained
float weights back into the plain student, which :mod:`pipeline.device.convert` converts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.nn.models import TokenEmbedding, student_parts

log = logging.getLogger(__name__)


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
    from pipeline.nn.models import MaskedMeanPooling

    qk = _qk()
    table, bigru = student_parts(student)
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
    """The QAT model's float weights under :func:`pipeline.compress.prunable.prunable_weights`' names."""
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
    the output layer) with :func:`pipeline.nn.train.fit` (``make_step``: e.g. the distillation step;
    default: labels only), then writes the trained float weights back into the plain student
    architecture, which :func:`quantize_student` converts. The fine-tuned weights are kept only if
    they lower the validation loss of the starting weights (early stopping with the start as epoch
    0); ``summary["kept"]`` says which. Reports validation loss and accuracy before/after.
    A pruned student (``masks.npz`` beside its model) keeps its zeros: the masks are re-applied
    after every step. ``seq_len`` (the release length) replaces the tokenizer's: fine-tuning,
    validation and everything downstream then see that many tokens per review.
    """
    from pipeline.nn.models import load_model, save_model
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
    splits = labelled_ids(data_dir, tok)
    x_val, y_val = splits["val"]
    p0 = predict_proba(student, x_val)
    before = float(np.mean((p0 >= 0.5) == (y_val >= 0.5)))
    loss_before = bce(y_val, p0)
    qat = build_qat_model(student)
    masks_file = Path(student_dir) / "masks.npz"
    if masks_file.exists():
        from pipeline.compress.prune import load_masks, masked_step

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
