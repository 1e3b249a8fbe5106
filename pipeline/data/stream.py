"""Streaming data path: reviews -> sharded, tokenized TFRecords in bounded memory -> ``tf.data``.

    python -m pipeline.stream --data PATH --out DIR [--preset smoke|full] [--shards N]
                              [--repeat N] [--set section.field=value ...]

The in-memory path (``pipeline.data.load_splits``) holds every review string at once; this one
holds at most one spill bucket, the tokenizer's sample and a few open files, whatever the number of
reviews. Same readers (``pipeline.data.iter_reviews``: every format, the 3★ policy, malformed rows
counted and skipped), same review string, same md5 split rule, same exact-duplicate removal (the
first label seen wins), same normalization and tokenizer (``pipeline.text.tokenizer``). Not supported
here: ``data.max_reviews`` and ``data.balance`` (``pipeline.all``'s data stage does them, also streamed).

Stages, each a pass over files on disk:

1. **ingest**: stream the input once and append each review to one of ``spill_buckets`` spill files
   chosen by the md5 of its string (``work/spill-BBBB.jsonl``), so every copy of a duplicate lands in
   the same bucket.
2. **tokenizer**: read the buckets one at a time (dedup inside the bucket), keep a bounded sample of
   ``tokenizer_sample`` training reviews (the ones with the smallest seeded md5 key: the same sample
   whatever the file order) and train the SentencePiece BPE on it.
3. **tokenize**: read the buckets again, dedup, encode in batches and write each review to a shard
   of its split (shard = md5 key modulo ``shards``).

Layout of ``OUT`` (the documented format training reads)::

    OUT/tokenizer/tokenizer.model, tokenizer.json   the BPE, as pipeline.text.tokenizer writes it
    OUT/{train,val,test}/shard-SSSSS-of-NNNNN.tfrecord
        uncompressed TFRecord files of tf.train.Example records with two features:
        "ids"   int64 list: token ids, truncated to tokenizer.seq_len, unpadded (0 = padding, never
                stored; 1 = <unk>)
        "label" int64: 1 positive, 0 negative
        "text"  bytes: the review string (UTF-8) the split rule hashed, for the peers
                (:func:`text_chunks`; shards written before it have no text)
    OUT/stats.json    counts (rows, used, malformed, 3★ dropped, duplicates, per split and shard),
                      config, seconds per pass and the process's peak RSS

:func:`make_dataset` reads a split back with ``tf.data``: shard files interleaved, a shuffle buffer,
batches padded to their longest review (optionally length-bucketed), prefetch; its ``(ids, label)``
batches feed ``model.fit`` / ``train_on_batch`` or ``strategy.distribute_datasets_from_function``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import data
from pipeline.config import StreamConfig
from pipeline.data.splits import Spill, bounded_sample
from pipeline.progress import Progress

log = logging.getLogger(__name__)

SPLITS = data.SPLITS


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _md5(s: str) -> str:
    return hashlib.md5(s.encode("utf-8")).hexdigest()


def iter_input(paths: Sequence[Path], cfg: StreamConfig,
               stats: list[data.FileStats]) -> Iterator[tuple[str, int]]:
    """``(s, label)`` from the input files as a stream; copies after the first are marked."""
    for k in range(cfg.repeat):
        for path in paths:
            for s, y in data.iter_reviews(path, cfg.three_star, stats):
                yield (s if k == 0 else f"{s} [copy {k}]"), y


def spill_by_md5(work: Path, buckets: int) -> Spill:
    """Pass 1's spill: bucket ``int(md5(s)[:8], 16) % buckets``."""
    return Spill(work, buckets, lambda s: int(_md5(s)[:8], 16) % buckets)


def iter_unique(spill: Spill, counts: dict | None = None) -> Iterator[tuple[str, int, str]]:
    """``(s, label, split)`` of every distinct review, one bucket in memory at a time
    (:meth:`Spill.buckets_unique`: a duplicate keeps the first label seen, as the data stage
    does; ``counts`` gets ``duplicates`` and ``duplicate_label_conflicts``)."""
    for labels in spill.buckets_unique(counts):
        for s, y in labels.items():
            yield s, y, data.split_of(s)


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.tfrecord"


def _example(ids: Sequence[int], label: int, text: str) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=list(ids))),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")])),
    })).SerializeToString()


def write_shards(rows: Iterable[tuple[str, int, str]], tok, out: Path, cfg: StreamConfig) -> dict:
    """Pass 3: tokenize (in batches) and write each review to a shard of its split."""
    import tensorflow as tf

    writers = {}
    counts = {s: {"n": 0, "positives": 0, "shards": [0] * cfg.shards} for s in SPLITS}
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in range(cfg.shards):
            writers[split, i] = tf.io.TFRecordWriter(str(out / split / shard_name(i, cfg.shards)))

    def flush(batch: list[tuple[str, int, str]]) -> None:
        for (s, y, split), ids in zip(batch, tok.ids([r[0] for r in batch]), strict=True):
            i = int(_md5(s)[8:16], 16) % cfg.shards
            writers[split, i].write(_example(ids, y, s))
            c = counts[split]
            c["n"] += 1
            c["positives"] += y
            c["shards"][i] += 1

    progress = Progress(None, "tokenize", "reviews")
    try:
        batch: list[tuple[str, int, str]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= cfg.encode_batch:
                flush(batch)
                progress.update(len(batch))
                batch = []
        if batch:
            flush(batch)
            progress.update(len(batch))
    finally:
        progress.close()
        for w in writers.values():
            w.close()
    return counts


def splits_to_shards(data_dir: Path, tok, out: Path, shards: int = StreamConfig.shards) -> Path:
    """``out``, a stream folder (the layout above) of a data stage's JSON-lines splits tokenized by
    ``tok``: what ``pipeline.all``'s training stages under a ``tf.distribute`` strategy read with
    ``data.stream`` (each worker its own shard files). Written to ``out.tmp`` and renamed, so a
    finished folder is reused as it is."""
    out = Path(out)
    if (out / "stats.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = [(split, Path(data_dir) / f"{split}.jsonl") for split in SPLITS]
    rows = ((text, int(y), split) for split, f in files if f.exists() for text, y in data.iter_jsonl(f))
    counts = write_shards(rows, tok, tmp, StreamConfig(shards=shards))
    tok.save(tmp / "tokenizer")
    stats = {"splits": counts, "tokenizer": {"seq_len": tok.cfg.seq_len}, "source": str(data_dir)}
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def build_stream(paths: str | Path | Sequence[str | Path], out: Path, cfg: StreamConfig,
                 tok_cfg) -> dict:
    """Run the three passes into ``out`` (see the module docstring); returns ``stats.json``."""
    from pipeline.text.tokenizer import train_tokenizer

    paths = [Path(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    out = Path(out)
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    seconds: dict[str, float] = {}
    file_stats: list[data.FileStats] = []

    t0 = time.monotonic()
    spill = spill_by_md5(work, cfg.spill_buckets)
    rows = spill.write(iter_input(paths, cfg, file_stats))
    seconds["ingest"] = time.monotonic() - t0
    log.info("ingest: %d reviews into %d spill buckets (%.0fs, peak RSS %.0f MiB)", rows,
             cfg.spill_buckets, seconds["ingest"], peak_rss_mb())

    t0 = time.monotonic()
    dedup: dict = {}
    sample = bounded_sample((s for s, _, split in iter_unique(spill, dedup)
                             if split == "train"), cfg.tokenizer_sample, cfg.seed)
    if not sample:
        raise data.EmptyDatasetError(f"{', '.join(map(str, paths))}: no training review "
                                     "(every review fell into val/test)")
    tok = train_tokenizer(sample, tok_cfg)
    tok.save(out / "tokenizer")
    del sample
    seconds["tokenizer"] = time.monotonic() - t0
    log.info("tokenizer: vocab %d trained on a bounded sample (%.0fs, peak RSS %.0f MiB)",
             tok.vocab_size, seconds["tokenizer"], peak_rss_mb())

    t0 = time.monotonic()
    splits = write_shards(iter_unique(spill), tok, out, cfg)
    seconds["tokenize"] = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    unique = sum(c["n"] for c in splits.values())
    stats = {
        "inputs": [str(p) for p in paths],
        "files": [asdict(fs) for fs in file_stats],
        "totals": {
            "rows": sum(fs.rows for fs in file_stats),
            "used": rows,
            "malformed": sum(fs.malformed for fs in file_stats),
            "neutral_dropped": sum(fs.dropped_neutral for fs in file_stats),
            **dedup,
            "unique": unique,
            "tokenizer_sample": min(cfg.tokenizer_sample, splits["train"]["n"]),
        },
        "splits": splits,
        "config": asdict(cfg),
        "tokenizer": asdict(tok_cfg),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("stream: %d unique reviews (train %d, val %d, test %d) in %d shards per split; "
             "peak RSS %.0f MiB", unique, *(splits[s]["n"] for s in SPLITS), cfg.shards,
             stats["peak_rss_mb"])
    return stats


def shard_files(root: Path, split: str, pipeline: tuple[int, int] | None = None) -> list[str]:
    """The shard files of ``split`` (sorted), or input pipeline ``i`` of ``n``'s share: every
    ``n``-th file from the ``i``-th (sharding by file: each worker reads its own files)."""
    import tensorflow as tf

    pattern = str(Path(root) / split / "shard-*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))  # local or any file system TensorFlow reads
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern}")
    if pipeline is not None:
        i, n = pipeline
        if len(files) < n:
            raise ValueError(f"{len(files)} {split} shards in {root} for {n} input pipelines: every "
                             f"worker needs a file of its own; rebuild with --shards {n} or more")
        files = files[i::n]
    return files


def _records(root: Path, split: str, shuffle_buffer: int, seed: int, cycle_length: int = 4,
             pipeline: tuple[int, int] | None = None):
    """Serialized records of ``split``'s shard files (input pipeline ``i`` of ``n``'s share), files
    interleaved ``cycle_length`` at a time. With a ``shuffle_buffer``, the file order and a buffer
    of that many records are shuffled by ``seed`` (again at each iteration); without, the files'
    order."""
    import tensorflow as tf

    files = shard_files(root, split, pipeline)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds


def make_dataset(root: Path, split: str, batch_size: int, shuffle_buffer: int = 10_000,
                 seed: int = 13, cycle_length: int = 4, repeat: bool = False,
                 bucket_boundaries: Sequence[int] | None = None, drop_remainder: bool = False,
                 pipeline: tuple[int, int] | None = None):
    """``tf.data`` pipeline over ``root/split/*.tfrecord`` yielding ``(ids [B, T] int32, label [B])``.

    Shard files are listed in a seeded shuffled order and interleaved ``cycle_length`` at a time,
    records go through a ``shuffle_buffer`` (0: no shuffling; order then follows the files), batches
    are padded to their longest review (or grouped by length when ``bucket_boundaries`` is given)
    and prefetched. ``repeat=True`` cycles forever (use ``steps_per_epoch``). ``pipeline=(i, n)``
    reads input pipeline ``i`` of ``n``'s files only (:func:`shard_files`).
    """
    import tensorflow as tf

    ds = _records(root, split, shuffle_buffer, seed, cycle_length, pipeline)
    if repeat:
        ds = ds.repeat()
    spec = {"ids": tf.io.RaggedFeature(tf.int64), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return tf.cast(ex["ids"], tf.int32), tf.cast(ex["label"], tf.float32)

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if bucket_boundaries:
        ds = ds.bucket_by_sequence_length(
            lambda ids, y: tf.shape(ids)[0], list(bucket_boundaries),
            [batch_size] * (len(bucket_boundaries) + 1), drop_remainder=drop_remainder)
    else:
        ds = ds.padded_batch(batch_size, padded_shapes=([None], []), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def text_chunks(root: Path, split: str, chunk: int, seed: int | None = None,
                epoch: int = 0) -> Iterator[tuple[list[str], Any]]:
    """``(texts, labels)`` of ``split`` in chunks of ``chunk`` reviews, read from the shards.

    With a ``seed`` and ``epoch > 0`` the file order and a 10,000-review buffer are shuffled by
    ``(seed, epoch)``; otherwise the order is the files'. Needs shards with the ``text`` feature.
    """
    import numpy as np
    import tensorflow as tf

    shuffle = seed is not None and epoch > 0
    ds = _records(root, split, 10_000 if shuffle else 0, seed * 1000 + epoch if shuffle else 0)
    spec = {"text": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    ds = ds.batch(chunk).map(lambda r: tf.io.parse_example(r, spec))
    try:
        for part in ds.as_numpy_iterator():
            yield [t.decode("utf-8") for t in part["text"]], part["label"].astype(np.int64)
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(f"{root}/{split}: shards without the review text ({e.message.splitlines()[0]}); "
                         "rebuild them with python -m pipeline.stream") from None


def split_predictions(root: Path, split: str, chunk: int,
                      predict: Callable[[list[str]], Any]) -> tuple[Any, Any]:
    """``(P(positive), labels)`` of ``predict`` over ``split``'s texts, one chunk at a time."""
    import numpy as np

    parts = [(np.asarray(predict(texts), np.float64).reshape(-1), y)
             for texts, y in text_chunks(root, split, chunk)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


@dataclass(frozen=True)
class Shards:
    """One split of a stream folder's TFRecord shards: input read from disk."""

    root: Path
    split: str
    reviews: int
    seq_len: int

    @classmethod
    def open(cls, root: Path, split: str) -> Shards:
        """The split ``split`` of the stream folder ``root`` (its ``stats.json`` has the counts)."""
        try:
            stats = json.loads((Path(root) / "stats.json").read_text())
            return cls(Path(root), split, int(stats["splits"][split]["n"]),
                       int(stats["tokenizer"]["seq_len"]))
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{root}: not a pipeline.stream folder ({e}); build one with "
                             "python -m pipeline.stream --data PATH --out DIR") from None
