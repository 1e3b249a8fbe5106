"""Structured Lottery Ticket groups of the BiGRU student: the groups, their scores, their flash bytes.

A *group* is a set of weights the int8 device model loses as a whole when it is pruned:

- ``row`` ``i`` (``i >= 2``; 0 padding and 1 ``<unk>`` are kept): embedding row ``i`` (``E`` weights).
  A zero row leaves the int8 table through :func:`pipeline.device.step.compact_rows`' id map.
- ``dim`` ``d``: embedding column ``d`` and row ``d`` of both directions' input kernels (``V + 2 * 3U``).
- ``unit`` ``k``: a *pair* of GRU units, the ``k``-th weakest forward unit with the ``k``-th weakest
  backward unit. Per direction, unit ``j`` is its z/r/h columns of the kernel and of the recurrent
  kernel, its recurrent-kernel row, its z/r/h biases (input and recurrent) and its row of the head.
  The step model and the firmware run both directions with one ``units``, so units go in pairs; the
  two directions' unit indices do not correspond to each other (they are trained independently), so
  pairing by index would prune a strong unit with a weak one, while pairing by rank prunes the
  weakest of each.

**Score**: the RMS of the group's surviving weights (``L2 / sqrt(n)``, pruned entries of other
groups left out). Groups differ in size by two orders of magnitude (a row has 32 weights, a dim
4,192): a raw L2 grows with ``sqrt(n)``, so rows would always go first and dims never, whereas the RMS
puts every group on the per-weight magnitude scale of unstructured pruning, and groups of weights
drawn from one distribution get the same expected score whatever their size or kind
(``tests/test_prune.py`` checks both). Scores are taken once per round, before any of its pruning.

**Flash** (:func:`flash_bytes`): the bytes of the model arrays of the int8 step and head models,
``rows * R`` (the compacted table; ``R`` bytes per row at the release's ``quant.embedding_bits``:
``E`` at 8 bits, ``ceil(E * bits / 8) + 1`` packed codes and a uint8 multiplier at 4 or 2,
:func:`table_row_bytes`) ``+ 2V`` (the int16 id map, once any row is dropped) ``+ 2 * (E * 3U + U *
3U)`` int8 kernels ``+ 2 * 2 * 3U * 4`` int32 biases ``+ 2U + 4`` (head), the same arrays
``pipeline.device.firmware`` counts as ``model_arrays`` less the flatbuffer's fixed overhead (and
the fused operator's per-unit multipliers and gate tables). A round prunes groups in order of score
until the flash of what is left is at most ``(1 - target)`` of the dense model's
(:func:`group_keep`): at a packed table a row is worth less against a dim or a unit, and the id map
costs as much as ``2V / R`` rows.

:func:`removable` finds, from the weights alone, what the device model can drop exactly (zero rows,
unused dims, units nothing reads), and :func:`shrink` builds the smaller student without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.compress.prunable import Masks, prunable_weights
from pipeline.device.gru import EMBEDDING_BITS
from pipeline.nn.models import TokenEmbedding

KEPT_ROWS = 2  # ids 0 (padding) and 1 (<unk>) are never pruned
DIRS = ("forward", "backward")


@dataclass
class Keep:
    """What survives: per token id (``rows``), embedding dim, and GRU unit of each direction."""

    rows: np.ndarray  # [V] bool
    dims: np.ndarray  # [E] bool
    units: tuple[np.ndarray, np.ndarray]  # ([U], [U]) bool, forward and backward

    def counts(self) -> dict[str, int]:
        """Dropped rows (of ids >= 1, as ``compact_rows`` counts them), kept dims and units."""
        return {"dropped_rows": int((~self.rows[1:]).sum()), "dims": int(self.dims.sum()),
                "units": int(max(u.sum() for u in self.units))}


def masked_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """:func:`prunable_weights` plus both directions' GRU biases (``bigru/forward/bias``, ...)."""
    out = prunable_weights(model)
    bigru = model.get_layer("bigru")
    for d, rnn in zip(DIRS, (bigru.forward_layer, bigru.backward_layer), strict=True):
        out[f"bigru/{d}/bias"] = rnn.cell.bias
    return out


def _arrays(named: dict) -> dict[str, np.ndarray]:
    return {n: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64) for n, v in named.items()}


def table_row_bytes(dims: int, embedding_bits: int = 8) -> int:
    """Bytes of one embedding row on the device: int8 codes, or packed 4-/2-bit codes (the width
    padded to whole bytes, as ``pipeline.device.gru.quantize`` pads it) and the row's uint8
    multiplier."""
    if embedding_bits not in EMBEDDING_BITS:
        raise ValueError(f"embedding_bits must be one of {EMBEDDING_BITS}, not {embedding_bits}")
    return dims if embedding_bits == 8 else -(-dims * embedding_bits // 8) + 1


def flash_bytes(vocab: int, dropped_rows: int, dims: int, units: int, embedding_bits: int = 8) -> int:
    """Bytes of the device model arrays (see the module docstring) with the embedding table at
    ``embedding_bits``; ``dropped_rows`` of ids ``>= 1``."""
    table = (vocab - dropped_rows if dropped_rows else vocab) * table_row_bytes(dims, embedding_bits)
    id_map = 2 * vocab if dropped_rows else 0
    gru = 2 * (dims * 3 * units + units * 3 * units + 2 * 3 * units * 4)
    return table + id_map + gru + 2 * units + 4


def keep_masks(keep: Keep, shapes: dict[str, tuple]) -> Masks:
    """0/1 float32 masks (names of :func:`masked_variables`) zeroing every pruned group whole."""
    masks: Masks = {"embedding/embeddings": np.outer(keep.rows, keep.dims)}
    for d, u in zip(DIRS, keep.units, strict=True):
        gates = np.tile(u, 3)
        masks[f"bigru/{d}/kernel"] = np.outer(keep.dims, gates)
        masks[f"bigru/{d}/recurrent_kernel"] = np.outer(u, gates)
        masks[f"bigru/{d}/bias"] = np.broadcast_to(gates, (2, gates.size))
    masks["prob/kernel"] = np.concatenate(keep.units)[:, None]
    out = {}
    for n, shape in shapes.items():
        if tuple(masks[n].shape) != tuple(shape):
            raise ValueError(f"mask {n}: shape {masks[n].shape}, weight {shape}")
        out[n] = np.ascontiguousarray(masks[n], np.float32)
    return out


def keep_from_masks(masks: Masks) -> Keep:
    """The groups a :func:`keep_masks` mask keeps (at least one dim and one unit pair survive)."""
    units = masks["bigru/forward/recurrent_kernel"].shape[0]
    head = masks["prob/kernel"][:, 0] != 0
    return Keep(rows=masks["embedding/embeddings"].any(axis=1),
                dims=masks["bigru/forward/kernel"].any(axis=1),
                units=(head[:units], head[units:]))


def _unit_ss(w: dict[str, np.ndarray], d: int) -> np.ndarray:
    """Per unit of direction ``d``: the sum over its group's entries of ``w`` (squared weights or
    0/1 alive flags): kernel and recurrent columns, recurrent row (its diagonal once), biases, head."""
    name = f"bigru/{DIRS[d]}"
    k, rk, b = w[f"{name}/kernel"], w[f"{name}/recurrent_kernel"], w[f"{name}/bias"]
    units = rk.shape[0]
    rk3 = rk.reshape(units, 3, units)
    cols = (k.reshape(k.shape[0], 3, units).sum(axis=(0, 1)) + rk3.sum(axis=(0, 1))
            + b.reshape(2, 3, units).sum(axis=(0, 1)))
    return cols + rk.sum(axis=1) - np.einsum("jgj->j", rk3) + w["prob/kernel"][d * units:(d + 1) * units, 0]


def group_scores(model: keras.Model, masks: Masks | None = None) -> dict:
    """RMS of each group's surviving weights (``masks``: the previous round's; 0 where none survive).

    Returns ``{"row": [V] (rows 0, 1: inf), "dim": [E], "unit": [U] per rank pair, "unit_order":
    (forward ids, backward ids) sorted weakest first (pruned first)}``.
    """
    w = _arrays(masked_variables(model))
    alive = ({n: np.ones_like(a) for n, a in w.items()} if masks is None
             else {n: np.asarray(masks[n], np.float64) for n in w})
    sq = {n: w[n] ** 2 * alive[n] for n in w}

    def rms(ss: np.ndarray, n: np.ndarray) -> np.ndarray:
        return np.sqrt(np.divide(ss, n, out=np.zeros_like(ss), where=n > 0))

    emb, emb_alive = sq["embedding/embeddings"], alive["embedding/embeddings"]
    row = rms(emb.sum(axis=1), emb_alive.sum(axis=1))
    row[:KEPT_ROWS] = np.inf
    k_sq = [sq[f"bigru/{d}/kernel"].sum(axis=1) for d in DIRS]
    k_n = [alive[f"bigru/{d}/kernel"].sum(axis=1) for d in DIRS]
    dim = rms(emb[1:].sum(axis=0) + sum(k_sq), emb_alive[1:].sum(axis=0) + sum(k_n))  # not padding
    order, ss, n = [], [], []
    for d in range(2):
        s_d, n_d = _unit_ss(sq, d), _unit_ss(alive, d)
        score = np.where(n_d > 0, rms(s_d, n_d), -1.0)  # pruned units first, paired with each other
        o = np.argsort(score, kind="stable")
        order.append(o)
        ss.append(s_d[o])
        n.append(n_d[o])
    return {"row": row, "dim": dim, "unit": rms(ss[0] + ss[1], n[0] + n[1]), "unit_order": tuple(order)}


def group_keep(model: keras.Model, target_saving: float, masks: Masks | None = None,
               embedding_bits: int = 8) -> tuple[Keep, float]:
    """The groups to keep so the model arrays (the table at ``embedding_bits``) save
    ``target_saving`` of the dense flash bytes.

    One global threshold: the surviving groups of every kind are sorted by :func:`group_scores`
    (ties: rows, then dims, then unit pairs, then index) and pruned in that order until
    :func:`flash_bytes` of what is left is at most ``(1 - target_saving)`` of the dense model's.
    Groups pruned in ``masks`` stay pruned; at least one dim and one unit pair always survive (a
    group skipped for that reason is the only kept one that may score below the threshold). Returns
    the kept groups and the threshold (the largest newly pruned score; 0.0 when nothing new).
    """
    if not 0.0 <= target_saving < 1.0:
        raise ValueError(f"target_saving must be in [0, 1), got {target_saving}")
    emb = model.get_layer("embedding").embeddings
    vocab, dims = (int(s) for s in emb.shape)
    units = int(model.get_layer("bigru").forward_layer.cell.units)
    prev = Keep(np.ones(vocab, bool), np.ones(dims, bool), (np.ones(units, bool), np.ones(units, bool))) \
        if masks is None else keep_from_masks(masks)
    s = group_scores(model, masks)
    unit_alive = prev.units[0][s["unit_order"][0]]  # rank k alive (pairs: both or neither)
    kinds = [("row", i, s["row"][i]) for i in range(KEPT_ROWS, vocab) if prev.rows[i]]
    kinds += [("dim", i, s["dim"][i]) for i in range(dims) if prev.dims[i]]
    kinds += [("unit", k, s["unit"][k]) for k in range(units) if unit_alive[k]]
    rank = {"row": 0, "dim": 1, "unit": 2}
    kinds.sort(key=lambda g: (g[2], rank[g[0]], g[1]))
    c = prev.counts()
    dropped, n_dims, n_units = c["dropped_rows"], c["dims"], c["units"]
    def flash(*counts: int) -> int:
        return flash_bytes(vocab, *counts, embedding_bits=embedding_bits)

    dense = flash(0, dims, units)
    goal = (1.0 - target_saving) * dense
    rows, dkeep, ukeep = prev.rows.copy(), prev.dims.copy(), unit_alive.copy()
    threshold = 0.0
    for kind, i, score in kinds:
        if flash(dropped, n_dims, n_units) <= goal:
            break
        if kind == "row":
            rows[i], dropped = False, dropped + 1
        elif kind == "dim":
            if n_dims == 1:
                continue
            dkeep[i], n_dims = False, n_dims - 1
        else:
            if n_units == 1:
                continue
            ukeep[i], n_units = False, n_units - 1
        threshold = float(score)
    if flash(dropped, n_dims, n_units) > goal:
        raise ValueError(f"cannot save {target_saving:.0%} of the flash bytes by pruning groups")
    fwd, bwd = (np.zeros(units, bool) for _ in range(2))
    fwd[s["unit_order"][0][ukeep]] = True
    bwd[s["unit_order"][1][ukeep]] = True
    return Keep(rows, dkeep, (fwd, bwd)), threshold


def structured_masks(model: keras.Model, target_saving: float, masks: Masks | None = None,
                     embedding_bits: int = 8) -> tuple[Masks, float]:
    """:func:`group_keep` as masks over :func:`masked_variables`, and the threshold."""
    keep, threshold = group_keep(model, target_saving, masks, embedding_bits)
    shapes = {n: tuple(v.shape) for n, v in masked_variables(model).items()}
    return keep_masks(keep, shapes), threshold


# --------------------------------------------------------------------------------------------------
# What the device model can drop, and the smaller student


def removable(model: keras.Model) -> Keep:
    """What survives once everything the device can drop exactly is dropped (from the weights).

    Rows: all-zero embedding rows go (``compact_rows``; padding 0 and ``<unk>`` 1 are reported as
    kept unless zero). Dims: an all-zero embedding column, or one no input kernel reads. Units: a
    unit nothing reads (its recurrent-kernel row and head row are zero; what it computes is unused).
    Both directions keep the same number of units: the direction with fewer removable units sets it.
    """
    w = {n: v.numpy() for n, v in masked_variables(model).items()}
    emb = w["embedding/embeddings"]
    rows = emb.any(axis=1)
    rows[0] = True
    dims = emb.any(axis=0) & np.logical_or(*(w[f"bigru/{d}/kernel"].any(axis=1) for d in DIRS))
    if not dims.any():
        dims[0] = True
    units_n = w["bigru/forward/recurrent_kernel"].shape[0]
    head = w["prob/kernel"][:, 0]
    read = [w[f"bigru/{d}/recurrent_kernel"].any(axis=1) | (head[i * units_n:(i + 1) * units_n] != 0)
            for i, d in enumerate(DIRS)]
    n = max(1, *(int(r.sum()) for r in read))
    units = []
    for r in read:
        u = r.copy()
        for j in np.flatnonzero(~r)[: n - int(r.sum())]:  # keep some unread units to match counts
            u[j] = True
        units.append(u)
    return Keep(rows, dims, (units[0], units[1]))


def flash_report(model: keras.Model, embedding_bits: int = 8) -> dict:
    """Flash bytes of the model arrays the device keeps (:func:`removable`; the table at
    ``embedding_bits``) vs the dense model."""
    emb = model.get_layer("embedding").embeddings
    vocab, dims = (int(s) for s in emb.shape)
    units = int(model.get_layer("bigru").forward_layer.cell.units)
    c = removable(model).counts()
    dense = flash_bytes(vocab, 0, dims, units, embedding_bits)
    now = flash_bytes(vocab, c["dropped_rows"], c["dims"], c["units"], embedding_bits)
    return {**c, "vocab": vocab, "dense_dims": dims, "dense_units": units, "bytes": now,
            "embedding_bits": embedding_bits, "dense_bytes": dense, "saved_bytes": dense - now,
            "saved": (dense - now) / dense}


def shrink_arrays(named: dict[str, np.ndarray], keep: Keep) -> dict[str, np.ndarray]:
    """Slice arrays named as by :func:`masked_variables` (weights or masks) to the kept dims/units."""
    out = {"embedding/embeddings": np.asarray(named["embedding/embeddings"])[:, keep.dims]}
    for d, u in zip(DIRS, keep.units, strict=True):
        gates = np.tile(u, 3)
        out[f"bigru/{d}/kernel"] = np.asarray(named[f"bigru/{d}/kernel"])[keep.dims][:, gates]
        out[f"bigru/{d}/recurrent_kernel"] = np.asarray(named[f"bigru/{d}/recurrent_kernel"])[u][:, gates]
        if f"bigru/{d}/bias" in named:
            out[f"bigru/{d}/bias"] = np.asarray(named[f"bigru/{d}/bias"])[:, gates]
    out["prob/kernel"] = np.asarray(named["prob/kernel"])[np.concatenate(keep.units)]
    return out


def shrink(model: keras.Model, keep: Keep | None = None) -> keras.Model:
    """A student of the same architecture with only the kept dims and units (weights copied).

    ``keep`` defaults to :func:`removable`. Embedding rows are not removed (token ids stay as the
    tokenizer makes them): pruned rows stay zero and the int8 conversion drops them. With ``keep``
    from :func:`removable` the predictions equal ``model``'s up to float rounding.
    """
    keep = removable(model) if keep is None else keep
    if len({int(u.sum()) for u in keep.units}) != 1:
        raise ValueError("both directions must keep the same number of units")
    dims, units = int(keep.dims.sum()), int(keep.units[0].sum())
    config = model.get_config()
    for layer in config["layers"]:
        obj = model.get_layer(layer["config"]["name"])
        if isinstance(obj, TokenEmbedding):
            layer["config"]["dim"] = dims
        elif isinstance(obj, keras.layers.Bidirectional):
            for key in ("layer", "backward_layer"):
                if key in layer["config"]:
                    layer["config"][key]["config"]["units"] = units
    small = keras.Model.from_config(config)
    arrays = shrink_arrays({n: v.numpy() for n, v in masked_variables(model).items()}, keep)
    for n, v in masked_variables(small).items():
        v.assign(arrays[n])
    small.get_layer("prob").bias.assign(model.get_layer("prob").bias)
    return small
