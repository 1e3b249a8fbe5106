"""What ``pipeline.predict`` and ``pipeline.tokenize`` read: any review file or folder the readers
know, or JSON lines with a ``text`` and no label."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

from pipeline.data.readers import EmptyDatasetError, UnknownFormatError, iter_reviews
from pipeline.data.splits import split_of

log = logging.getLogger(__name__)


def read_input(path: Path, split: str | None = None) -> list[tuple[str, int | None]]:
    """Rows ``(text, label or None)`` from any readable review file/folder."""
    path = Path(path)
    try:
        rows: list[tuple[str, int | None]] = list(iter_reviews(path))
    except UnknownFormatError:
        rows = _read_unlabeled_jsonl(path)
    if split:
        rows = [r for r in rows if split_of(r[0]) == split]
    if not rows:
        raise EmptyDatasetError(f"{path}: no reviews to predict" +
                                     (f" in split {split!r}" if split else ""))
    return rows


def _read_unlabeled_jsonl(path: Path) -> list[tuple[str, int | None]]:
    """JSON lines with ``text`` and no label (the data module only reads labelled data)."""
    rows: list[tuple[str, int | None]] = []
    bad = 0
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gz else open)(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj["text"]
                if not isinstance(text, str):
                    raise TypeError
                rows.append((text, None))
            except (json.JSONDecodeError, KeyError, TypeError):
                bad += 1
    if not rows:
        raise UnknownFormatError(
            f"{path}: not a review file this tool reads. Expected one of the formats in the "
            "README (Amazon 2023 / McAuley JSON lines, polarity CSV, fastText lines) or JSON "
            "lines with a 'text' field"
        )
    if bad:
        log.warning("%s: %d malformed lines skipped", path, bad)
    return rows
