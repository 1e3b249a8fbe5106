"""Teacher training: length-bucketed batches, early stopping, a resumable checkpoint every epoch.

Batches group reviews of similar length and are trimmed to the longest review in the batch (rounded
up to 16), so short reviews do not pay for padding. Everything random derives from ``seed`` and the
epoch number, so an uninterrupted run is deterministic, and a resumed run replays the same batches.
The training ids are rows in memory, in a file (:class:`RaggedFile`) or, with ``data.stream``, TFRecord
shards read with ``tf.data`` (:class:`IdRecords`, :func:`epoch_batches`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401
from pipeline.config import TrainConfig
from pipeline.progress import Progress
from pipeline.text.ragged import Ragged, RaggedFile, Rows
from pipeline.text.records import IdRecords
from pipeline.text.tokenizer import UNK_ID

log = logging.getLogger(__name__)

PAD_MULTIPLE = 16
CKPT_PAUSE_ENV = "TINYSENT_TEST_CKPT_PAUSE"  # test hook, see _test_pause

TrainStep = Callable[[np.ndarray, np.ndarray, np.ndarray, bool], tuple[float, float]]
"""``step(x, y, batch_indices, first_batch_of_epoch) -> (running loss, running accuracy)``.

A step with state of its own (AFD's pair attention and its optimizer) lists it in a ``checkpoint``
attribute (a dict of trackables) so that :func:`fit` saves and restores it with the model."""
StepFactory = Callable[[keras.Model, keras.optimizers.Optimizer], TrainStep]

# Any batch: ``train_on_batch`` and ``predict_on_batch`` trace their function again for new padded
# widths and batch sizes (two or three traces of a BiGRU, seconds each, in every training stage);
# a signature with unknown dimensions is traced once and runs the same operations (the same
# weights and losses, bit for bit, on the test task of tests/test_train.py).
IDS_SPEC = tf.TensorSpec([None, None], tf.int32)
LABELS_SPEC = tf.TensorSpec([None], tf.float32)


def set_determinism(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def seeded_dropout(model: keras.Model) -> list[tf.random.Generator]:
    """Give every random layer of ``model`` (dropout) its own ``tf.random.Generator``; returns them.

    By default tf_keras' dropout runs a stateful random kernel whose position lives in the process
    (inside the traced training function), so a run resumed from a checkpoint drew other masks
    than one never stopped. A generator's state is a variable: :func:`fit` re-seeds it at every
    epoch from ``(seed, epoch, layer)``, so an epoch's masks do not depend on the process.
    """
    from tf_keras.src.backend import RandomGenerator
    from tf_keras.src.engine.base_layer import BaseRandomLayer

    gens = []
    for layer in model.submodules:
        if isinstance(layer, BaseRandomLayer):
            rg = getattr(layer, "_seeded_rng", None)
            if rg is None:
                rg = RandomGenerator(1, rng_type=RandomGenerator.RNG_STATEFUL)
                rg._maybe_init()
                # bypass Keras' attribute tracking: the state is re-seeded, not saved with weights
                object.__setattr__(layer, "_seeded_rng", rg)
                object.__setattr__(layer, "_random_generator", rg)
            gens.append(rg._generator)
    return gens


def epoch_seed(seed: int, epoch: int, part: int = 0) -> int:
    """A 63-bit seed for ``part`` of ``epoch`` (dropout generators): a function of its arguments only."""
    return int(np.random.default_rng([seed, epoch, part, 7]).integers(2**63 - 1))


def pad_batch(rows: Sequence[Sequence[int]], multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Right-pad id rows with 0 to the longest row, rounded up to ``multiple``."""
    width = max(1, max((len(r) for r in rows), default=1))
    width = int(math.ceil(width / multiple) * multiple)
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket_batches: int
) -> list[np.ndarray]:
    """Index batches: shuffle, sort chunks of ``bucket_batches`` batches by length, shuffle batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    lengths = np.asarray(lengths)
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def row_lengths(ids: Sequence[Sequence[int]]) -> Sequence[int]:
    """Length of each id row; packed rows (:mod:`pipeline.text.ragged`) answer from their offsets
    without reading a row."""
    return ids.lengths if isinstance(ids, Rows) else [len(r) for r in ids]


def keras_step(model: keras.Model) -> TrainStep:
    """The compiled model's own training step (what ``train_on_batch`` runs: forward, loss,
    optimizer, metrics), traced once for every batch shape (:data:`IDS_SPEC`). Like
    ``train_on_batch(x, y, reset_metrics=first)`` it returns the running loss and accuracy,
    restarted at the epoch's first batch."""
    # a function that creates variables on its first call is traced twice: create the
    # optimizer's and the metrics' variables first
    model.optimizer.build(model.trainable_variables)
    y_pred = model(np.ones((1, 1), np.int32), training=False)
    model.compiled_loss.build(y_pred)
    model.compiled_metrics.build(y_pred, tf.zeros([1]))
    train = tf.function(lambda x, y: model.train_step((x, y)), input_signature=[IDS_SPEC, LABELS_SPEC])

    def step(x: np.ndarray, y: np.ndarray, idx: np.ndarray, first: bool) -> tuple[float, float]:
        if first:
            model.reset_metrics()
        logs = train(np.asarray(x, np.int32), np.asarray(y, np.float32))
        return float(logs["loss"]), float(logs["accuracy"])

    return step


def predict_batch(model: keras.Model, x: np.ndarray) -> Any:
    """``model.predict_on_batch(x)`` (an array, or a list of them for several outputs), traced once
    for every batch shape (the function lives on the model)."""
    fn = getattr(model, "_predict_any_batch", None)
    if fn is None:
        fn = tf.function(lambda ids: model(ids, training=False), input_signature=[IDS_SPEC])
        object.__setattr__(model, "_predict_any_batch", fn)  # untracked: not saved with the model
    return tf.nest.map_structure(np.asarray, fn(np.asarray(x, np.int32)))


def predict_proba(
    model: keras.Model, ids: Sequence[Sequence[int]], batch_size: int = 256
) -> np.ndarray:
    """P(positive) for variable-length id rows, batched by length for speed; input order kept."""
    order = np.argsort(row_lengths(ids), kind="stable")
    out = np.zeros(len(ids), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = predict_batch(model, pad_batch([ids[i] for i in idx])).reshape(-1)
    return out


def cosine_factor(progress: float, epochs: int) -> float:
    """LR factor after ``progress`` of ``epochs`` epochs: ``(1 + cos(pi * progress / epochs)) / 2``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(progress / max(epochs, 1), 1.0)))


def bce(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against labels ``y`` (clipped at 1e-7)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def epoch_batches(
    x: Sequence[Sequence[int]] | IdRecords, y: np.ndarray, lengths: Sequence[int] | None,
    cfg: TrainConfig, rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """An epoch's ``(ids, labels, row indices, share of the epoch before the batch)``.

    Rows in memory or a :class:`RaggedFile`: :func:`bucketed_batches` drawn from ``rng``.
    :class:`IdRecords`: :func:`_record_batches`, seeded from ``rng``.
    """
    if isinstance(x, IdRecords):
        yield from _record_batches(x, cfg.batch_size, int(rng.integers(2**63 - 1)), cfg.bucket_batches)
        return
    batches = bucketed_batches(lengths, cfg.batch_size, rng, cfg.bucket_batches)
    for i, idx in enumerate(batches):
        yield pad_batch([x[j] for j in idx]), y[idx], idx, i / len(batches)


def _record_batches(
    records: IdRecords, batch_size: int, seed: int, chunk_batches: int,
    shuffle_buffer: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """An epoch of :class:`IdRecords` as :func:`bucketed_batches` does in memory: records come
    shuffled (shard order and a shuffle buffer), ``chunk_batches`` batches' worth at a time; each
    chunk is sorted by length, cut into batches (:func:`pad_batch`) that come in a random order.
    Deterministic for a ``seed``."""
    rng = np.random.default_rng([seed, 1])
    extra = {} if shuffle_buffer is None else {"shuffle_buffer": shuffle_buffer}
    seen = 0
    for flat, splits, labels, index in records.chunks(batch_size * chunk_batches, seed, **extra):
        rows = Ragged(flat, splits)
        order = np.argsort(rows.lengths, kind="stable")
        cut = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        for j in rng.permutation(len(cut)):
            idx = cut[j]
            yield pad_batch([rows[i] for i in idx]), labels[idx], index[idx], seen / max(len(records), 1)
            seen += len(idx)


def fit(
    model: keras.Model,
    train: tuple[Sequence[Sequence[int]] | IdRecords, np.ndarray],
    val: tuple[Sequence[Sequence[int]], np.ndarray],
    cfg: TrainConfig,
    work_dir: Path,
    on_epoch_end: Callable[[int], None] | None = None,
    make_step: StepFactory | None = None,
) -> dict:
    """Train ``model`` with early stopping on validation loss; resumes from ``work_dir``.

    ``train``: ``(id rows, labels)``; the rows may be :class:`IdRecords` (batches from ``tf.data``).

    ``make_step(model, optimizer)`` may supply a custom training step (distillation); the default
    is Keras' own step with binary cross-entropy (:func:`keras_step`).

    ``work_dir`` holds ``ckpt-N`` (model + optimizer after the last finished epoch), ``best.weights.h5``
    and ``state.json``. ``on_epoch_end(epoch)`` runs after ``ckpt-epoch`` and ``state.json.tmp`` are
    written and before ``state.json`` is replaced, so what it saves is redone if the run dies there.
    With ``cfg.ema`` the averaged weights are the ones validated and kept. On return the model holds
    the best epoch's weights; the history is returned.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = train
    x_val, y_val = val
    y_train = np.asarray(y_train, dtype=np.float32)
    y_val = np.asarray(y_val, dtype=np.float32)
    optimizer = keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm)
    model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])
    weights = model.trainable_weights
    ema = [tf.Variable(w, trainable=False) for w in weights] if cfg.ema else []

    @tf.function
    def ema_update() -> None:
        for e, w in zip(ema, weights, strict=True):
            e.assign(cfg.ema * e + (1.0 - cfg.ema) * w)

    def swap_ema() -> None:
        """Exchange live and averaged weights (a second call swaps back)."""
        for e, w in zip(ema, weights, strict=True):
            live = tf.identity(w)
            w.assign(e)
            e.assign(live)

    dropout_rngs = seeded_dropout(model)
    step = keras_step(model) if make_step is None else make_step(model, optimizer)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, ema=ema,
                               **getattr(step, "checkpoint", {}))
    state_path = work_dir / "state.json"
    best_path = work_dir / "best.weights.h5"
    state = {"epoch": 0, "best_loss": None, "best_epoch": 0, "wait": 0,
             "lr": cfg.learning_rate, "history": []}
    if state_path.exists():
        state = json.loads(state_path.read_text())
        ckpt.read(str(work_dir / f"ckpt-{state['epoch']}")).expect_partial()
        log.info("resuming training after epoch %d (best epoch %d)", state["epoch"],
                 state["best_epoch"])
    _clean_stale(work_dir, state["epoch"])
    lengths = None if isinstance(x_train, IdRecords) else row_lengths(x_train)
    while state["epoch"] < cfg.max_epochs and state["wait"] < cfg.patience:
        epoch = state["epoch"] + 1
        optimizer.learning_rate.assign(state["lr"])
        rng = np.random.default_rng([cfg.seed, epoch])
        for part, gen in enumerate(dropout_rngs):
            gen.reset_from_seed(epoch_seed(cfg.seed, epoch, part))
        t0 = time.monotonic()
        with Progress(len(y_train), f"epoch {epoch}/{cfg.max_epochs}", "reviews") as progress:
            for i, (x, y, idx, done) in enumerate(epoch_batches(x_train, y_train, lengths, cfg, rng)):
                if cfg.lr_schedule == "cosine":
                    optimizer.learning_rate.assign(
                        state["lr"] * cosine_factor(epoch - 1 + done, cfg.max_epochs))
                if cfg.token_dropout:
                    x = np.where((x > 0) & (rng.random(x.shape) < cfg.token_dropout), UNK_ID, x)
                loss, acc = step(x, y, idx, i == 0)
                if ema:
                    ema_update()
                progress.update(len(idx), f"loss {loss:.4f} acc {acc:.4f}")
        if ema:
            swap_ema()  # validate (and keep as best) the averaged weights
        p_val = predict_proba(model, x_val)
        val_loss = bce(y_val, p_val)
        val_acc = float(np.mean((p_val >= 0.5) == (y_val >= 0.5)))
        record = {"epoch": epoch, "loss": float(loss), "accuracy": float(acc),
                  "val_loss": val_loss, "val_accuracy": val_acc, "lr": state["lr"],
                  "seconds": time.monotonic() - t0}
        state["history"].append(record)
        if state["best_loss"] is None or val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_epoch=epoch, wait=0)
            tmp_best = work_dir / "best.tmp.weights.h5"
            model.save_weights(str(tmp_best))
            tmp_best.replace(best_path)
        else:
            state["wait"] += 1
            state["lr"] *= cfg.lr_decay_on_plateau
        if ema:
            swap_ema()
        state["epoch"] = epoch
        ckpt.write(str(work_dir / f"ckpt-{epoch}"))
        _test_pause(work_dir, epoch)
        tmp_state = work_dir / "state.json.tmp"
        tmp_state.write_text(json.dumps(state, indent=2))
        if on_epoch_end is not None:  # before the epoch counts as done: a kill here redoes both
            on_epoch_end(epoch)
        tmp_state.replace(state_path)
        for old in work_dir.glob(f"ckpt-{epoch - 1}.*"):
            old.unlink()
        log.info("epoch %d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f | %.0fs%s", epoch,
                 record["loss"], record["accuracy"], val_loss, val_acc, record["seconds"],
                 "  (best)" if state["best_epoch"] == epoch else "")
    model.load_weights(str(best_path))
    log.info("training done: best epoch %d, val_loss %.4f", state["best_epoch"], state["best_loss"])
    return state


def _clean_stale(work_dir: Path, epoch: int) -> None:
    """Delete what a killed run left half-written: checkpoints other than ``ckpt-epoch``, temp files."""
    for p in work_dir.iterdir():
        stale = p.name.startswith("ckpt-") and not p.name.startswith(f"ckpt-{epoch}.")
        if stale or ".tmp" in p.name or p.name.endswith(".writing"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _test_pause(work_dir: Path, epoch: int) -> None:
    """Test hook: with ``$TINYSENT_TEST_CKPT_PAUSE == epoch``, mark ``ckpt-N.writing`` and sleep
    between the checkpoint files and ``state.json``, so that a test can kill the run mid-write."""
    if os.environ.get(CKPT_PAUSE_ENV) == str(epoch):
        (work_dir / f"ckpt-{epoch}.writing").touch()
        time.sleep(600)


def ppmi_embeddings(
    ids: Sequence[Sequence[int]], vocab_size: int, dim: int, window: int = 5, seed: int = 13,
) -> np.ndarray:
    """Embedding init from the training split alone: truncated SVD of the positive PMI matrix.

    Counts token co-occurrences within ``window`` on either side, takes PPMI with context
    distribution smoothing (alpha 0.75), and returns ``U * sqrt(S)`` scaled to std 0.05
    (Levy & Goldberg 2014). Rows of tokens that never occur are small random values.
    """
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    seqs = [np.asarray(r, np.int32) for r in ids if len(r) > 1]
    rows, cols = [], []
    for d in range(1, window + 1):
        a = np.concatenate([s[:-d] for s in seqs if len(s) > d] or [np.zeros(0, np.int32)])
        b = np.concatenate([s[d:] for s in seqs if len(s) > d] or [np.zeros(0, np.int32)])
        rows += [a, b]
        cols += [b, a]
    r, c = np.concatenate(rows), np.concatenate(cols)
    counts = sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(vocab_size, vocab_size))
    counts = counts.tocsr().tocoo()
    total = float(counts.sum())
    row_sum = np.asarray(counts.sum(1)).ravel()
    ctx = np.asarray(counts.sum(0)).ravel() ** 0.75
    ctx = ctx / max(ctx.sum(), 1e-12) * total
    pmi = np.log(counts.data * total / (row_sum[counts.row] * ctx[counts.col] + 1e-12) + 1e-12)
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])),
                         shape=(vocab_size, vocab_size))
    k = min(dim, vocab_size - 1)
    u, s, _ = randomized_svd(ppmi, k, random_state=seed)
    emb = np.zeros((vocab_size, dim), np.float32)
    emb[:, :k] = u * np.sqrt(s)
    emb *= 0.05 / max(float(emb.std()), 1e-12)
    unseen = row_sum == 0
    emb[unseen] = np.random.default_rng(seed).uniform(-0.05, 0.05, (int(unseen.sum()), dim))
    return emb


TRAIN_IDS = "train_ids.bin"  # a stage's training ids in its work folder (RaggedFile)
TRAIN_RECORDS = "train_records"  # ... with data.stream: TFRecord shards (IdRecords)


def train_ids_path(work_dir: Path, records: bool = False) -> Path:
    """Where a stage keeps its training ids: a :class:`RaggedFile`, or :class:`IdRecords`."""
    return Path(work_dir) / (TRAIN_RECORDS if records else TRAIN_IDS)


def labelled_ids(data_dir: Path, tok, names=("train", "val"), work_dir: Path | None = None,
                 records: bool = False) -> dict:
    """``{split: (ids, float32 labels)}`` for the splits ``names`` of ``data_dir``, each file read
    once as a stream; with ``work_dir``, the training split's ids go to ``work_dir/train_ids.bin``
    (:class:`RaggedFile`: memory holds 12 bytes a review) or, with ``records``, to TFRecord shards
    in ``work_dir/train_records`` (:class:`IdRecords`, read with ``tf.data``); the other splits
    stay packed in memory."""
    from pipeline.data import iter_jsonl

    out = {}
    for name in names:
        path = train_ids_path(work_dir, records) if work_dir is not None and name == "train" else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        out[name] = soft_labelled_ids(tok, iter_jsonl(Path(data_dir) / f"{name}.jsonl"), path,
                                      records and path is not None)
    return out


def soft_labelled_ids(tok, rows: Iterable[tuple[str, float]], path: Path | None = None,
                      records: bool = False) -> tuple[Ragged | RaggedFile | IdRecords, np.ndarray]:
    """``(ids, float32 labels)`` of ``(text, label)`` rows read once, in order; ``path``: the ids go
    to that file (:class:`RaggedFile`), so memory holds 12 bytes a row whatever the texts, or with
    ``records`` to that folder of TFRecord shards (:class:`IdRecords`, labels inside)."""
    labels = array("f")

    def texts() -> Iterator[str]:
        for text, y in rows:
            labels.append(y)
            yield text

    if records:
        if path is None:
            raise ValueError("records need a folder (path)")
        from pipeline.text.tokenizer import chunks

        def parts() -> Iterator[tuple[list, Sequence[float]]]:
            for part in chunks(texts(), 8192):
                yield tok.ids(part), labels[len(labels) - len(part):]

        ids = IdRecords.write(parts(), path)
    else:
        ids = tok.ids_ragged(texts(), path=path)
    return ids, np.frombuffer(labels, np.float32).copy()


def fit_and_save(model: keras.Model, tok, splits: dict, cfg: TrainConfig, work_dir: Path,
                 out_dir: Path, kind: str, make_step: StepFactory | None = None,
                 on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train with :func:`fit`, then write a self-contained model directory."""
    from pipeline.nn.models import save_model

    log.info("%s: %d train / %d val reviews, %d parameters", kind, len(splits["train"][1]),
             len(splits["val"][1]), model.count_params())
    state = fit(model, splits["train"], splits["val"], cfg, work_dir, make_step=make_step,
                on_epoch_end=on_epoch_end)
    out_dir = Path(out_dir)
    tok.save(out_dir)
    save_model(model, out_dir / "model.keras")
    write_model_info(out_dir, {"keras": "model.keras"}, kind=kind,
                     params=int(model.count_params()), files=["model.keras"])
    (out_dir / "history.json").write_text(json.dumps(state, indent=2))
    return {"best_epoch": state["best_epoch"], "val_loss": state["best_loss"],
            "params": int(model.count_params())}


def write_model_info(model_dir: Path, runtimes: dict[str, str], **extra) -> None:
    """``model.json``: which runtimes a model directory serves and from which files."""
    info = {"runtimes": runtimes, **extra}
    (Path(model_dir) / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True))
