"""The float step and head models of the BiGRU student, the shapes the int8 device loop runs.

``build_step_model`` is one token for both directions (``tokens [1, 2]`` int32 and the two states in,
the two states out), ``build_head_model`` the output layer on the pooled states; the device loop
(:mod:`pipeline.device.loop`) drives them. :func:`compact_rows` drops pruned embedding rows.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.nn.models import TokenEmbedding, student_parts


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
    two, :mod:`pipeline.device.lut`) shares one int8 scale between them, and in a trial on the full run
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
    full, bigru = student_parts(student)
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
