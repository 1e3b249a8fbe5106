"""What Lottery Ticket pruning handles: the student's prunable weights, and tfmot's view of them.

:func:`prunable_weights` names every prunable variable of a model (embeddings, RNN kernels and
recurrent kernels, dense kernels; biases are not pruned) — the set the global magnitude threshold of
:mod:`pipeline.compress.prune` runs over. tfmot interoperability: :class:`PrunableBidirectional`
(and :class:`PrunableTokenEmbedding`) implement tfmot's ``PrunableLayer``, so
``tfmot.sparsity.keras.prune_low_magnitude`` accepts the student; :func:`tfmot_wrap` wraps a model
with tfmot's pruning wrappers, either with a tfmot schedule (tfmot's own per-layer thresholds) or
holding the global masks fixed (:class:`FixedMask`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.nn.models import TokenEmbedding

Masks = dict[str, np.ndarray]
"""Name (see :func:`prunable_weights`) -> float32 array of 0/1, the weight's shape."""


@keras.utils.register_keras_serializable(package="pipeline")
class PrunableBidirectional(keras.layers.Bidirectional, tfmot.sparsity.keras.PrunableLayer):
    """``Bidirectional`` whose prunable weights are both directions' kernel and recurrent kernel."""

    def get_prunable_weights(self) -> list[tf.Variable]:
        cells = (self.forward_layer.cell, self.backward_layer.cell)
        return [w for c in cells for w in (c.kernel, c.recurrent_kernel)]


@keras.utils.register_keras_serializable(package="pipeline")
class PrunableTokenEmbedding(TokenEmbedding, tfmot.sparsity.keras.PrunableLayer):
    """``TokenEmbedding`` whose embedding matrix is prunable."""

    def get_prunable_weights(self) -> list[tf.Variable]:
        return [self.embeddings]


_TO_PRUNABLE = {keras.layers.Bidirectional: PrunableBidirectional, TokenEmbedding: PrunableTokenEmbedding}
_TO_PLAIN = {v: k for k, v in _TO_PRUNABLE.items()}


def _swap_layers(model: keras.Model, mapping: dict[type, type]) -> keras.Model:
    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        cls = mapping.get(type(layer), type(layer))
        return cls.from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out


def to_prunable(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same weights) with ``PrunableBidirectional``/``PrunableTokenEmbedding``."""
    return _swap_layers(model, _TO_PRUNABLE)


def to_plain(model: keras.Model) -> keras.Model:
    """A copy with tfmot wrappers stripped and plain ``Bidirectional``/``TokenEmbedding`` (same weights)."""
    if any(isinstance(la, PruneLowMagnitude) for la in model.layers):
        model = tfmot.sparsity.keras.strip_pruning(model)
    return _swap_layers(model, _TO_PLAIN)


@keras.utils.register_keras_serializable(package="pipeline")
class FixedMask(tfmot.sparsity.keras.PruningSchedule):
    """A tfmot schedule that never recomputes masks: the wrappers keep the masks they were given."""

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0, tf.float32)

    def get_config(self) -> dict:
        return {"class_name": self.__class__.__name__, "config": {}}


def tfmot_wrap(model: keras.Model, masks: Masks | None = None, pruning_schedule=None) -> keras.Model:
    """Wrap every top-level layer with prunable weights in tfmot's ``PruneLowMagnitude``.

    Embedding, BiGRU and Dense layers are wrapped (Dense layers nested in other layers are not); the
    other layers are shared with the converted copy.

    With ``masks`` (from :func:`global_masks`) the wrappers' mask variables are set to them and the
    schedule is :class:`FixedMask`, so tfmot training (``model.fit`` with
    ``tfmot.sparsity.keras.UpdatePruningStep``) keeps this module's global masks; otherwise tfmot's own
    ``pruning_schedule`` (per-layer thresholds) applies. :func:`to_plain` undoes the wrapping.
    """
    prunable = to_prunable(model)
    if masks is not None:
        pruning_schedule = FixedMask()
    kwargs = {} if pruning_schedule is None else {"pruning_schedule": pruning_schedule}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or isinstance(layer, keras.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **kwargs)
        return layer

    wrapped = keras.models.clone_model(prunable, clone_function=clone)
    if masks is not None:
        names = {id(v): n for n, v in prunable_weights(prunable).items()}
        for layer in wrapped.layers:
            if isinstance(layer, PruneLowMagnitude):
                for weight, mask, _ in layer.pruning_vars:
                    m = masks[names[id(weight)]]
                    mask.assign(m)
                    weight.assign(weight * m)
    return wrapped


def prunable_weights(model: keras.Model) -> dict[str, tf.Variable]:
    """The prunable variables by name, in model order: embeddings, RNN kernels, dense kernels.

    Names: ``embedding/embeddings``, ``bigru/forward/kernel``, ``bigru/forward/recurrent_kernel``,
    ``bigru/backward/...``, ``prob/kernel`` (nested layers: ``attention/proj/kernel``). Biases are
    not prunable. tfmot wrappers are looked through (the inner layer's name is used).
    """
    out: dict[str, tf.Variable] = {}
    seen: set[int] = set()

    def add(name: str, var: tf.Variable) -> None:
        if id(var) not in seen:
            seen.add(id(var))
            out[name] = var

    def visit(layer: keras.layers.Layer, prefix: str) -> None:
        if isinstance(layer, PruneLowMagnitude):
            layer = layer.layer
        name = prefix + layer.name
        if isinstance(layer, TokenEmbedding | keras.layers.Embedding):
            add(f"{name}/embeddings", layer.embeddings)
        elif isinstance(layer, keras.layers.Bidirectional):
            for d, rnn in (("forward", layer.forward_layer), ("backward", layer.backward_layer)):
                add(f"{name}/{d}/kernel", rnn.cell.kernel)
                add(f"{name}/{d}/recurrent_kernel", rnn.cell.recurrent_kernel)
        elif isinstance(layer, keras.layers.RNN) and hasattr(layer.cell, "recurrent_kernel"):
            add(f"{name}/kernel", layer.cell.kernel)
            add(f"{name}/recurrent_kernel", layer.cell.recurrent_kernel)
        elif isinstance(layer, keras.layers.Dense):
            add(f"{name}/kernel", layer.kernel)
        else:
            for sub in layer._flatten_layers(include_self=False, recursive=False):
                visit(sub, name + "/")

    for layer in model.layers:
        visit(layer, "")
    return out
