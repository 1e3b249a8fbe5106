"""A training split's token ids as sharded TFRecords, read back with ``tf.data``.

:class:`IdRecords` is what the training stages keep in their work folder with ``data.stream``
(instead of a :class:`pipeline.text.ragged.RaggedFile`): ``FOLDER/shard-SSSSS-of-NNNNN.tfrecord``,
``tf.train.Example`` records with

- ``ids`` (int64 list): the row's token ids, unpadded;
- ``label`` (float): the label or soft label;
- ``index`` (int64): the row's position in the split, which is how a distillation step finds the
  teacher's targets of that row (``pipeline.compress.distill.kd_step``);

and ``meta.json`` (rows, shards, longest row). The distillation targets are such a folder too
(``pipeline.compress.distill.teacher_targets`` with ``records``: the student's ids of every review
and crop with the teacher's soft label), which the distillation and pruning stages read as is.

The rows are written in a seeded random order (each goes to one of ``SPILL`` spill files, each spill
file is shuffled in memory and appended to a shard): a split whose rows come in blocks (the
distillation set: the reviews, then each round of crops) is mixed on disk, so the reader's bounded
shuffle buffer sees every kind of row throughout an epoch. :meth:`IdRecords.chunks` reads them with
``tf.data`` (shard files interleaved, records shuffled through a buffer seeded by the epoch, parsed
a chunk at a time, prefetched); ``pipeline.nn.train.epoch_batches`` sorts each chunk by length and
cuts it into padded batches. Memory holds the shuffle buffer or one spill file, never the split.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

META = "meta.json"
log = logging.getLogger(__name__)

SHARDS = 8
SHUFFLE_BUFFER = 65_536  # records (serialized: about 2 bytes an id), whatever the split's size
SPILL = 256  # spill files of the write-time shuffle: memory holds 1/SPILL of the split


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.tfrecord"


class IdRecords:
    """Id rows with labels and their row index in TFRecord shards (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            meta = json.loads((self.folder / META).read_text())
            self.rows, self.shards = int(meta["rows"]), int(meta["shards"])
            self.longest = int(meta["longest"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{self.folder}: not an id-records folder ({e})") from None
        self.files = [str(self.folder / shard_name(i, self.shards)) for i in range(self.shards)]

    def __len__(self) -> int:
        return self.rows

    @classmethod
    def write(cls, parts: Iterable[tuple[Sequence[Sequence[int]], Sequence[float]]], folder: Path,
              shards: int = SHARDS, seed: int = 0) -> IdRecords:
        """Write ``(id rows, labels)`` parts (row indices in their order) in a random order seeded
        by ``seed``; a half-written folder never takes the name."""
        import tensorflow as tf

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "spill").mkdir(parents=True)
        rng = np.random.default_rng([seed, 11])
        spills = [tmp / "spill" / f"{k:03d}" for k in range(SPILL)]
        files = [open(f, "wb") for f in spills]  # noqa: SIM115 (closed below)
        n = longest = 0
        try:
            for ids, labels in parts:  # pass 1: each record, length-prefixed, to a random spill file
                where = rng.integers(SPILL, size=len(labels))
                for row, y, k in zip(ids, labels, where, strict=True):
                    record = _example(row, y, n)
                    files[k].write(struct.pack("<I", len(record)) + record)
                    n += 1
                    longest = max(longest, len(row))
        finally:
            for f in files:
                f.close()
        outs = [tf.io.TFRecordWriter(str(tmp / shard_name(i, shards))) for i in range(shards)]
        try:
            for k, f in enumerate(spills):  # pass 2: a spill file in memory, shuffled, to a shard
                records = _framed(f.read_bytes())
                for j in rng.permutation(len(records)):
                    outs[k % shards].write(records[j])
                f.unlink()
        finally:
            for w in outs:
                w.close()
        (tmp / "spill").rmdir()
        (tmp / META).write_text(json.dumps({"rows": n, "shards": shards, "longest": longest}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
        log.info("%d rows in %d TFRecord shards (%s)", n, shards, folder)
        return cls(folder)

    def chunks(self, chunk: int, seed: int | None, shuffle_buffer: int = SHUFFLE_BUFFER):
        """``(flat ids, row splits, labels, indices)`` of ``chunk`` records at a time, parsed by
        ``tf.io.parse_example`` (a batch at a time: many times faster than record by record) and
        prefetched. With a ``seed``: shard order and a ``shuffle_buffer`` of records shuffled."""
        import tensorflow as tf

        spec = {"ids": tf.io.RaggedFeature(tf.int64), "label": tf.io.FixedLenFeature([], tf.float32),
                "index": tf.io.FixedLenFeature([], tf.int64)}

        def parse(batch):
            ex = tf.io.parse_example(batch, spec)
            ids = tf.cast(ex["ids"], tf.int32)
            return ids.flat_values, ids.row_splits, ex["label"], ex["index"]

        files = tf.data.Dataset.from_tensor_slices(self.files)
        if seed is not None:
            s1, s2 = (int(v) for v in np.random.default_rng(seed).integers(2**31 - 1, size=2))
            files = files.shuffle(len(self.files), seed=s1)
        ds = files.interleave(tf.data.TFRecordDataset, cycle_length=len(self.files), block_length=1,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if seed is not None and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=s2)
        return ds.batch(chunk).map(parse).prefetch(2).as_numpy_iterator()

    def labels(self) -> np.ndarray:
        """Every row's label (float32), in index order (one pass over the shards)."""
        out = np.zeros(self.rows, np.float32)
        for _, _, labels, index in self.chunks(8192, None, 0):
            out[index] = labels
        return out

    def head(self, n: int) -> list[np.ndarray]:
        """The first ``n`` rows' ids, in order (one pass over the shards)."""
        n = min(n, self.rows)
        rows: dict[int, np.ndarray] = {}
        for flat, splits, _, index in self.chunks(4096, None, 0):
            for k in np.flatnonzero(index < n):
                rows[int(index[k])] = flat[splits[k]: splits[k + 1]]
        return [rows[i] for i in range(n)]


def _framed(data: bytes) -> list[bytes]:
    """The records of a spill file: each a little-endian uint32 length, then its bytes."""
    out, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        out.append(data[at + 4: at + 4 + size])
        at += 4 + size
    return out


def _example(row: Sequence[int], label: float, index: int) -> bytes:
    import tensorflow as tf

    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "ids": feature(int64_list=tf.train.Int64List(value=np.asarray(row, np.int64).tolist())),
        "label": feature(float_list=tf.train.FloatList(value=[float(label)])),
        "index": feature(int64_list=tf.train.Int64List(value=[index])),
    })).SerializeToString()
