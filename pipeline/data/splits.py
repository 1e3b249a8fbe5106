"""Deterministic train / validation / test splits of the reviews, and their JSON-lines files.

The split of a review string ``s`` is its md5 bucket: ``int(md5(s)[:8], 16) % 10`` is 0 for test, 1
for validation, the rest train. Duplicates are removed, an optional cap keeps the reviews with the
smallest seeded md5 key, and optional balancing down-samples the majority class per split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

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


def load_splits(
    path: str | Path | Sequence[str | Path], cfg: DataConfig
) -> tuple[dict[str, list[tuple[str, int]]], dict]:
    """Read, dedup, cap, split, balance and order reviews; return ``(splits, stats)``.

    ``path`` is a file, a folder, or a list of them. Output depends only on the set of
    reviews and ``cfg``, not on file or row order (except which label a duplicate keeps).
    """
    paths = _as_paths(path)
    file_stats: list[FileStats] = []
    labels: dict[str, int] = {}
    duplicates = conflicts = 0
    for r in iter_records(paths, cfg.three_star, file_stats):
        s, y = r.text, int(r.label)  # type: ignore[arg-type]  # labelled input only
        old = labels.get(s)
        if old is None:
            labels[s] = y
        else:
            duplicates += 1
            conflicts += old != y
    items = list(labels.items())
    unique = len(items)
    capped = 0
    if cfg.max_reviews is not None and unique > cfg.max_reviews:
        items.sort(key=lambda it: _key(f"{cfg.seed}:", it[0]))
        capped = unique - cfg.max_reviews
        items = items[: cfg.max_reviews]

    positives = sum(y for _, y in items)
    splits: dict[str, list[tuple[str, int]]] = {k: [] for k in SPLITS}
    for s, y in items:
        splits[split_of(s)].append((s, y))

    split_stats: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        rows = splits[name]
        before = len(rows)
        if cfg.balance:
            rows = _balance(rows, cfg.seed)
            if before and not rows:
                log.warning("split %s: only one class present, balancing left it empty", name)
        rows.sort(key=lambda it: _key(f"{cfg.seed}:order:", it[0]))
        splits[name] = rows
        pos = sum(y for _, y in rows)
        split_stats[name] = {
            "n": len(rows),
            "positives": pos,
            "negatives": len(rows) - pos,
            "before_balance": before,
        }
    stats = {
        "inputs": [str(p) for p in paths],
        "files": [asdict(fs) for fs in file_stats],
        "totals": {
            "rows": sum(fs.rows for fs in file_stats),
            "used": sum(fs.used for fs in file_stats),
            "malformed": sum(fs.malformed for fs in file_stats),
            "neutral_dropped": sum(fs.dropped_neutral for fs in file_stats),
            "duplicates": duplicates,
            "duplicate_label_conflicts": conflicts,
            "unique": unique,
            "capped": capped,
            "positives": positives,
            "negatives": len(items) - positives,
        },
        "splits": split_stats,
        "config": asdict(cfg),
    }
    log.info(
        "dataset: unique=%d duplicates=%d capped=%d train=%d val=%d test=%d",
        unique,
        duplicates,
        capped,
        *(split_stats[k]["n"] for k in SPLITS),
    )
    return splits, stats


def _balance(rows: list[tuple[str, int]], seed: int) -> list[tuple[str, int]]:
    """Keep all of the minority class and as many majority rows (smallest md5 key)."""
    pos = [r for r in rows if r[1] == 1]
    neg = [r for r in rows if r[1] == 0]
    minority, majority = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    majority = sorted(majority, key=lambda it: _key(f"{seed}:bal:", it[0]))[: len(minority)]
    return minority + majority


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:  # umask permissions
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write ``{"text": s, "label": y}`` lines atomically (temp file, then ``os.replace``)."""
    _atomic_write(
        path, (json.dumps({"text": s, "label": y}, ensure_ascii=False) + "\n" for s, y in rows)
    )


def read_jsonl(path: Path) -> list[tuple[str, int | None]]:
    """Read ``{"text", "label"}`` lines (as written by :func:`write_jsonl`); no label -> None."""
    path = Path(path)
    out: list[tuple[str, int | None]] = []
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
                out.append((text, None if label is None else int(label)))
    except READ_ERRORS as e:
        raise read_error(path, e, len(out)) from e
    return out


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
                  min_split: int = MIN_SPLIT_REVIEWS) -> dict:
    """Write ``out_dir/{train,val,test}.jsonl`` and ``out_dir/stats.json``; return the stats.

    Stops first (:func:`check_splits`) when the reviews cannot train a model.
    """
    splits, stats = load_splits(path, cfg)
    check_splits(stats, min_split)
    out_dir = Path(out_dir)
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", splits[name])
    _atomic_write(out_dir / "stats.json", [json.dumps(stats, indent=2, ensure_ascii=False) + "\n"])
    return stats
