"""Read Amazon review files in several layouts, recognised by content.

The readers yield :class:`Record` s: the review string ``text`` (title and text joined), its
``label`` (1 positive, 0 negative; None for unlabelled JSON lines when the caller accepts them,
as ``pipeline.predict`` does), the ``file`` and the 1-based ``line`` where the row starts.
:func:`iter_reviews` gives the ``(text, label)`` pairs. Formats are recognised by content, never by
file name, and each may be gzip-compressed. Leading ``#`` comment lines are skipped, LF, CRLF and
CR-only line ends are read. Bad rows are counted and skipped; unreadable input raises
:class:`DataError` with a message that names the file and says what to do.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.config import check_three_star

log = logging.getLogger(__name__)

FORMATS = ("amazon2023", "mcauley", "polarity_csv", "fasttext", "labeled_jsonl")

FORMAT_HELP = """Formats read (UTF-8 text, each may be gzip-compressed):
  amazon2023     JSON lines with 'rating' 1-5 and 'text', optional 'title'
  mcauley        JSON lines with 'overall' 1-5 and 'reviewText', optional 'summary'
  labeled_jsonl  JSON lines with 'text' and 'label' (1 positive / 0 negative)
  polarity_csv   CSV without header: class (1 negative / 2 positive), title, text
  fasttext       lines '__label__1 text' (negative) / '__label__2 text' (positive)"""
UNLABELED_HELP = "  text_jsonl     JSON lines with 'text' and no label (predict and tokenize only)"
THREE_STAR_HINT = "`--set data.three_star=negative` (or `=positive`) keeps them"
README_HINT = "See the data section of README.md (and ../shared/data/README.md) for the layouts."

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = {
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_DETECT_LINES = 10
_SNIFF_BYTES = 1 << 16
_MAX_NOTED = 5  # malformed line numbers quoted in the per-file summary


class DataError(Exception):
    """Input data cannot be read; the message names the file and what was expected."""


class UnknownFormatError(DataError):
    """A file's content matches none of :data:`FORMATS`."""


class EmptyDatasetError(DataError):
    """The input holds no usable review."""


@dataclass(frozen=True)
class Record:
    """One review row: ``text`` (title and text joined), ``label`` (1 / 0, None if unlabelled),
    the ``file`` it came from and the 1-based ``line`` where the row starts."""

    text: str
    label: int | None
    file: str
    line: int


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

_DECOMPRESS = {"zip": "unzip FILE", "bzip2": "bunzip2 FILE", "xz": "unxz FILE", "zstd": "unzstd FILE"}


def _format_of_keys(keys: Iterable[str], unlabeled: bool = False) -> str | None:
    keys = set(keys)
    if "label" in keys:
        return "labeled_jsonl"
    if "overall" in keys or "reviewText" in keys:
        return "mcauley"
    if "rating" in keys:
        return "amazon2023"
    if unlabeled and "text" in keys:
        return "text_jsonl"
    return None


def _unknown(path: Path, why: str, unlabeled: bool = False) -> UnknownFormatError:
    formats = FORMAT_HELP + ("\n" + UNLABELED_HELP if unlabeled else "")
    return UnknownFormatError(
        f"{path}: unknown review format ({why}).\n{formats}\n"
        f"Convert the file to one of these or move it out of the input folder. {README_HINT}"
    )


def _not_readable(path: Path, what: str, todo: str) -> UnknownFormatError:
    return UnknownFormatError(f"{path}: {what}; {todo}")


def _sniff(path: Path) -> str:
    """The line end of ``path``: ``"\\r"`` for CR-only files, else ``"\\n"``.

    Raises :class:`UnknownFormatError` for other compressions, UTF-16 and binary files.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError:
        magic = b""  # let open_binary raise the friendly error
    for sig, name in _OTHER_MAGIC.items():
        if magic.startswith(sig):
            raise _not_readable(path, f"{name}-compressed, only gzip is read",
                                f"decompress it first (`{_DECOMPRESS[name]}`) or gzip it.")
    try:
        with open_binary(path) as f:
            head = f.read(_SNIFF_BYTES)
    except READ_ERRORS as e:
        raise read_error(path, e) from e
    utf16 = "convert it to UTF-8 (`iconv -f UTF-16 -t UTF-8 FILE > NEW`); only UTF-8 text is read."
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _not_readable(path, "UTF-16 text (byte order mark)", utf16)
    start = head[:8000]  # as git decides: a NUL byte early on means binary
    if 0 in start:
        even, odd = start[0::2].count(0), start[1::2].count(0)
        if min(even, odd) * 20 < max(even, odd) and max(even, odd) > len(start) // 5:
            raise _not_readable(path, "UTF-16 text (every other byte is zero)", utf16)
    text = start.decode("utf-8", "replace")
    if 0 in start or text.count("\ufffd") > len(text) // 4:
        raise _not_readable(path, "a binary file, not text (NUL bytes or mostly invalid UTF-8)",
                            "expected UTF-8 review text: move it out of the input folder.")
    return "\r" if b"\n" not in head and b"\r" in head else "\n"


def _detect(path: Path, unlabeled: bool = False) -> tuple[str, str]:
    """``(format, line end)`` of ``path``; see :func:`detect_format`."""
    path = Path(path)
    newline = _sniff(path)
    lines: list[str] = []
    try:
        with open_text(path, newline="") as f:
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    lines.append(line)
                    if len(lines) >= 4 * _DETECT_LINES:
                        break
    except READ_ERRORS as e:
        raise read_error(path, e) from e
    if not lines:
        raise EmptyDatasetError(f"{path}: the file is empty; expected review rows.\n{FORMAT_HELP}")
    if lines[0].lstrip().startswith("["):
        raise _not_readable(path, "a JSON array, not JSON lines",
                            "write one JSON object per line (e.g. `jq -c '.[]' FILE > FILE.jsonl`).")
    for i, line in enumerate(lines[:_DETECT_LINES]):
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped, strict=False)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                fmt = _format_of_keys(obj, unlabeled)
                if fmt is None and "text" in obj:
                    raise _unknown(path, "JSON lines with 'text' but no 'label', 'rating' or "
                                   "'overall': training needs labelled reviews, pipeline.predict "
                                   "reads unlabelled ones", unlabeled)
                if fmt is None:
                    raise _unknown(path, f"JSON object with keys {sorted(obj)[:10]}", unlabeled)
                return fmt, newline
            continue
        if stripped.startswith("__label__"):
            return "fasttext", newline
        try:
            rec = next(csv.reader(iter(lines[i:])), [])
        except csv.Error:
            continue
        if len(rec) == 3 and rec[0].strip() in ("1", "2"):
            return "polarity_csv", newline
    raise _unknown(path, f"first line starts with {lines[0].strip()[:60]!r}", unlabeled)


def detect_format(path: Path, unlabeled: bool = False) -> str:
    """Name the format of ``path`` (one of :data:`FORMATS`, or ``text_jsonl`` when ``unlabeled``).

    Raises :class:`EmptyDatasetError` for a file with no non-empty line,
    :class:`UnknownFormatError` when nothing matches, :class:`DataError` when unreadable.
    """
    return _detect(path, unlabeled)[0]


# ---------------------------------------------------------------------------- row parsers

_NEUTRAL = -1  # sentinel label for a 3★ review under the "drop" policy
# (line number, (s, label or None if unlabelled) or None if malformed)
_Rows = Iterator[tuple[int, tuple[str, int | None] | None]]


class _Malformed(Exception):
    pass


class _Lines:
    """A text file's physical lines; :attr:`taken` holds ``(1-based number, line)`` of those read
    since it was last cleared. Leading ``#`` comment lines are skipped; lines can be pushed back."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self.n = 0
        self._leading = True
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            line = next(self._f)
            self.n += 1
            while self._leading and (line.lstrip().startswith("#") or not line.strip()):
                line = next(self._f)
                self.n += 1
            self._leading = False
            item = (self.n, line)
        self.taken.append(item)
        return item[1]

    def numbered(self) -> Iterator[tuple[int, str]]:
        for line in self:
            n = self.taken[-1][0]
            self.taken.clear()
            yield n, line


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


def _json_row(line: str, three_star: str, unlabeled: bool = False) -> tuple[str, int | None]:
    """Parse one JSON line of any JSON layout, deciding by the row's own keys."""
    try:
        row = json.loads(line, strict=False)
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
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
    y: int | None
    if label is not None:
        if isinstance(label, bool) or label not in (0, 1):
            raise _Malformed
        y = int(label)
    elif "rating" in row:
        y = _star_label(row["rating"], three_star)
    elif "overall" in row:
        y = _star_label(row["overall"], three_star)
    elif unlabeled:
        y = None
    else:
        raise _Malformed
    return _clean(review_string(title, text)), y


def _iter_json(lines: _Lines, three_star: str, unlabeled: bool) -> _Rows:
    for n, line in lines.numbered():
        if not line.strip():
            continue
        try:
            yield n, _json_row(line, three_star, unlabeled)
        except _Malformed:
            yield n, None


_FASTTEXT_LABELS = {"__label__1": 0, "__label__2": 1}


def _iter_fasttext(lines: _Lines) -> _Rows:
    for n, line in lines.numbered():
        parts = line.split(None, 1)  # label, then any whitespace (space or tab), then the text
        if not parts:
            continue
        label = _FASTTEXT_LABELS.get(parts[0])
        text = parts[1].strip() if len(parts) == 2 else ""
        yield n, (text, label) if label is not None and text else None


_CSV_ROW_START = re.compile(r'\s*(?:"[12]",|[12],")')


def _starts_row(line: str) -> bool:
    """Whether a physical line is on its own a complete quoted polarity row."""
    if not _CSV_ROW_START.match(line) or line.count('"') % 2:
        return False
    try:
        return len(next(csv.reader([line]), [])) == 3
    except csv.Error:
        return False


def _iter_csv(lines: _Lines) -> _Rows:
    reader = csv.reader(lines)
    while True:
        lines.taken.clear()
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield (lines.taken[0][0] if lines.taken else lines.n), None
            continue
        taken = list(lines.taken)
        start = taken[0][0]
        k = next((i for i in range(1, len(taken)) if _starts_row(taken[i][1])), None)
        if k is not None:  # an unclosed quote swallowed the next rows: the row is bad, re-read those
            lines.pending.extendleft(reversed(taken[k:]))
            yield start, None
            continue
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) != 3 or rec[0].strip() not in ("1", "2"):
            yield start, None
            continue
        title = rec[1].replace("\\n", "\n")
        text = rec[2].replace("\\n", "\n")
        if not text.strip():
            yield start, None
            continue
        yield start, (review_string(title, text), 0 if rec[0].strip() == "1" else 1)


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
            f"expected review files. {README_HINT}\n{FORMAT_HELP}"
        )
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())




def _iter_file(
    path: Path, three_star: str, fs: FileStats, name: str, unlabeled: bool, neutral: bool = False
) -> Iterator[Record]:
    """Yield one file's reviews, counting into ``fs`` and logging a summary (``neutral``: yield
    the dropped 3★ rows instead, with label None)."""
    fmt, newline = _detect(path, unlabeled)
    fs.fmt = fmt
    noted: list[int] = []
    with open_text(path, newline="" if fmt == "polarity_csv" else newline) as f:
        lines = _Lines(f)
        if fmt == "polarity_csv":
            rows = _iter_csv(lines)
        elif fmt == "fasttext":
            rows = _iter_fasttext(lines)
        else:
            rows = _iter_json(lines, three_star, unlabeled)
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
                if neutral:
                    yield Record(item[0], None, str(path), n)
            else:
                fs.used += 1
                if not neutral:
                    yield Record(item[0], item[1], str(path), n)
    msg = (
        f"{name}: format={fmt} rows={fs.rows} used={fs.used} "
        f"neutral_dropped={fs.dropped_neutral} malformed={fs.malformed}"
    )
    if fs.malformed:
        more = ", ..." if fs.malformed > len(noted) else ""
        log.warning("%s (skipped; first at line %s%s)", msg, ", ".join(map(str, noted)), more)
    else:
        log.info("%s", msg)


def iter_records(
    paths: str | Path | Sequence[str | Path],
    three_star: str = "drop",
    stats: list[FileStats] | None = None,
    *,
    unlabeled: bool = False,
    three_star_hint: str = THREE_STAR_HINT,
    neutral: bool = False,
) -> Iterator[Record]:
    """Yield the :class:`Record` s of files and folders (recursive, sorted; hidden and README*
    skipped). Per-file counts go to ``stats`` when given. ``unlabeled``: also JSON lines with a
    ``text`` and no label (``label`` None). ``neutral``: the 3★ rows ``three_star="drop"`` leaves
    out instead (``label`` None), the labelled rows only counted. Raises
    :class:`EmptyDatasetError` at the end when no (labelled) row was usable; ``three_star_hint``
    says how to keep 3★ rows in that message.
    """
    check_three_star(three_star)
    roots = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    mine: list[FileStats] = []
    for root in roots:
        for p in _list_files(root):
            name = p.name if p == root else p.relative_to(root).as_posix()
            fs = FileStats(path=str(p), fmt="empty")
            mine.append(fs)
            if stats is not None:
                stats.append(fs)
            try:
                yield from _iter_file(p, three_star, fs, name, unlabeled, neutral)
            except EmptyDatasetError:
                log.warning("%s: empty file, skipped", name)
    if not any(fs.used for fs in mine):
        where = ", ".join(str(p) for p in roots)
        counts = (
            f"{len(mine)} file(s), rows={sum(fs.rows for fs in mine)}, "
            f"malformed={sum(fs.malformed for fs in mine)}, "
            f"neutral_dropped={sum(fs.dropped_neutral for fs in mine)}"
        )
        hint = ""
        if any(fs.dropped_neutral for fs in mine):
            hint = f"\n3★ rows are dropped by default: {three_star_hint}."
        raise EmptyDatasetError(
            f"{where}: no usable reviews ({counts}).{hint}\nPoint it at review files in one of the "
            f"formats below. {README_HINT}\n{FORMAT_HELP}" + ("\n" + UNLABELED_HELP if unlabeled else "")
        )


def iter_three_star(path: str | Path | Sequence[str | Path]) -> Iterator[str]:
    """The review strings of the 3★ rows of star-rated files, which ``three_star="drop"`` leaves
    out of the labelled data (unlabeled text for distillation); other rows are read and skipped.
    :func:`iter_records` with ``neutral``: it raises where no labelled row is usable either."""
    for r in iter_records(path, "drop", neutral=True):
        yield r.text


def iter_reviews(
    path: str | Path | Sequence[str | Path], three_star: str = "drop",
    stats: list[FileStats] | None = None,
) -> Iterator[tuple[str, int]]:
    """Yield ``(s, label)`` (1 positive / 0 negative) from files and folders: :func:`iter_records`."""
    for r in iter_records(path, three_star, stats):
        yield r.text, r.label  # type: ignore[misc]  # labelled input only
