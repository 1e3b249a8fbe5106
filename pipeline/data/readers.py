"""Read Amazon review files in several layouts, recognised by content.

Every reader yields ``(s, label)`` pairs: ``s`` is the review string (title and text joined),
``label`` is 1 for positive and 0 for negative. Formats are recognised by content, never by
file name, and each may be gzip-compressed. Bad rows are counted and skipped; unreadable
input raises :class:`DataError` with a message that names the file and says what to do.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.config import check_three_star

log = logging.getLogger(__name__)

FORMATS = ("amazon2023", "mcauley", "polarity_csv", "fasttext", "labeled_jsonl")

FORMAT_HELP = (
    "amazon2023 (JSON lines with 'rating' 1-5 and 'text', optional 'title'); "
    "mcauley (JSON lines with 'overall' 1-5 and 'reviewText', optional 'summary'); "
    "labeled_jsonl (JSON lines with 'text' and 'label' 1 positive / 0 negative, "
    "optional 'rating'); "
    "polarity_csv (CSV without header: class 1 negative / 2 positive, title, text); "
    "fasttext (lines '__label__1 text' negative / '__label__2 text' positive); "
    "each may be gzip-compressed"
)
README_HINT = "See the data section of README.md (and ../shared/data/README.md) for the layouts."

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = {
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_DETECT_LINES = 10
_MAX_NOTED = 5  # malformed line numbers quoted in the per-file summary


class DataError(Exception):
    """Input data cannot be read; the message names the file and what was expected."""


class UnknownFormatError(DataError):
    """A file's content matches none of :data:`FORMATS`."""


class EmptyDatasetError(DataError):
    """The input holds no usable review."""


@dataclass
class FileStats:
    """Row counts for one input file."""

    path: str
    fmt: str
    rows: int = 0
    used: int = 0
    malformed: int = 0
    dropped_neutral: int = 0


def review_string(title: str, text: str) -> str:
    """Join title and text into the review string ``s``."""
    return (title + " " + text).strip()


# ---------------------------------------------------------------------------- opening files


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, gunzipping when it starts with the gzip magic."""
    try:
        raw = open(path, "rb")  # closed by the returned wrapper
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found; expected a review file. {README_HINT}") from e
    except PermissionError as e:
        raise DataError(
            f"{path}: permission denied; make the file readable to read its reviews."
        ) from e
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e}); expected a review file.") from e
    try:
        head = raw.read(2)
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise DataError(f"{path}: cannot read ({e.strerror or e}); expected a review file.") from e
    if head != _GZIP_MAGIC:
        return raw
    gz = gzip.GzipFile(fileobj=raw, mode="rb")
    gz.myfileobj = raw  # type: ignore[attr-defined]  # so closing gz closes the file too
    return gz  # type: ignore[return-value]


def open_text(path: Path, newline: str | None) -> io.TextIOWrapper:
    """Open ``path`` as UTF-8 text (a leading BOM is dropped); bad bytes become U+FFFD."""
    return io.TextIOWrapper(
        open_binary(path), encoding="utf-8-sig", errors="replace", newline=newline
    )


def read_error(path: Path, err: BaseException, done: int | None = None) -> DataError:
    where = f" after {done} rows" if done is not None else ""
    return DataError(
        f"{path}: the file is truncated or corrupt ({type(err).__name__}: {err}){where}; "
        "the rest of the file could not be read. Re-download or re-compress it "
        "(check with `gzip -t`)."
    )


READ_ERRORS = (OSError, EOFError, zlib.error)


# ---------------------------------------------------------------------------- detection


def _format_of_keys(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if "label" in keys:
        return "labeled_jsonl"
    if "overall" in keys or "reviewText" in keys:
        return "mcauley"
    if "rating" in keys:
        return "amazon2023"
    return None


def _unknown(path: Path, why: str) -> UnknownFormatError:
    return UnknownFormatError(
        f"{path}: unknown review format ({why}). Formats read: {FORMAT_HELP}. "
        f"Convert the file to one of these or move it out of the input folder. {README_HINT}"
    )


def detect_format(path: Path) -> str:
    """Name the format of ``path`` (one of :data:`FORMATS`) from its content.

    Raises :class:`EmptyDatasetError` for a file with no non-empty line,
    :class:`UnknownFormatError` when nothing matches, :class:`DataError` when unreadable.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError:
        magic = b""  # let open_binary raise the friendly error
    for sig, name in _OTHER_MAGIC.items():
        if magic.startswith(sig):
            raise _unknown(path, f"{name}-compressed; only gzip is read, decompress it first")
    lines: list[str] = []
    try:
        with open_text(path, newline="") as f:
            for line in f:
                if line.strip():
                    lines.append(line)
                    if len(lines) >= 4 * _DETECT_LINES:
                        break
    except READ_ERRORS as e:
        raise read_error(path, e) from e
    if not lines:
        raise EmptyDatasetError(
            f"{path}: the file is empty; expected review rows. Formats read: {FORMAT_HELP}."
        )
    for i, line in enumerate(lines[:_DETECT_LINES]):
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped, strict=False)
            except ValueError:
                continue
            if isinstance(obj, dict):
                fmt = _format_of_keys(obj)
                if fmt is None:
                    raise _unknown(path, f"JSON object with keys {sorted(obj)[:10]}")
                return fmt
            continue
        if stripped.startswith("__label__"):
            return "fasttext"
        try:
            rec = next(csv.reader(iter(lines[i:])), [])
        except csv.Error:
            continue
        if len(rec) == 3 and rec[0].strip() in ("1", "2"):
            return "polarity_csv"
    raise _unknown(path, f"first line starts with {lines[0].strip()[:60]!r}")


# ---------------------------------------------------------------------------- row parsers

_NEUTRAL = -1  # sentinel label for a 3★ review under the "drop" policy
_Rows = Iterator[tuple[int, tuple[str, int] | None]]  # (line number, (s, label) or None if bad)


class _Malformed(Exception):
    pass


def _clean(s: str) -> str:
    """Replace lone surrogates (from JSON ``\\ud800`` escapes) so ``s`` encodes as UTF-8."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def _star_label(rating: Any, three_star: str) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        raise _Malformed
    if not (1 <= rating <= 5) or rating != math.floor(rating):
        raise _Malformed
    if rating < 3:
        return 0
    if rating > 3:
        return 1
    if three_star == "drop":
        return _NEUTRAL
    return 0 if three_star == "negative" else 1


def _json_row(line: str, three_star: str) -> tuple[str, int]:
    """Parse one JSON line of any JSON layout, deciding by the row's own keys."""
    try:
        row = json.loads(line, strict=False)
    except ValueError as e:
        raise _Malformed from e
    if not isinstance(row, dict):
        raise _Malformed
    text = row["text"] if "text" in row else row.get("reviewText")
    title = row["title"] if "title" in row else row.get("summary")
    if title is None:
        title = ""
    if not isinstance(text, str) or not text.strip() or not isinstance(title, str):
        raise _Malformed
    label = row.get("label")
    if label is not None:
        if isinstance(label, bool) or label not in (0, 1):
            raise _Malformed
        y = int(label)
    elif "rating" in row:
        y = _star_label(row["rating"], three_star)
    elif "overall" in row:
        y = _star_label(row["overall"], three_star)
    else:
        raise _Malformed
    return _clean(review_string(title, text)), y


def _iter_json(f: io.TextIOWrapper, three_star: str) -> _Rows:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield n, _json_row(line, three_star)
        except _Malformed:
            yield n, None


def _iter_fasttext(f: io.TextIOWrapper) -> _Rows:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        head, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if head == "__label__1" and rest:
            yield n, (rest, 0)
        elif head == "__label__2" and rest:
            yield n, (rest, 1)
        else:
            yield n, None


def _iter_csv(f: io.TextIOWrapper) -> _Rows:
    reader = csv.reader(f)
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield reader.line_num, None
            continue
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) != 3 or rec[0].strip() not in ("1", "2"):
            yield reader.line_num, None
            continue
        title = rec[1].replace("\\n", "\n")
        text = rec[2].replace("\\n", "\n")
        if not text.strip():
            yield reader.line_num, None
            continue
        yield reader.line_num, (review_string(title, text), 0 if rec[0].strip() == "1" else 1)


# ---------------------------------------------------------------------------- iteration


def _list_files(path: Path) -> list[Path]:
    """Data files under ``path``: itself, or a folder's files (recursive, sorted)."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder; expected a review file or a folder of them. "
            f"{README_HINT}"
        )
    if not path.is_dir():
        raise DataError(f"{path}: not a regular file or folder; expected a review file.")

    def fail(err: OSError) -> None:
        raise DataError(
            f"{err.filename or path}: cannot list folder ({err.strerror or err}); make it readable."
        ) from err

    files: list[Path] = []
    for root, dirs, names in os.walk(path, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or name.upper().startswith("README"):
                continue
            p = Path(root, name)
            if p.is_file():
                files.append(p)
    if not files:
        raise DataError(
            f"{path}: folder holds no data files (hidden files and README* are skipped); "
            f"expected review files. Formats read: {FORMAT_HELP}. {README_HINT}"
        )
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def _iter_file(
    path: Path, name: str, three_star: str, stats: list[FileStats]
) -> Iterator[tuple[str, int]]:
    """Yield one file's reviews, recording its :class:`FileStats` and logging a summary."""
    try:
        fmt = detect_format(path)
    except EmptyDatasetError:
        stats.append(FileStats(path=str(path), fmt="empty"))
        log.warning("%s: empty file, skipped", name)
        return
    fs = FileStats(path=str(path), fmt=fmt)
    stats.append(fs)
    noted: list[int] = []
    with open_text(path, newline="" if fmt == "polarity_csv" else "\n") as f:
        if fmt == "polarity_csv":
            rows = _iter_csv(f)
        elif fmt == "fasttext":
            rows = _iter_fasttext(f)
        else:
            rows = _iter_json(f, three_star)
        while True:
            try:
                n, item = next(rows)
            except StopIteration:
                break
            except READ_ERRORS as e:
                raise read_error(path, e, fs.rows) from e
            fs.rows += 1
            if item is None:
                fs.malformed += 1
                if len(noted) < _MAX_NOTED:
                    noted.append(n)
            elif item[1] == _NEUTRAL:
                fs.dropped_neutral += 1
            else:
                fs.used += 1
                yield item
    msg = (
        f"{name}: format={fmt} rows={fs.rows} used={fs.used} "
        f"neutral_dropped={fs.dropped_neutral} malformed={fs.malformed}"
    )
    if fs.malformed:
        more = ", ..." if fs.malformed > len(noted) else ""
        log.warning("%s (skipped; first at line %s%s)", msg, ", ".join(map(str, noted)), more)
    else:
        log.info("%s", msg)


def iter_paths(
    paths: Sequence[Path], three_star: str, stats: list[FileStats]
) -> Iterator[tuple[str, int]]:
    check_three_star(three_star)
    start = len(stats)
    for root in paths:
        for p in _list_files(root):
            name = p.name if p == root else p.relative_to(root).as_posix()
            yield from _iter_file(p, name, three_star, stats)
    mine = stats[start:]
    if not any(fs.used for fs in mine):
        where = ", ".join(str(p) for p in paths)
        counts = (
            f"{len(mine)} file(s), rows={sum(fs.rows for fs in mine)}, "
            f"malformed={sum(fs.malformed for fs in mine)}, "
            f"neutral_dropped={sum(fs.dropped_neutral for fs in mine)}"
        )
        hint = ""
        if any(fs.dropped_neutral for fs in mine):
            hint = " (3★ rows are dropped by three_star='drop'; 'negative'/'positive' keeps them)"
        raise EmptyDatasetError(
            f"{where}: no usable reviews ({counts}){hint}. Point the pipeline at review files in "
            f"one of the formats: {FORMAT_HELP}. {README_HINT}"
        )


def iter_reviews(
    path: str | Path, three_star: str = "drop", stats: list[FileStats] | None = None
) -> Iterator[tuple[str, int]]:
    """Yield ``(s, label)`` from a file or a folder (recursive, sorted; hidden and README* skipped).

    ``label`` is 1 positive / 0 negative. Per-file counts are appended to ``stats`` when given.
    Raises :class:`EmptyDatasetError` at the end when no row was usable.
    """
    return iter_paths([Path(path)], three_star, stats if stats is not None else [])
