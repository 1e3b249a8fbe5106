"""A training split's token ids as sharded TFRecords, read back with ``tf.data``.

:class:`IdRecords` is what the training stages keep in their work folder with ``data.stream``
(instead of a :class:`pipeline.text.ragged.RaggedFile`): ``FOLDER/shard-SSSSS-of-NNNNN.tfrecord``,
``tf.train.Example`` records with

- ``ids`` (int64 list): the row's token ids, unpadded;
- ``label`` (float): the label or soft label;
- ``index`` (int64): the row's position in the split, which is how a distillation step finds the
  teacher's targets of that row (``pipeline.compress.distill.kd_step``);

row ``i`` in shard ``i % shards``, and ``meta.json`` (rows, shards). :meth:`IdRecords.batches` is
an epoch as a ``tf.data`` pipeline: shard files interleaved, records shuffled through a buffer
seeded by the epoch, parsed, grouped by length into batches (buckets 16 tokens wide, so a batch is
padded to a multiple of 16 as ``pipeline.nn.train.pad_batch`` pads) and prefetched. Memory holds
the shuffle buffer, never the split.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

META = "meta.json"
log = logging.getLogger(__name__)

SHARDS = 8
BUCKET_WIDTH = 16
SHUFFLE_BUFFER = 65_536  # records (serialized: about 2 bytes an id), whatever the split's size


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
              shards: int = SHARDS) -> IdRecords:
        """Write ``(id rows, labels)`` parts in order; a half-written folder never takes the name."""
        import tensorflow as tf

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        writers = [tf.io.TFRecordWriter(str(tmp / shard_name(i, shards))) for i in range(shards)]
        n = longest = 0
        try:
            for ids, labels in parts:
                for row, y in zip(ids, labels, strict=True):
                    writers[n % shards].write(_example(row, y, n))
                    n += 1
                    longest = max(longest, len(row))
        finally:
            for w in writers:
                w.close()
        (tmp / META).write_text(json.dumps({"rows": n, "shards": shards, "longest": longest}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
        log.info("%d rows in %d TFRecord shards (%s)", n, shards, folder)
        return cls(folder)

    def batches(self, batch_size: int, seed: int, shuffle_buffer: int = SHUFFLE_BUFFER):
        """One epoch of ``(ids [B, T] int32, labels [B] float32, index [B] int64)`` batches.

        Deterministic for a ``seed``: the shard order, the ``shuffle_buffer`` of records and the
        order of the finished batches all follow it. Each batch holds rows of one length bucket
        (``BUCKET_WIDTH`` tokens wide) padded with 0 to the bucket's upper edge.
        """
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        s1, s2, s3 = (int(v) for v in rng.integers(2**31 - 1, size=3))
        files = tf.data.Dataset.from_tensor_slices(self.files).shuffle(len(self.files), seed=s1)
        ds = files.interleave(tf.data.TFRecordDataset, cycle_length=len(self.files), block_length=1,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=s2)
        ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        edges = list(range(BUCKET_WIDTH + 1, self.longest + 1, BUCKET_WIDTH))
        ds = ds.bucket_by_sequence_length(
            lambda ids, y, i: tf.shape(ids)[0], edges, [batch_size] * (len(edges) + 1),
            padded_shapes=([None], [], []), pad_to_bucket_boundary=False)
        ds = ds.shuffle(64, seed=s3).map(_pad_to_width, deterministic=True)
        return ds.prefetch(2)

    def head(self, n: int) -> list[np.ndarray]:
        """The first ``n`` rows' ids, in order (row ``i`` is record ``i // shards`` of shard
        ``i % shards``: each shard's first ``ceil(n / shards)`` records)."""
        import tensorflow as tf

        n = min(n, self.rows)
        per = math.ceil(n / self.shards)
        rows: dict[int, np.ndarray] = {}
        for f in self.files:
            for ids, _, i in tf.data.TFRecordDataset(f).take(per).map(_parse).as_numpy_iterator():
                rows[int(i)] = ids
        return [rows[i] for i in range(n)]


def _example(row: Sequence[int], label: float, index: int) -> bytes:
    import tensorflow as tf

    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "ids": feature(int64_list=tf.train.Int64List(value=np.asarray(row, np.int64).tolist())),
        "label": feature(float_list=tf.train.FloatList(value=[float(label)])),
        "index": feature(int64_list=tf.train.Int64List(value=[index])),
    })).SerializeToString()


def _parse(record):
    """A serialized record -> ``(ids int32, label float32, index int64)``."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(record, {
        "ids": tf.io.RaggedFeature(tf.int64), "label": tf.io.FixedLenFeature([], tf.float32),
        "index": tf.io.FixedLenFeature([], tf.int64)})
    return tf.cast(ex["ids"], tf.int32), ex["label"], ex["index"]


def _pad_to_width(ids, y, index):
    """Right-pad a batch's ids with 0 to a multiple of ``BUCKET_WIDTH`` (``pad_batch``'s widths)."""
    import tensorflow as tf

    width = tf.shape(ids)[1]
    target = tf.maximum(1, (width + BUCKET_WIDTH - 1) // BUCKET_WIDTH) * BUCKET_WIDTH
    return tf.pad(ids, [[0, 0], [0, target - width]]), y, index
