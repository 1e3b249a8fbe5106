"""Lottery Ticket pruning of the BiGRU student: global magnitude masks, late rewinding, masked retraining.

Iterative magnitude pruning (Frankle & Carbin 2019, with the "late rewinding" of Frankle et al. 2020):

1. start from a trained dense model and its weights after ``rewind_epoch`` epochs of the same run;
2. round ``r`` prunes with **one global magnitude threshold** to ``min(target, 1 - (1 - rate)^r)``;
3. the surviving weights are rewound to the rewind checkpoint and retrained with
   :func:`pipeline.nn.train.fit`; the mask is re-applied after every optimizer step, so pruned weights
   stay exactly zero (any training step can be wrapped, e.g. :func:`pipeline.compress.distill.kd_step`).

Two modes (``PruneConfig.mode``):

- ``structured`` (the default): what is pruned are *groups* the int8 device model loses whole:
  vocabulary rows of the embedding (dropped from the device table through ``compact_rows``' id map,
  which the firmware mirrors), embedding dims, and GRU units in forward/backward pairs; their
  bookkeeping is :mod:`pipeline.compress.structures`. A group's score is the RMS of its surviving
  weights (``L2 / sqrt(n)``: comparable across kinds and sizes), one threshold per round over all
  groups, and the round's target is a share of the **flash bytes** of the model arrays saved (the
  table counted at the release's ``quant.embedding_bits``; ``target_flash_saving``), not a share of
  weights. Masks zero whole groups (the GRU biases of pruned units too). At the end the ticket is
  **shrunk**: a smaller ordinary student (``build_student`` shape, fewer dims and units, weights
  copied; :func:`pipeline.compress.structures.shrink`) whose pruned vocabulary rows are exactly
  zero, so ``quantize_student`` drops them into one shared zero row; its predictions equal the
  masked model's up to float rounding.
- ``unstructured``: single weights over all prunable tensors (embedding, GRU kernels and recurrent
  kernels, head; biases kept) to ``target_sparsity``. TFLM stores zeros densely, so only the
  structures that happen to empty save flash; kept because it shares everything but the mask rule.

Each round has its own work directory (``round-R/``: the fit checkpoints, ``masks.npz`` and the final
weights) and ``lottery.json`` records the finished rounds, so an interrupted run resumes inside the
round it stopped in. Every round is reported: validation loss and accuracy, sparsity per layer, the
threshold, the dropped rows / dims / units and the flash bytes of the model arrays with the
bytes saved against the dense model, plus the weight-count sizes (non-zero weights, gzip bytes).
The stage keeps the deepest round at least as accurate on validation as the dense model (else the
last round; the release then keeps the dense student, see :mod:`pipeline.all`).

What is pruned and how tfmot sees it (its ``PrunableLayer`` wrappers): :mod:`pipeline.compress.prunable`.
The pruning itself runs on the plain model, so the saved model uses plain layers and loads with
:func:`pipeline.nn.models.load_model`.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.compress.prunable import Masks, prunable_weights
from pipeline.compress.structures import (
    flash_report,
    masked_variables,
    removable,
    shrink,
    shrink_arrays,
    structured_masks,
)
from pipeline.config import PruneConfig, TrainConfig
from pipeline.nn.models import TokenEmbedding
from pipeline.nn.train import StepFactory, TrainStep, cosine_factor, fit, keras_step, predict_proba
from pipeline.progress import track
from pipeline.text.records import IdRecords

log = logging.getLogger(__name__)
Variables = Callable[[keras.Model], dict]


def global_masks(
    model: keras.Model, sparsity: float, prev_masks: Masks | None = None
) -> tuple[Masks, float]:
    """Masks pruning exactly ``round(sparsity * N)`` of the ``N`` prunable weights, and the threshold.

    One global magnitude threshold: weights already pruned in ``prev_masks`` stay pruned, and the
    smallest ``|w|`` among the survivors are pruned until the overall count is reached, so every kept
    ``|w|`` is ``>=`` the threshold ``>=`` every newly pruned ``|w|``. Ties at the threshold are broken
    deterministically: earlier in model order (layer order, then row-major index) is pruned first.
    The threshold is the largest newly pruned ``|w|`` (0.0 when nothing new is pruned).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    weights = {n: v.numpy() for n, v in prunable_weights(model).items()}
    names = list(weights)
    mags = np.concatenate([np.abs(weights[n]).astype(np.float64).ravel() for n in names])
    if prev_masks is None:
        alive = np.ones(mags.size, bool)
    else:
        alive = np.concatenate([np.asarray(prev_masks[n]).ravel() != 0 for n in names])
    k = int(round(sparsity * mags.size))
    dead = int(mags.size - alive.sum())
    if k < dead:
        raise ValueError(f"sparsity {sparsity} is below the {dead / mags.size:.4f} already pruned")
    order = np.argsort(np.where(alive, mags, -1.0), kind="stable")  # pruned ones first, then by |w|
    keep = np.ones(mags.size, bool)
    keep[order[:k]] = False
    newly = order[dead:k]
    threshold = float(mags[newly].max()) if newly.size else 0.0
    masks: Masks = {}
    start = 0
    for n in names:
        size = weights[n].size
        masks[n] = keep[start : start + size].reshape(weights[n].shape).astype(np.float32)
        start += size
    return masks, threshold


def apply_masks(model: keras.Model, masks: Masks, variables: Variables | None = None) -> None:
    """Zero the pruned weights in place (``variables``: as in :func:`masked_step`)."""
    for n, v in (variables or prunable_weights)(model).items():
        v.assign(v.numpy() * masks[n])


def rewind(model: keras.Model, rewind_weights: Sequence[np.ndarray], masks: Masks,
           variables: Variables | None = None) -> None:
    """Set every weight to its rewind value (``model.get_weights()`` order), then apply ``masks``."""
    model.set_weights(list(rewind_weights))
    apply_masks(model, masks, variables)


def _mask_enforcer(model: keras.Model, masks: Masks,
                   variables: Variables | None = None) -> Callable[[], None]:
    named = (variables or prunable_weights)(model)
    pairs = [(v, tf.constant(masks[n], dtype=v.dtype)) for n, v in named.items()]

    @tf.function
    def enforce() -> None:
        for v, m in pairs:
            v.assign(v * m)

    return enforce


def masked_step(masks: Masks, make_step: StepFactory | None = None,
                variables: Variables | None = None) -> StepFactory:
    """A step factory that runs ``make_step``'s step (default: BCE) and re-applies ``masks`` after it.

    ``variables(model)`` names the masked variables (default :func:`prunable_weights`; structured
    masks: :func:`pipeline.compress.structures.masked_variables`, which adds the GRU biases; a QAT
    model passes ``pipeline.compress.qat.qat_prunable_weights``). Masks may name more variables.
    """

    def factory(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> TrainStep:
        inner = keras_step(model) if make_step is None else make_step(model, optimizer)
        enforce = _mask_enforcer(model, masks, variables)
        enforce()

        def run(x: np.ndarray, y: np.ndarray, idx: np.ndarray, first: bool) -> tuple[float, float]:
            out = inner(x, y, idx, first)
            enforce()
            return out

        run.checkpoint = getattr(inner, "checkpoint", {})  # type: ignore[attr-defined]
        return run

    return factory


def retrain_config(cfg: PruneConfig, train_cfg: TrainConfig) -> TrainConfig:
    """The retraining of a round: ``cfg.retrain_epochs`` epochs that pick up the dense run's learning
    rate where the rewind point left it: with a cosine schedule the start rate is the dense run's
    rate after ``cfg.rewind_epoch`` of its ``max_epochs`` epochs (rewinding to epoch 7 of 8 retrains
    at the end-of-run rate, not at the initial one)."""
    lr = train_cfg.learning_rate
    if train_cfg.lr_schedule == "cosine":
        lr *= cosine_factor(cfg.rewind_epoch, train_cfg.max_epochs)
    return replace(train_cfg, max_epochs=cfg.retrain_epochs, learning_rate=lr)


def sparsity_schedule(cfg: PruneConfig, target: float | None = None) -> list[float]:
    """Target after each round: ``min(target, 1 - (1 - rate)^r)``, stopping once the target is hit.

    ``target`` defaults to the mode's: ``target_flash_saving`` (structured) or ``target_sparsity``.
    """
    if target is None:
        target = cfg.target_flash_saving if cfg.mode == "structured" else cfg.target_sparsity
    if not (0.0 < cfg.rate < 1.0 and 0.0 < target < 1.0 and cfg.rounds >= 1):
        raise ValueError(f"bad pruning schedule {cfg}")
    out: list[float] = []
    for r in range(1, cfg.rounds + 1):
        out.append(min(target, 1.0 - (1.0 - cfg.rate) ** r))
        if out[-1] >= target:
            break
    return out


# --------------------------------------------------------------------------------------------------
# Reports: sparsity, sizes, structure


def int8_weights(arrays: Sequence[np.ndarray]) -> bytes:
    """Symmetric per-tensor int8 of each array (``scale = max|w| / 127``), concatenated."""
    parts = []
    for w in arrays:
        w = np.asarray(w, np.float32)
        m = float(np.max(np.abs(w))) if w.size else 0.0
        q = np.zeros(w.shape, np.int8) if m == 0 else np.clip(np.round(w / (m / 127)), -127, 127)
        parts.append(q.astype(np.int8).tobytes())
    return b"".join(parts)


def size_report(model: keras.Model) -> dict:
    """Honest sizes of all of ``model``'s weights (biases included, 1 byte per weight in int8)."""
    ws = [np.asarray(w) for w in model.get_weights()]
    q = int8_weights(ws)
    return {
        "weights": int(sum(w.size for w in ws)),
        "nonzero_weights": int(sum(np.count_nonzero(w) for w in ws)),
        "int8_dense_bytes": len(q),
        "int8_gzip_bytes": len(gzip.compress(q, compresslevel=9, mtime=0)),
    }


def layer_sparsity(model: keras.Model) -> dict[str, dict]:
    """Per prunable weight: zeros, total, sparsity (counted on the weights themselves)."""
    out = {}
    for n, v in prunable_weights(model).items():
        w = v.numpy()
        zeros = int(w.size - np.count_nonzero(w))
        out[n] = {"zeros": zeros, "total": int(w.size), "sparsity": zeros / max(w.size, 1)}
    return out


def _unit_any(kernel: np.ndarray, units: int) -> np.ndarray:
    """Per GRU unit: whether any of its gate columns (z, r, h blocks of ``[in, 3U]``) is non-zero."""
    return kernel.reshape(kernel.shape[0], 3, units).any(axis=(0, 1))


def structure_report(model: keras.Model) -> dict:
    """What pruning freed: all-zero embedding rows, unused embedding dims, dead GRU units.

    A GRU unit ``j`` is dead when every weight into it (its z, r, h columns of the kernel and the
    recurrent kernel) and every weight out of it (its recurrent-kernel row and, for a model whose
    Dense ``prob`` reads the pooled BiGRU states directly, its row there) is zero. Its biases still
    give it a (constant) state, but nothing reads it, so it can be removed. ``no_output_units``
    counts units nothing reads, whatever their inputs.
    """
    out: dict = {}
    emb_layers = [la for la in model.layers if isinstance(la, TokenEmbedding)]
    bi = [la for la in model.layers if isinstance(la, keras.layers.Bidirectional)]
    for la in emb_layers:
        e = la.embeddings.numpy()
        rows = np.flatnonzero(~e.any(axis=1))
        used_cols = e.any(axis=0)
        for b in bi:  # a dim no GRU kernel reads is unused too
            k_any = [d.cell.kernel.numpy().any(axis=1) for d in (b.forward_layer, b.backward_layer)]
            used_cols &= np.logical_or.reduce(k_any)
        out[la.name] = {"zero_rows": int(rows.size), "zero_row_ids": rows.tolist(),
                        "rows": int(e.shape[0]), "unused_dims": int((~used_cols).sum()),
                        "dims": int(e.shape[1])}
    head = None
    try:
        head = model.get_layer("prob").kernel.numpy()
    except (ValueError, AttributeError):
        pass
    for b in bi:
        units = b.forward_layer.cell.units
        head_ok = head is not None and head.shape[0] == 2 * units and b.merge_mode == "concat"
        rep: dict = {"units": units, "head_checked": bool(head_ok)}
        for i, (d, rnn) in enumerate((("forward", b.forward_layer), ("backward", b.backward_layer))):
            k, rk = rnn.cell.kernel.numpy(), rnn.cell.recurrent_kernel.numpy()
            incoming = _unit_any(k, units) | _unit_any(rk, units)
            outgoing = rk.any(axis=1)
            if head_ok:
                outgoing |= head[i * units : (i + 1) * units].any(axis=1)
            rep[d] = {"dead_units": np.flatnonzero(~incoming & ~outgoing).tolist(),
                      "no_output_units": np.flatnonzero(~outgoing).tolist()}
        out[b.name] = rep
    return out


def _evaluate(model: keras.Model, val: tuple) -> dict:
    x, y = val
    y = np.asarray(y, np.float32)
    p = np.clip(predict_proba(model, x), 1e-7, 1 - 1e-7)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return {"val_loss": loss, "val_accuracy": float(np.mean((p >= 0.5) == (y >= 0.5)))}


def round_report(model: keras.Model, masks: Masks | None, val: tuple, embedding_bits: int = 8) -> dict:
    """One row of the per-round table (``masks=None``: the dense model; flash at ``embedding_bits``)."""
    layers = layer_sparsity(model)
    total = sum(v["total"] for v in layers.values())
    pruned = sum(int(masks[n].size - masks[n].sum()) for n in layers) if masks else 0
    struct = structure_report(model)
    brief = {}
    for name, s in struct.items():
        if "zero_rows" in s:
            brief[name] = {"zero_rows": s["zero_rows"], "unused_dims": s["unused_dims"]}
        else:
            brief[name] = {d: {"dead_units": len(s[d]["dead_units"]),
                               "no_output_units": len(s[d]["no_output_units"])}
                           for d in ("forward", "backward")}
    return {"sparsity": pruned / max(total, 1), "layers": layers, **_evaluate(model, val),
            "size": size_report(model), "flash": flash_report(model, embedding_bits), "structure": brief}


# --------------------------------------------------------------------------------------------------
# The Lottery Ticket loop


def _save_arrays(path: Path, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    data = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays)}
    if names is not None:
        data["names"] = np.array(list(names))
    np.savez(tmp, **data)
    tmp.replace(path)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"a{i}"] for i in range(sum(k.startswith("a") for k in z.files))]


def save_masks(path: Path, masks: Masks) -> None:
    _save_arrays(Path(path), list(masks.values()), list(masks))


def load_masks(path: Path) -> Masks:
    with np.load(path) as z:
        names = [str(n) for n in z["names"]]
        return {n: z[f"a{i}"] for i, n in enumerate(names)}


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def train_with_rewind_point(
    model: keras.Model, train: tuple, val: tuple, cfg: TrainConfig, work_dir: Path,
    rewind_epoch: int, make_step: StepFactory | None = None,
) -> list[np.ndarray]:
    """Train with :func:`fit` in ``work_dir`` and return the weights after epoch ``rewind_epoch``.

    Resumable: the rewind weights are kept in ``work_dir/rewind.npz``. With ``cfg.max_epochs ==
    rewind_epoch`` this only produces the rewind point (the model then holds fit's best weights).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "rewind.npz"

    def on_epoch_end(epoch: int) -> None:
        if epoch == rewind_epoch:
            _save_arrays(path, model.get_weights())

    state = fit(model, train, val, cfg, work_dir / "fit", on_epoch_end=on_epoch_end, make_step=make_step)
    if not path.exists():
        if state["epoch"] < rewind_epoch:
            raise ValueError(f"training stopped after epoch {state['epoch']}, before the rewind epoch "
                             f"{rewind_epoch}")
        raise RuntimeError(f"{work_dir}: interrupted before the rewind weights were written; "
                           "delete the directory and rerun")
    return _load_arrays(path)


def lottery_ticket(
    model: keras.Model,
    train: tuple,
    val: tuple,
    cfg: PruneConfig,
    train_cfg: TrainConfig,
    work_dir: Path,
    rewind_weights: Sequence[np.ndarray] | None = None,
    make_step: StepFactory | None = None,
    on_epoch_end: Callable[[int, int], None] | None = None,
    embedding_bits: int = 8,
) -> dict:
    """Iterative magnitude pruning with late rewinding; ``model`` ends with the last round's weights.

    ``model`` is either trained, with ``rewind_weights`` (its weights after ``cfg.rewind_epoch`` epochs
    of the same run, ``model.get_weights()`` order), or freshly initialised with ``rewind_weights=None``:
    then it is first trained with ``train_cfg`` (in ``work_dir/dense``) and the rewind point is taken
    from that run. Round ``r`` prunes to ``sparsity_schedule(cfg)[r-1]`` with one global threshold
    (structured: groups to that share of flash bytes saved; unstructured: weights to that sparsity),
    rewinds the survivors and retrains them for at most ``cfg.retrain_epochs`` epochs with the mask
    enforced after every step of ``make_step`` (default BCE; e.g. ``distill.kd_step(...)`` for KD).
    ``on_epoch_end(round, epoch)`` is called after every retraining epoch. ``embedding_bits``: the
    release's table (``quant.embedding_bits``), which the structured rounds' flash bytes count.

    Resumable from ``work_dir``: ``lottery.json`` lists the finished rounds; an interrupted round
    resumes from its last finished epoch. Returns ``{"rounds": [row0, row1, ...], "masks": masks}``
    where row 0 is the dense model and every row has ``round``, ``target``, ``sparsity``,
    ``threshold``, ``layers``, ``val_loss``, ``val_accuracy``, ``size``, ``flash`` and ``structure``.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if rewind_weights is None:
        rewind_weights = train_with_rewind_point(model, train, val, train_cfg, work_dir / "dense",
                                                 cfg.rewind_epoch, make_step)
    rewind_weights = [np.asarray(w) for w in rewind_weights]
    schedule = sparsity_schedule(cfg)
    variables = masked_variables if cfg.mode == "structured" else prunable_weights
    retrain_cfg = retrain_config(cfg, train_cfg)
    state_path = work_dir / "lottery.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}
    masks: Masks | None = None
    if state["rounds"]:
        done = state["rounds"][-1]["round"]
        model.load_weights(str(work_dir / f"round-{done}" / "final.weights.h5"))
        if done:
            masks = load_masks(work_dir / f"round-{done}" / "masks.npz")
        log.info("lottery ticket: resuming after round %d", done)
    else:
        (work_dir / "round-0").mkdir(exist_ok=True)
        model.save_weights(str(work_dir / "round-0" / "final.weights.h5"))
        row = {"round": 0, "target": 0.0, "threshold": 0.0, **round_report(model, None, val, embedding_bits)}
        state["rounds"].append(row)
        _write_json(state_path, state)
        log.info("lottery ticket: dense model val_acc %.4f val_loss %.4f", row["val_accuracy"],
                 row["val_loss"])
    first = state["rounds"][-1]["round"] + 1
    for r in track(range(first, len(schedule) + 1), desc="lottery ticket rounds", unit="rounds"):
        rdir = work_dir / f"round-{r}"
        rdir.mkdir(exist_ok=True)
        mask_path = rdir / "masks.npz"
        if mask_path.exists():  # computed before an interruption (from the same weights)
            masks = load_masks(mask_path)
            threshold = json.loads((rdir / "mask.json").read_text())["threshold"]
        else:
            masks, threshold = (structured_masks(model, schedule[r - 1], masks, embedding_bits)
                                if cfg.mode == "structured" else global_masks(model, schedule[r - 1], masks))
            _write_json(rdir / "mask.json", {"target": schedule[r - 1], "threshold": threshold})
            save_masks(mask_path, masks)  # last: its presence means the round's mask is complete
        rewind(model, rewind_weights, masks, variables)
        keras.utils.set_random_seed(train_cfg.seed + r)
        log.info("lottery ticket round %d/%d: %s %.4f (threshold %.3g), retraining", r, len(schedule),
                 "flash saving" if cfg.mode == "structured" else "sparsity", schedule[r - 1], threshold)
        hook = None if on_epoch_end is None else (lambda epoch, r=r: on_epoch_end(r, epoch))
        fit_state = fit(model, train, val, retrain_cfg, rdir / "fit", on_epoch_end=hook,
                        make_step=masked_step(masks, make_step, variables))
        apply_masks(model, masks, variables)  # already zero; guards against any step that skipped the mask
        model.save_weights(str(rdir / "final.weights.h5"))
        row = {"round": r, "target": schedule[r - 1], "threshold": threshold,
               "best_epoch": fit_state["best_epoch"], "epochs": fit_state["epoch"],
               **round_report(model, masks, val, embedding_bits)}
        state["rounds"].append(row)
        _write_json(state_path, state)
        fl = row["flash"]
        log.info("round %d: val_acc %.4f val_loss %.4f; model arrays %d bytes (%d saved, %.1f%%): %d rows "
                 "dropped, %d dims, %d units; sparsity %.4f", r, row["val_accuracy"], row["val_loss"],
                 fl["bytes"], fl["saved_bytes"], 100 * fl["saved"], fl["dropped_rows"], fl["dims"],
                 fl["units"], row["sparsity"])
    return {"rounds": state["rounds"], "masks": masks}


# --------------------------------------------------------------------------------------------------
# The stage


def chosen_round(rows: Sequence[dict], keep: str = "deepest_accurate") -> dict:
    """The round the stage keeps: the deepest whose validation accuracy is at least the dense model's
    (row 0), else the last (``keep="last"``: always the last)."""
    ok = [r for r in rows[1:] if r["val_accuracy"] >= rows[0]["val_accuracy"]]
    return ok[-1] if keep == "deepest_accurate" and ok else rows[-1]


def _weights_from(path: Path, like: keras.Model) -> list[np.ndarray]:
    path = Path(path)
    if path.suffix == ".npz":
        return _load_arrays(path)
    m = keras.models.clone_model(like)
    m.load_weights(str(path))
    return m.get_weights()


def prune_student(
    student_dir: Path, data_dir: Path, out_dir: Path, work_dir: Path,
    cfg: PruneConfig, train_cfg: TrainConfig, make_step: StepFactory | None = None,
    rewind_weights: Sequence[np.ndarray] | Path | None = None, embedding_bits: int = 8,
    train_rows: Iterable[tuple[str, float]] | IdRecords | None = None, records: bool = False,
) -> dict:
    """Stage: Lottery Ticket pruning of a trained student; ``out_dir`` becomes a model directory.

    The rewind point (weights after ``cfg.rewind_epoch`` epochs of the student's own run): in order,
    ``rewind_weights`` (arrays, or a ``.weights.h5``/``.npz`` file), ``student_dir /
    "rewind.weights.h5"``, or a fresh run of ``cfg.rewind_epoch`` epochs (the architecture
    re-initialised after ``set_determinism(train_cfg.seed)``, ``train_cfg``, ``make_step``), which
    with the student's own settings reproduces its trajectory (``pruning.json`` compares the
    validation loss with ``history.json``: ``rewind.reproduces_student``). Pass the ``make_step``
    (e.g. ``kd_step``) and training rows the student used: ``train_rows`` (``(text, label)`` pairs,
    or :class:`IdRecords` of this tokenizer's ids: ``distill.target_rows``) replaces ``train.jsonl``;
    validation is ``val.jsonl``. ``embedding_bits``: as in :func:`lottery_ticket`. ``records``: the
    training ids in TFRecord shards (``data.stream``).

    Keeps the round :func:`chosen_round` picks, shrunk (:func:`pipeline.compress.structures.shrink`:
    the dims and units the device drops are removed, pruned vocabulary rows stay exactly zero) and
    writes ``model.keras`` (an ordinary smaller student: loads with ``models.load_model``, converts
    with ``quantize_student``), the tokenizer, ``model.json``, ``history.json`` (that round's
    training), ``pruning.json`` (config, rewind source, the per-round table, the kept ``round``, the
    ``shrunk`` sizes with the dropped row ids, the final structure) and ``masks.npz`` (the masks
    shrunk alike, for fine-tuning that must keep the zeros).
    """
    from pipeline.nn.models import load_model, save_model
    from pipeline.nn.train import (
        labelled_ids,
        set_determinism,
        soft_labelled_ids,
        train_ids_path,
        write_model_info,
    )
    from pipeline.text.tokenizer import Tokenizer

    student_dir, out_dir, work_dir = Path(student_dir), Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(train_cfg.seed)
    tok = Tokenizer.load(student_dir)
    student = load_model(student_dir / "model.keras")
    splits = labelled_ids(data_dir, tok, ("val",) if train_rows is not None else ("train", "val"),
                          work_dir, records)
    if isinstance(train_rows, IdRecords):  # the student's ids already (distill.target_rows)
        splits["train"] = train_rows, train_rows.labels()
    elif train_rows is not None:
        splits["train"] = soft_labelled_ids(tok, train_rows, train_ids_path(work_dir, records), records)
    rewind_info: dict = {"epoch": cfg.rewind_epoch}
    if rewind_weights is not None and not isinstance(rewind_weights, str | Path):
        rewind_info["source"] = "given"
        rw = [np.asarray(w) for w in rewind_weights]
    elif rewind_weights is not None or (student_dir / "rewind.weights.h5").exists():
        src = Path(rewind_weights) if rewind_weights is not None else student_dir / "rewind.weights.h5"
        rewind_info["source"] = str(src)
        rw = _weights_from(src, student)
    else:
        rewind_info["source"] = "retrained"
        set_determinism(train_cfg.seed)
        fresh = keras.models.clone_model(student)
        run_cfg = replace(train_cfg, max_epochs=cfg.rewind_epoch)
        log.info("prune: no rewind checkpoint; training a fresh student for %d epoch(s)", cfg.rewind_epoch)
        rw = train_with_rewind_point(fresh, splits["train"], splits["val"], run_cfg,
                                     work_dir / "rewind", cfg.rewind_epoch, make_step)
        ours = json.loads((work_dir / "rewind" / "fit" / "state.json").read_text())["history"]
        theirs_path = student_dir / "history.json"
        if theirs_path.exists():
            theirs = json.loads(theirs_path.read_text())["history"]
            a = next((h["val_loss"] for h in ours if h["epoch"] == cfg.rewind_epoch), None)
            b = next((h["val_loss"] for h in theirs if h["epoch"] == cfg.rewind_epoch), None)
            rewind_info.update(val_loss=a, student_val_loss=b,
                               reproduces_student=a is not None and b is not None and abs(a - b) < 1e-5)
            if not rewind_info["reproduces_student"]:
                log.warning("prune: the fresh run's epoch-%d val_loss %s differs from the student's "
                            "%s: the rewind point is from a different trajectory", cfg.rewind_epoch,
                            a, b)
    set_determinism(train_cfg.seed)
    result = lottery_ticket(student, splits["train"], splits["val"], cfg, train_cfg, work_dir / "lt",
                            rewind_weights=rw, make_step=make_step, embedding_bits=embedding_bits)
    rows, masks = result["rounds"], result["masks"]
    last = chosen_round(rows, cfg.keep)
    if last["round"] != rows[-1]["round"]:
        rdir = work_dir / "lt" / f"round-{last['round']}"
        student.load_weights(str(rdir / "final.weights.h5"))
        masks = load_masks(rdir / "masks.npz")
    keep = removable(student)
    small = shrink(student, keep)
    small_masks = shrink_arrays(masks, keep)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(out_dir)
    save_model(small, out_dir / "model.keras")
    save_masks(out_dir / "masks.npz", small_masks)
    write_model_info(out_dir, {"keras": "model.keras"}, kind="student-pruned",
                     params=int(small.count_params()), nonzero=last["size"]["nonzero_weights"],
                     sparsity=last["sparsity"], round=last["round"], files=["model.keras"])
    hist = work_dir / "lt" / f"round-{last['round']}" / "fit" / "state.json"
    (out_dir / "history.json").write_text(hist.read_text())
    shrunk = {**last["flash"], "params": int(small.count_params()),
              "dropped_row_ids": np.flatnonzero(~keep.rows).tolist()}
    _write_json(out_dir / "pruning.json", {"config": asdict(cfg), "rewind": rewind_info, "rounds": rows,
                                           "round": last["round"], "shrunk": shrunk,
                                           "structure": structure_report(small)})
    summary = {
        "rounds": rows[-1]["round"], "round": last["round"], "mode": cfg.mode,
        "sparsity": last["sparsity"], "val_accuracy": last["val_accuracy"],
        "val_loss": last["val_loss"], "dense_val_accuracy": rows[0]["val_accuracy"],
        "flash_bytes": last["flash"]["bytes"], "dense_flash_bytes": last["flash"]["dense_bytes"],
        "flash_saved": last["flash"]["saved"], "dims": last["flash"]["dims"],
        "units": last["flash"]["units"], "dropped_rows": last["flash"]["dropped_rows"],
        "nonzero_weights": last["size"]["nonzero_weights"], "weights": last["size"]["weights"],
        "int8_gzip_bytes": last["size"]["int8_gzip_bytes"],
        "dense_int8_gzip_bytes": rows[0]["size"]["int8_gzip_bytes"],
        "rewind": rewind_info["source"],
    }
    log.info("prune: %s", summary)
    return summary

