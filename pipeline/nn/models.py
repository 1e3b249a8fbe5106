"""Model definitions (tf_keras): the BiGRU teacher with attention pooling.

The teacher is ``ids -> TokenEmbedding -> Bidirectional(GRU) -> AttentionPooling -> Dense -> sigmoid``.
Its per-timestep attention weights and GRU features are exposed through :func:`feature_model`, which
the distillation stage uses as the teacher's feature maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.config import StudentConfig, TeacherConfig


@keras.utils.register_keras_serializable(package="pipeline")
class TokenEmbedding(keras.layers.Layer):
    """Embedding as a plain ``tf.gather`` (converts to one GATHER op); id 0 is padding and masked."""

    def __init__(self, vocab_size: int, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dim = dim

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.dim),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
        )
        super().build(input_shape)

    def call(self, ids):
        return tf.gather(self.embeddings, ids)

    def compute_mask(self, ids, mask=None):
        return tf.not_equal(ids, 0)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim}


@keras.utils.register_keras_serializable(package="pipeline")
class AttentionPooling(keras.layers.Layer):
    """Additive attention over time: ``a_t = softmax_t(v . tanh(W h_t + b))``, ``out = sum_t a_t h_t``.

    Returns ``(pooled, weights)``; padded steps get weight 0.
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.proj = keras.layers.Dense(units, activation="tanh", name="proj")
        self.score = keras.layers.Dense(1, use_bias=False, name="score")

    def call(self, h, mask=None):
        logits = tf.squeeze(self.score(self.proj(h)), -1)
        if mask is not None:
            logits = tf.where(mask, logits, tf.fill(tf.shape(logits), -1e9))
        weights = tf.nn.softmax(logits, axis=-1)
        pooled = tf.reduce_sum(h * weights[..., None], axis=1)
        return pooled, weights

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


class _MaskedTimePooling(keras.layers.Layer):
    """Base of the poolings over time: ``[B, T, C]`` with a ``[B, T]`` mask -> ``[B, C]``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None


@keras.utils.register_keras_serializable(package="pipeline")
class MaskedMaxPooling(_MaskedTimePooling):
    """Max over time of ``[B, T, C]`` features, ignoring padded steps."""

    def call(self, h, mask=None):
        if mask is not None:
            h = tf.where(mask[..., None], h, tf.fill(tf.shape(h), -1e9))
        return tf.reduce_max(h, axis=1)


def build_teacher(vocab_size: int, cfg: TeacherConfig, seq_len: int | None = None) -> keras.Model:
    """The BiGRU + attention teacher; ``seq_len=None`` accepts any length (batches are trimmed)."""
    ids = keras.Input(shape=(seq_len,), dtype="int32", name="ids")
    x = TokenEmbedding(vocab_size, cfg.embed_dim, name="embedding")(ids)
    if cfg.embed_dropout:
        x = keras.layers.SpatialDropout1D(cfg.embed_dropout, name="embed_dropout")(x)
    h = keras.layers.Bidirectional(
        keras.layers.GRU(cfg.units, return_sequences=True), name="bigru"
    )(x)
    pooled, _ = AttentionPooling(cfg.attn_units, name="attention")(h)
    if cfg.max_pool:
        pooled = keras.layers.Concatenate(name="pool")([pooled, MaskedMaxPooling(name="max")(h)])
    z = keras.layers.Dropout(cfg.dropout, name="dropout")(pooled)
    if cfg.dense_units:
        z = keras.layers.Dense(cfg.dense_units, activation="relu", name="dense")(z)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(z)
    return keras.Model(ids, prob, name="teacher")


def feature_model(model: keras.Model) -> keras.Model:
    """``ids -> (prob, attention weights [B, T], BiGRU features [B, T, 2U])`` sharing ``model``'s layers."""
    attn_layer = model.get_layer("attention")
    h = attn_layer.input
    _, weights = attn_layer.output
    return keras.Model(model.input, [model.output, weights, h], name=f"{model.name}_features")


def save_model(model: keras.Model, path: Path) -> None:
    """Save as a single ``.keras`` file (atomic), without optimizer state."""
    tmp = path.with_name(path.name + ".tmp.keras")
    bare = keras.models.clone_model(model)  # uncompiled: no optimizer slots in the file
    bare.set_weights(model.get_weights())
    bare.save(tmp)
    tmp.replace(path)


def load_model(path: Path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


@keras.utils.register_keras_serializable(package="pipeline")
class MaskedMeanPooling(_MaskedTimePooling):
    """Mean over the unpadded time steps of ``[B, T, C]`` features (a sum and a count on device)."""

    def call(self, h, mask=None):
        if mask is None:
            return tf.reduce_mean(h, axis=1)
        m = tf.cast(mask, h.dtype)[..., None]
        return tf.reduce_sum(h * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)


def build_student(vocab_size: int, cfg: StudentConfig, seq_len: int | None = None) -> keras.Model:
    """``ids -> embedding -> BiGRU (reset_after) -> masked mean -> sigmoid``: loops well on a device.

    The BiGRU runs one token at a time on the device (see ``pipeline.device.loop``), so its features are
    the per-timestep states and pooling is a running sum the caller keeps.
    """
    ids = keras.Input(shape=(seq_len,), dtype="int32", name="ids")
    x = TokenEmbedding(vocab_size, cfg.embed_dim, name="embedding")(ids)
    if cfg.embed_dropout:
        x = keras.layers.SpatialDropout1D(cfg.embed_dropout, name="embed_dropout")(x)
    h = keras.layers.Bidirectional(
        keras.layers.GRU(cfg.units, return_sequences=True, reset_after=True), name="bigru"
    )(x)
    pooled = MaskedMeanPooling(name="pool")(h)
    z = keras.layers.Dropout(cfg.dropout, name="dropout")(pooled)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(z)
    return keras.Model(ids, prob, name="student")


def student_parts(student: keras.Model) -> tuple[np.ndarray, keras.layers.Bidirectional]:
    """The student's embedding table and its concatenating ``Bidirectional(GRU)`` layer."""
    table = student.get_layer("embedding").get_weights()[0]
    bigru = student.get_layer("bigru")
    if bigru.merge_mode != "concat":
        raise ValueError("the student's BiGRU must concatenate its directions")
    return table, bigru


def logits_model(model: keras.Model) -> keras.Model:
    """``ids -> pre-sigmoid logit [B]`` sharing the weights of a model ending in Dense "prob".

    A QAT model (``pipeline.compress.qat.build_qat_model``) has its logit as the layer "logit".
    """
    if "logit" in [layer.name for layer in model.layers]:
        logit = keras.layers.Reshape((), name="logit_flat")(model.get_layer("logit").output)
        return keras.Model(model.input, logit, name=f"{model.name}_logits")
    prob = model.get_layer("prob")
    z = prob.input
    logit = keras.layers.Lambda(lambda t: tf.squeeze(tf.matmul(t, prob.kernel) + prob.bias, -1),
                                name="logit")(z)
    return keras.Model(model.input, logit, name=f"{model.name}_logits")
