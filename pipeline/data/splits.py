"""Deterministic train / validation / test splits of the reviews, and their JSON-lines files.

The split of a review string ``s`` is its md5 bucket: ``int(md5(s)[:8], 16) % 10`` is 0 for test, 1
for validation, the rest train. Duplicates are removed, an optional cap keeps the reviews with the
smallest seeded md5 key, and optional balancing down-samples the majority class per split.

The data stage streams: reviews go to spill files partitioned by their order key, and memory holds
one spill bucket of review strings plus a few dozen bytes of keys per review, whatever the input
size (:func:`iter_splits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.readers import (
    READ_ERRORS,
    DataError,
    FileStats,
    iter_records,
    open_text,
    read_error,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_SPLIT_REVIEWS = 10  # the data stage stops when a split holds fewer reviews


SPILL_BUCKETS = 256  # the data stage holds one bucket of review strings at a time


def split_of(s: str) -> str:
    """Split of review string ``s``: md5 bucket 0 -> "test", 1 -> "val", else "train"."""
    b = int(hashlib.md5(s.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if b == 0 else "val" if b == 1 else "train"


def _key(tag: str, s: str) -> str:
    return hashlib.md5(f"{tag}{s}".encode()).hexdigest()


def _as_paths(path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    return [Path(p) for p in path]


class Spill:
    """Reviews spilled to ``buckets`` files of ``work``, bucket ``bucket_of(s)`` for review
    ``s``, so every copy of a duplicate shares a bucket; input order is kept within a bucket
    (the first label seen wins). :meth:`by_order_key`: the buckets read in turn, each sorted,
    are the reviews in the data stage's order."""

    def __init__(self, work: Path, buckets: int, bucket_of: Callable[[str], int]) -> None:
        self.work, self.buckets, self.bucket_of = Path(work), buckets, bucket_of

    @classmethod
    def by_order_key(cls, work: Path, buckets: int, seed: int) -> Spill:
        """Partitioned by the order key ``_key(f"{seed}:order:", s)``: bucket ``b`` holds a range
        of keys below bucket ``b + 1``'s."""
        tag = f"{seed}:order:"
        return cls(work, buckets, lambda s: (int(_key(tag, s)[:8], 16) * buckets) >> 32)

    def _path(self, b: int) -> Path:
        return self.work / f"spill-{b:04d}.jsonl"

    def write(self, rows: Iterable[tuple[str, int]]) -> int:
        """Spill ``rows``; returns their number."""
        self.work.mkdir(parents=True, exist_ok=True)
        n = 0
        files = [open(self._path(b), "w", encoding="utf-8", newline="\n")
                 for b in range(self.buckets)]
        try:
            for s, y in rows:
                files[self.bucket_of(s)].write(json.dumps([s, y], ensure_ascii=False) + "\n")
                n += 1
        finally:
            for f in files:
                f.close()
        return n

    def buckets_unique(self, counts: dict | None = None) -> Iterator[dict[str, int]]:
        """Each bucket's distinct reviews ``{s: label}`` (first label seen), in bucket order;
        ``counts`` gets ``duplicates`` and ``duplicate_label_conflicts``."""
        dup = conflicts = 0
        for b in range(self.buckets):
            labels: dict[str, int] = {}
            with open(self._path(b), encoding="utf-8", newline="\n") as f:
                for line in f:
                    s, y = json.loads(line)
                    old = labels.get(s)
                    if old is None:
                        labels[s] = y
                    else:
                        dup += 1
                        conflicts += old != y
            yield labels
        if counts is not None:
            counts.update(duplicates=dup, duplicate_label_conflicts=conflicts)


def _digest(tag: str, s: str) -> bytes:
    return hashlib.md5(f"{tag}{s}".encode()).digest()  # byte order = hex order of _key


def _kth(keys: np.ndarray, k: int) -> bytes | None:
    """The ``k``-th smallest of the ``S16`` ``keys`` (1-based); None when ``k`` is 0."""
    if k <= 0:
        return None
    key = np.partition(keys, k - 1)[k - 1] if k < len(keys) else keys.max()
    return bytes(key).ljust(16, b"\0")  # numpy drops trailing NUL bytes


class _Selection:
    """Which distinct reviews the cap and the balancing keep, decided from their md5 keys alone
    (at most 34 bytes a review in arrays: the review strings stay in the spill)."""

    def __init__(self, buckets: Iterable[dict[str, int]], cfg: DataConfig, rows: int) -> None:
        """``buckets``: :meth:`Spill.buckets_unique`; ``rows``: the spilled rows (a bound on
        the distinct ones, so the arrays are allocated once)."""
        self.seed = cfg.seed
        label, split = np.empty(rows, np.uint8), np.empty(rows, np.uint8)
        # the keys only where a rule needs them
        cap = np.empty(rows if cfg.max_reviews is not None else 0, "S16")
        bal = np.empty(rows if cfg.balance else 0, "S16")
        n = 0
        for labels in buckets:
            m = n + len(labels)
            label[n:m] = list(labels.values())
            split[n:m] = [SPLITS.index(split_of(s)) for s in labels]
            if len(cap):
                cap[n:m] = [_digest(f"{cfg.seed}:", s) for s in labels]
            if len(bal):
                bal[n:m] = [_digest(f"{cfg.seed}:bal:", s) for s in labels]
            n = m
        label, split, cap, bal = label[:n], split[:n], cap[:n], bal[:n]
        self.unique = n
        self.cap = None
        if cfg.max_reviews is not None and self.unique > cfg.max_reviews:
            self.cap = _kth(cap, cfg.max_reviews)
        kept = np.ones(self.unique, bool) if self.cap is None else cap <= np.bytes_(self.cap)
        self.capped = self.unique - int(kept.sum())
        self.positives = int(label[kept].sum())
        self.before: dict[str, int] = {}
        self.counts: dict[str, tuple[int, int]] = {}  # split -> (positives, negatives) kept
        # split -> (majority label, its largest kept balance key; None: keep none of it)
        self.balance: dict[str, tuple[int, bytes | None]] = {}
        for i, k in enumerate(SPLITS):
            here = kept & (split == i)
            pos, neg = int((here & (label == 1)).sum()), int((here & (label == 0)).sum())
            self.before[k] = pos + neg
            if cfg.balance:
                minority, major = (pos, 0) if pos <= neg else (neg, 1)
                self.balance[k] = (major, _kth(bal[here & (label == major)], minority))
                pos = neg = minority
            self.counts[k] = (pos, neg)

    def keeps(self, s: str, y: int, split: str) -> bool:
        if self.cap is not None and _digest(f"{self.seed}:", s) > self.cap:
            return False
        if split in self.balance:
            major, limit = self.balance[split]
            return y != major or (limit is not None and _digest(f"{self.seed}:bal:", s) <= limit)
        return True


def iter_splits(
    path: str | Path | Sequence[str | Path], cfg: DataConfig, work: Path,
    buckets: int = SPILL_BUCKETS,
) -> tuple[dict, Callable[[], Iterator[tuple[str, str, int]]]]:
    """Read, dedup, cap, split, balance and order reviews through spill files in ``work``.

    Returns ``(stats, rows)``: ``rows()`` yields ``(split, s, label)`` of the kept reviews, each
    split in its order (the smallest ``_key(f"{seed}:order:", s)`` first), splits interleaved.
    Memory holds one spill bucket of strings plus a few dozen bytes per review. Output depends
    only on the set of reviews and ``cfg``, not on file or row order (except which label a
    duplicate keeps) nor on ``buckets``.
    """
    paths = _as_paths(path)
    file_stats: list[FileStats] = []
    spill = Spill.by_order_key(work, buckets, cfg.seed)
    rows_in = spill.write((r.text, int(r.label))  # type: ignore[arg-type]  # labelled input only
                          for r in iter_records(paths, cfg.three_star, file_stats))
    dup: dict[str, int] = {}
    sel = _Selection(spill.buckets_unique(dup), cfg, rows_in)

    def rows() -> Iterator[tuple[str, str, int]]:
        for labels in spill.buckets_unique():
            tag = f"{cfg.seed}:order:"
            for s in sorted(labels, key=lambda s: _key(tag, s)):
                y = labels[s]
                split = split_of(s)
                if sel.keeps(s, y, split):
                    yield split, s, y

    split_stats: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        pos, neg = sel.counts[name]
        if cfg.balance and sel.before[name] and not pos + neg:
            log.warning("split %s: only one class present, balancing left it empty", name)
        split_stats[name] = {"n": pos + neg, "positives": pos, "negatives": neg,
                             "before_balance": sel.before[name]}
    kept = sel.unique - sel.capped
    stats = {
        "inputs": [str(p) for p in paths],
        "files": [asdict(fs) for fs in file_stats],
        "totals": {
            "rows": sum(fs.rows for fs in file_stats),
            "used": sum(fs.used for fs in file_stats),
            "malformed": sum(fs.malformed for fs in file_stats),
            "neutral_dropped": sum(fs.dropped_neutral for fs in file_stats),
            **dup,
            "unique": sel.unique,
            "capped": sel.capped,
            "positives": sel.positives,
            "negatives": kept - sel.positives,
        },
        "splits": split_stats,
        "config": cfg.split_key(),  # what the splits depend on (not data.stream)
    }
    log.info("dataset: unique=%d duplicates=%d capped=%d train=%d val=%d test=%d", sel.unique,
             dup["duplicates"], sel.capped, *(split_stats[k]["n"] for k in SPLITS))
    return stats, rows


def load_splits(
    path: str | Path | Sequence[str | Path], cfg: DataConfig
) -> tuple[dict[str, list[tuple[str, int]]], dict]:
    """:func:`iter_splits` collected in memory: ``({split: [(s, label), ...]}, stats)``."""
    with tempfile.TemporaryDirectory(prefix="tinysent-spill-") as work:
        stats, rows = iter_splits(path, cfg, Path(work))
        splits: dict[str, list[tuple[str, int]]] = {k: [] for k in SPLITS}
        for split, s, y in rows():
            splits[split].append((s, y))
    return splits, stats


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[TextIO]:
    """A text file written to a temp file in ``path``'s folder, moved to ``path`` (``os.replace``)
    when the block ends without an exception, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:  # umask permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    with _atomic_file(path) as f:
        f.writelines(lines)


def write_jsonl(path: Path, rows: Iterable[tuple[str, int | None]]) -> None:
    """Write ``{"text": s, "label": y}`` lines atomically (temp file, then ``os.replace``); a label
    None is written as null (unlabeled text)."""
    _atomic_write(
        path, (json.dumps({"text": s, "label": y}, ensure_ascii=False) + "\n" for s, y in rows)
    )


def iter_jsonl(path: Path) -> Iterator[tuple[str, int | None]]:
    """``(text, label)`` of ``{"text", "label"}`` lines (as written by :func:`write_jsonl`), one
    line at a time; no label -> None."""
    path = Path(path)
    done = 0
    try:
        with open_text(path, newline="\n") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, strict=False)
                except ValueError as e:
                    raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from e
                text = row.get("text") if isinstance(row, dict) else None
                label = row.get("label") if isinstance(row, dict) else None
                if not isinstance(text, str) or (
                    label is not None and (isinstance(label, bool) or label not in (0, 1))
                ):
                    raise DataError(
                        f'{path}:{n}: expected {{"text": str, "label": 0 or 1 (optional)}}'
                    )
                yield text, None if label is None else int(label)
                done += 1
    except READ_ERRORS as e:
        raise read_error(path, e, done) from e


def read_jsonl(path: Path) -> list[tuple[str, int | None]]:
    """:func:`iter_jsonl` as a list."""
    return list(iter_jsonl(path))


def bounded_sample(texts: Iterable[str], k: int, seed: int) -> list[str]:
    """The ``k`` texts with the smallest ``md5(f"{seed}:tok:{s}")``: order-independent, O(k) memory."""
    heap: list[tuple[int, str]] = []  # max-heap via negated keys
    for s in texts:
        key = -int(hashlib.md5(f"{seed}:tok:{s}".encode()).hexdigest()[:16], 16)
        if len(heap) < k:
            heapq.heappush(heap, (key, s))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, s))
    return [s for _, s in sorted(heap, reverse=True)]


def check_splits(stats: dict, min_split: int = MIN_SPLIT_REVIEWS) -> None:
    """Raise :class:`DataError` saying what to do when the reviews in ``stats`` (from
    :func:`load_splits`) cannot train and evaluate a model: one class only, or a split with fewer
    than ``min_split`` reviews or a training split without both classes (``min_split=0``: only
    the class check)."""
    where = ", ".join(stats["inputs"])
    t, sp = stats["totals"], stats["splits"]
    for name, other, add in (("positive", "negative", "negative reviews (1-2★, label 0)"),
                             ("negative", "positive", "positive reviews (4-5★, label 1)")):
        if t[f"{other}s"] == 0:
            three = ""
            if t["neutral_dropped"]:
                three = (f", or count the {t['neutral_dropped']} 3★ reviews as {other}: "
                         f"`--set data.three_star={other}`")
            raise DataError(
                f"{where}: every usable review is {name} ({t[f'{name}s']} {name}, 0 {other}); a "
                f"sentiment model needs both classes. Add {add} to the input{three}."
            )
    if min_split <= 0:
        return
    small = [k for k in SPLITS if sp[k]["n"] < min_split]
    if small or not (sp["train"]["positives"] and sp["train"]["negatives"]):
        counts = ", ".join(f"{k} {sp[k]['n']}" for k in SPLITS)
        bal = " after balancing" if stats["config"].get("balance") else ""
        raise DataError(
            f"{where}: too few reviews to train and evaluate a model: {counts}{bal} "
            f"({t['unique']} unique reviews; the md5 split rule puts about 10% in validation and "
            f"10% in test). Each split needs at least {min_split} reviews and the training split "
            f"both classes: give it at least {20 * min_split} reviews (thousands for a useful "
            "model)."
        )


def build_dataset(path: str | Path | Sequence[str | Path], out_dir: Path, cfg: DataConfig,
                  min_split: int = MIN_SPLIT_REVIEWS, work_dir: Path | None = None) -> dict:
    """Write ``out_dir/{train,val,test}.jsonl`` and ``out_dir/stats.json``; return the stats.

    Streams (:func:`iter_splits`; spill files in ``work_dir``, default ``.OUT_NAME.spill`` beside
    ``out_dir``, removed at the end); stops before writing anything (:func:`check_splits`) when
    the reviews cannot train a model.
    """
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(f".{out_dir.name}.spill")
    try:
        stats, rows = iter_splits(path, cfg, work)
        check_splits(stats, min_split)
        with contextlib.ExitStack() as stack:
            files = {k: stack.enter_context(_atomic_file(out_dir / f"{k}.jsonl")) for k in SPLITS}
            for split, s, y in rows():
                files[split].write(json.dumps({"text": s, "label": y}, ensure_ascii=False) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _atomic_write(out_dir / "stats.json", [json.dumps(stats, indent=2, ensure_ascii=False) + "\n"])
    return stats
