"""Distributed training with ``tf.distribute``: one device, all local GPUs, or several machines.

    python -m pipeline.distribute --strategy default|mirrored|multiworker \\
        (--data runs/smoke/data --tokenizer runs/smoke/student_tokenizer | --shards STREAM_DIR) \\
        --out DIR [--preset smoke|full] [--model student|teacher] [--max-steps N] \\
        [--weights-out FILE.npz]

Strategies (:func:`strategy_from_name`):

- ``default``: TensorFlow's default strategy, one device (what ``pipeline.nn.train`` does today).
- ``mirrored``: ``MirroredStrategy`` over every local GPU (the CPU when there is none).
- ``multiworker``: ``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment
  variable: ``{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker",
  "index": i}}``. Start the same command on every machine with its own ``index``; worker 0 is the
  chief and the only one that writes the model directory. Every worker needs the same data and
  tokenizer folders (same files, any path).

Batch size. ``TrainConfig.batch_size`` is the per-replica batch; a step consumes a global batch of
``batch_size * strategy.num_replicas_in_sync`` reviews. Every worker computes the same schedule of
global batches from the seed and the epoch (shuffle, then groups of ``bucket_batches`` global batches
sorted by length, so padding stays small; a last partial global batch is dropped), and each replica
takes its own contiguous slice of each global batch, padded to its longest review. The loss of a
replica is the sum of its per-review losses divided by the *global* batch size
(``tf.nn.compute_average_loss``), and the optimizer sums the replicas' gradients, so one step equals a
single-device step on the whole global batch (tested with two workers). The learning rate is not
scaled with the number of replicas; raise it yourself if the global batch grows a lot.

From TFRecord shards (:class:`Shards`, ``--shards``): each worker's input pipeline reads its own
shard files (every ``n``-th from the ``i``-th), shuffles, batches by length and repeats
(:func:`shards_dataset_fn`); the global batch is the workers' per-replica batches together, an
epoch ``reviews // global batch`` steps, and validation streams the ``val`` shards.

Early stopping, learning-rate halving on a plateau and the best-epoch weights follow
``pipeline.nn.train.fit``; validation runs on every worker on its own (identical) copy of the weights,
so all workers take the same decisions.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.config import STRATEGIES
from pipeline.data.stream import Shards

log = logging.getLogger(__name__)



def strategy_from_name(name: str):
    """A ``tf.distribute.Strategy`` for ``default`` | ``mirrored`` | ``multiworker``.

    Call it before any other TensorFlow op of the program: ``MultiWorkerMirroredStrategy`` must
    configure the runtime first. ``multiworker`` reads the cluster from ``TF_CONFIG`` and fails
    with a message when it is unset.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ValueError(
                "strategy 'multiworker' needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} (see pipeline/distribute.py)')
        try:
            tf_config = json.loads(raw)
            workers = tf_config["cluster"]["worker"]
            tf_config["task"]["index"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"TF_CONFIG is not a valid cluster spec ({e}): {raw[:200]}") from e
        log.info("multi-worker strategy: %d workers, this is %s", len(workers), tf_config["task"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def worker_info(strategy) -> tuple[int, int]:
    """``(this worker's index, number of workers)``; ``(0, 1)`` outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1
    return int(resolver.task_id or 0), len(resolver.cluster_spec().as_dict().get("worker", [1]))


def is_chief(strategy) -> bool:
    return worker_info(strategy)[0] == 0


def global_batch_size(per_replica: int, strategy) -> int:
    """Reviews per training step: the per-replica batch times the replicas in sync."""
    return int(per_replica) * int(strategy.num_replicas_in_sync)


def global_batches(
    lengths: Sequence[int], global_batch: int, rng: np.random.Generator, bucket_batches: int,
) -> list[np.ndarray]:
    """Full global batches of indices: shuffle, drop the remainder, sort chunks by length, shuffle.

    Same on every worker for the same ``rng`` state; every batch has exactly ``global_batch`` rows,
    so every replica gets the same number of reviews on every step.
    """
    n = len(lengths) - len(lengths) % global_batch
    if n == 0:
        raise ValueError(f"{len(lengths)} training reviews are fewer than one global batch "
                         f"({global_batch}); lower train.batch_size")
    order = rng.permutation(len(lengths))[:n]
    lengths = np.asarray(lengths)
    chunk = global_batch * max(1, bucket_batches)
    batches: list[np.ndarray] = []
    for start in range(0, n, chunk):
        part = order[start: start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i: i + global_batch] for i in range(0, len(part), global_batch))
    return [batches[i] for i in rng.permutation(len(batches))]


def replica_slice(batch: np.ndarray, replica: int, replicas: int) -> np.ndarray:
    """The contiguous part of a global batch that replica ``replica`` (global id) trains on."""
    per = len(batch) // replicas
    return batch[replica * per: (replica + 1) * per]


def _dataset_fn(x: Sequence[Sequence[int]], y: np.ndarray, schedule: list[np.ndarray],
                global_batch: int) -> Callable:
    """``distribute_datasets_from_function`` input: each pipeline yields its replicas' slices."""
    import tensorflow as tf

    from pipeline.nn.train import pad_batch

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas = ctx.num_replicas_in_sync
        per = ctx.get_per_replica_batch_size(global_batch)
        local = replicas // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * local

        def gen():
            for batch in schedule:
                for r in range(first, first + local):
                    idx = replica_slice(batch, r, replicas)
                    yield pad_batch([x[i] for i in idx]), y[idx]

        ds = tf.data.Dataset.from_generator(gen, output_signature=(
            tf.TensorSpec((per, None), tf.int32), tf.TensorSpec((per,), tf.float32)))
        return ds.prefetch(2)

    return fn


def length_buckets(seq_len: int) -> list[int]:
    """Bucket boundaries for length-grouped batches: 16, 32, 64, ... below ``seq_len``."""
    out, b = [], 16
    while b < seq_len:
        out.append(b)
        b *= 2
    return out


def shards_dataset_fn(shards: Shards, global_batch: int, seed: int) -> Callable:
    """``distribute_datasets_from_function`` input from TFRecord shards, sharded by file.

    Input pipeline ``i`` of ``n`` (one per worker) reads every ``n``-th shard file from the
    ``i``-th (:func:`pipeline.data.stream.shard_files`), shuffles with ``seed``, groups reviews of
    similar length (:func:`length_buckets`) into full per-replica batches and repeats, so every
    replica has a batch at every step (an epoch is a number of steps, not an exact pass).
    """
    from pipeline.data.stream import make_dataset

    def fn(ctx) -> object:
        per = ctx.get_per_replica_batch_size(global_batch)
        return make_dataset(shards.root, shards.split, per, seed=seed, repeat=True,
                            bucket_boundaries=length_buckets(shards.seq_len), drop_remainder=True,
                            pipeline=(ctx.input_pipeline_id, ctx.num_input_pipelines))

    return fn


def fit_distributed(
    build_model: Callable[[], object],
    train: tuple[Sequence[Sequence[int]], np.ndarray] | Shards,
    val: tuple[Sequence[Sequence[int]], np.ndarray] | Shards,
    cfg,
    strategy,
    work_dir: Path | None = None,
    max_steps: int | None = None,
    make_optimizer: Callable[[], object] | None = None,
) -> tuple[object, dict]:
    """Train a model built by ``build_model()`` under ``strategy``; returns ``(model, state)``.

    Mirrors :func:`pipeline.nn.train.fit` (Adam with ``clipnorm``, binary cross-entropy, early stopping
    on validation loss, learning rate times ``lr_decay_on_plateau`` on a plateau, best weights
    restored). ``max_steps`` stops after that many global steps in total (smoke tests). The chief
    keeps ``best.weights.h5`` in ``work_dir`` (a temporary folder elsewhere). ``make_optimizer``
    replaces Adam (tests use plain SGD, whose step shows any error in the loss scaling).
    ``train`` / ``val`` as :class:`Shards` stay on disk: each worker reads its own shard files
    (:func:`shards_dataset_fn`), an epoch is ``reviews // global batch`` steps, and validation
    streams the split in batches.
    """
    import tensorflow as tf
    import tf_keras as keras

    from pipeline.nn.train import bce, pad_batch

    streamed = isinstance(train, Shards)
    if not streamed:
        x_train, y_train = train
        y_train = np.asarray(y_train, dtype=np.float32)
    if not isinstance(val, Shards):
        x_val, y_val = val
        y_val = np.asarray(y_val, dtype=np.float32)
    replicas = strategy.num_replicas_in_sync
    gbatch = global_batch_size(cfg.batch_size, strategy)
    with strategy.scope():
        model = build_model()
        optimizer = (make_optimizer() if make_optimizer else
                     keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm))
        optimizer.build(model.trainable_variables)

    def step_fn(x, y):
        with tf.GradientTape() as tape:
            p = tf.reshape(model(x, training=True), [-1])
            p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
            per_review = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
            loss = tf.nn.compute_average_loss(per_review, global_batch_size=gbatch)
            correct = tf.reduce_sum(tf.cast(tf.equal(p >= 0.5, y >= 0.5), tf.float32))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, correct

    @tf.function
    def train_step(iterator):
        loss, correct = strategy.run(step_fn, args=next(iterator))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def infer(x):
        return tf.reshape(model(x, training=False), [-1])

    def predict_proba(ids: Sequence[Sequence[int]], batch: int = 256) -> np.ndarray:
        """Local inference on this worker's copy of the weights (no collective ops)."""
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.zeros(len(ids), dtype=np.float32)
        for start in range(0, len(order), batch):
            idx = order[start: start + batch]
            out[idx] = infer(pad_batch([ids[i] for i in idx])).numpy()
        return out

    def validate() -> tuple[np.ndarray, np.ndarray]:
        """``(P(positive), labels)`` of the validation split on this worker's weights."""
        if not isinstance(val, Shards):
            return predict_proba(x_val), y_val
        from pipeline.data.stream import make_dataset

        parts = [(infer(x).numpy(), y.numpy()) for x, y in
                 make_dataset(val.root, val.split, 256, shuffle_buffer=0)]
        return (np.concatenate([p for p, _ in parts]).astype(np.float32),
                np.concatenate([y for _, y in parts]).astype(np.float32))

    own_tmp = None
    if work_dir is None or not is_chief(strategy):
        own_tmp = tempfile.TemporaryDirectory(prefix="distribute-")
        work_dir = Path(own_tmp.name)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    best_path = work_dir / "best.weights.h5"
    # the optimizer's own rate (make_optimizer's, or cfg.learning_rate): assigned every epoch
    state = {"epoch": 0, "best_loss": None, "best_epoch": 0, "wait": 0,
             "lr": float(keras.backend.get_value(optimizer.learning_rate)),
             "history": [], "global_batch": gbatch, "replicas": replicas, "steps": 0}
    if streamed:
        if train.reviews < gbatch:
            raise ValueError(f"{train.reviews} training reviews are fewer than one global batch "
                             f"({gbatch}); lower train.batch_size")
    else:
        lengths = [len(r) for r in x_train]
    while state["epoch"] < cfg.max_epochs and state["wait"] < cfg.patience:
        if max_steps is not None and state["steps"] >= max_steps:
            break
        epoch = state["epoch"] + 1
        optimizer.learning_rate.assign(state["lr"])
        if streamed:
            steps = train.reviews // gbatch
            fn = shards_dataset_fn(train, gbatch, seed=cfg.seed * 1000 + epoch)
        else:
            schedule = global_batches(lengths, gbatch, np.random.default_rng([cfg.seed, epoch]),
                                      cfg.bucket_batches)
            steps = len(schedule)
            fn = _dataset_fn(x_train, y_train, schedule, gbatch)
        if max_steps is not None:
            steps = min(steps, max_steps - state["steps"])
        it = iter(strategy.distribute_datasets_from_function(fn))
        t0 = time.monotonic()
        loss_sum = correct_sum = 0.0
        for _ in range(steps):
            loss, correct = train_step(it)
            loss_sum += float(loss)
            correct_sum += float(correct)
        state["steps"] += steps
        p_val, y_val = validate()
        val_loss = bce(y_val, p_val)
        record = {"epoch": epoch, "loss": loss_sum / steps,
                  "accuracy": correct_sum / (steps * gbatch), "val_loss": val_loss,
                  "val_accuracy": float(np.mean((p_val >= 0.5) == (y_val >= 0.5))),
                  "lr": state["lr"], "steps": steps, "seconds": time.monotonic() - t0}
        state["history"].append(record)
        if state["best_loss"] is None or val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_epoch=epoch, wait=0)
            model.save_weights(str(best_path))
        else:
            state["wait"] += 1
            state["lr"] *= cfg.lr_decay_on_plateau
        state["epoch"] = epoch
        log.info("epoch %d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f | %d steps of %d "
                 "reviews (%d replicas) | %.0fs", epoch, record["loss"], record["accuracy"],
                 val_loss, record["val_accuracy"], steps, gbatch, replicas,
                 record["seconds"])
    if best_path.exists():
        model.load_weights(str(best_path))
    if own_tmp is not None:
        own_tmp.cleanup()
    return model, state


def train_distributed(
    data_dir: Path | None, tok_dir: Path | None, out_dir: Path | None, model_kind: str, model_cfg,
    cfg, strategy, work_dir: Path | None = None, max_steps: int | None = None,
    make_optimizer: Callable[[], object] | None = None,
    init_weights: Sequence[np.ndarray] | None = None, shards: Path | None = None,
) -> tuple[object, dict]:
    """Train the teacher or the student under ``strategy``; the chief writes a model directory.

    The directory has the layout of ``pipeline.nn.train.fit_and_save`` (``model.keras``, tokenizer,
    ``model.json``, ``history.json``), so ``pipeline.predict`` and the later stages read it as is.
    ``init_weights`` replaces the initial weights (tests compare runs from one starting point).
    Input: ``data_dir`` (``{train,val}.jsonl``) with ``tok_dir``, or ``shards``, a
    :mod:`pipeline.stream` folder (its TFRecords and its ``tokenizer/``), read from disk.
    """
    from pipeline.nn.models import build_student, build_teacher, save_model
    from pipeline.nn.train import labelled_ids, set_determinism, write_model_info
    from pipeline.text.tokenizer import Tokenizer

    set_determinism(cfg.seed)
    if shards is not None:
        splits = {name: Shards.open(shards, name) for name in ("train", "val")}
        tok = Tokenizer.load(Path(shards) / "tokenizer")
    else:
        tok = Tokenizer.load(tok_dir)
        splits = labelled_ids(data_dir, tok)
    builders = {"teacher": build_teacher, "student": build_student}
    if model_kind not in builders:
        raise ValueError(f"model must be 'teacher' or 'student', not {model_kind!r}")
    def build():
        model = builders[model_kind](tok.vocab_size, model_cfg)
        if init_weights is not None:
            model.set_weights(list(init_weights))
        return model

    model, state = fit_distributed(build, splits["train"], splits["val"], cfg, strategy, work_dir,
                                   max_steps, make_optimizer)
    if out_dir is not None and is_chief(strategy):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.save(out_dir)
        save_model(model, out_dir / "model.keras")
        write_model_info(out_dir, {"keras": "model.keras"}, kind=model_kind,
                         params=int(model.count_params()), files=["model.keras"])
        (out_dir / "history.json").write_text(json.dumps(state, indent=2))
    return model, state
