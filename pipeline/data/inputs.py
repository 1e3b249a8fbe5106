"""What ``pipeline.predict`` and ``pipeline.tokenize`` read: any review file or folder the readers
know, and JSON lines with a ``text`` and no label, as :class:`~pipeline.data.readers.Record` s
(text, label or None, file, line)."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.readers import EmptyDatasetError, FileStats, Record, iter_records
from pipeline.data.splits import split_of

PREDICT_THREE_STAR_HINT = "`--three-star negative` (or `positive`) keeps them"


def read_input(
    path: Path,
    split: str | None = None,
    three_star: str = "drop",
    stats: list[FileStats] | None = None,
) -> list[Record]:
    """Records of a review file or folder, labelled or not; ``split`` keeps one md5 split."""
    path = Path(path)
    records = list(iter_records(path, three_star, stats, unlabeled=True,
                                three_star_hint=PREDICT_THREE_STAR_HINT))
    if split:
        kept = [r for r in records if split_of(r.text) == split]
        if not kept:
            raise EmptyDatasetError(
                f"{path}: none of its {len(records)} reviews falls in split {split!r} "
                "(md5 rule, see README); drop --split to read them all"
            )
        records = kept
    return records
