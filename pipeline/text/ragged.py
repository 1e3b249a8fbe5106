"""Token-id rows of different lengths in one flat array.

A Python list of id lists costs about 36 bytes per id (an int object and a pointer): the
distillation set of the full run (300,402 texts, 25.4 million student ids) took 943 MB that way
and takes 51 MB here.
:class:`Ragged` keeps the ids in one ``uint16`` (vocabularies up to 65,536) or ``int32`` array
with row offsets, 2 or 4 bytes per id, and reads like a sequence of rows: ``len``, ``rows[i]``
(a read-only NumPy view), iteration, and ``rows.lengths``. Everything that reads ids row by row
(``pad_batch``, ``fit``, ``predict_proba``) takes it unchanged and computes the same.

:class:`RaggedFile` is the same on disk: only the offsets stay in memory (8 bytes a row) and a row
is one ``os.pread``, so a training set of millions of texts costs no resident memory for its ids
(a memory map would: every page an epoch touches counts in the process's resident set).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Row offsets ``[0, l0, l0 + l1, ...]`` (int64) of rows of ``lengths``."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class FileReader:
    """``os.pread`` on ``path``, opened at the first read and closed with the object (no file
    position: safe to share between readers)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read(self, size: int, offset: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, size, offset)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class Rows(Sequence[np.ndarray]):
    """Rows given by ``offsets`` (row ``i`` is ids ``offsets[i]`` to ``offsets[i + 1]``); a
    subclass says how ids ``a:b`` are read (:meth:`_read`)."""

    offsets: np.ndarray

    def _read(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._read(int(self.offsets[i]), int(self.offsets[i + 1]))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


class Ragged(Rows):
    """Rows of ids: ``flat[offsets[i]:offsets[i + 1]]`` is row ``i``."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat):
            raise ValueError("offsets must start at 0 and end at len(flat)")
        self.flat = flat
        self.offsets = offsets.astype(np.int64, copy=False)
        self.flat.flags.writeable = False

    @staticmethod
    def dtype_for(vocab_size: int) -> type:
        """The smallest id type that holds ``vocab_size`` ids."""
        return np.uint16 if vocab_size <= 1 << 16 else np.int32

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[int]], dtype: type = np.int32) -> Ragged:
        """Pack ``rows`` (lists or arrays of ids, or chunks of them via :meth:`concat`)."""
        rows = list(rows)
        offsets = offsets_of(np.fromiter((len(r) for r in rows), np.int64, count=len(rows)))
        flat = np.empty(int(offsets[-1]), dtype)
        for r, a, b in zip(rows, offsets[:-1], offsets[1:], strict=True):
            flat[a:b] = r
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: Iterable[Ragged]) -> Ragged:
        """One :class:`Ragged` of the rows of ``parts``, in order."""
        parts = list(parts)
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        return cls(np.concatenate([p.flat for p in parts]),
                   offsets_of(np.concatenate([p.lengths for p in parts])))

    def _read(self, a: int, b: int) -> np.ndarray:
        return self.flat[a:b]

    @property
    def nbytes(self) -> int:
        return int(self.flat.nbytes + self.offsets.nbytes)


class RaggedFile(Rows):
    """:class:`Ragged` rows read from ``path`` (the flat ids, ``dtype``) with ``os.pread``."""

    def __init__(self, path: Path, offsets: np.ndarray, dtype: type) -> None:
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self.offsets = offsets.astype(np.int64, copy=False)
        if os.path.getsize(self.path) != self.offsets[-1] * self.dtype.itemsize:
            raise ValueError(f"{self.path}: size does not match its {len(self)} rows")
        self._file = FileReader(self.path)

    @classmethod
    def write(cls, parts: Iterable[Ragged], path: Path) -> RaggedFile:
        """Write the rows of ``parts`` (chunk by chunk) to ``path``; a half-written file never
        takes its name."""
        writer = RaggedWriter(path)
        for part in parts:
            writer.append(part)
        return writer.close()

    def _read(self, a: int, b: int) -> np.ndarray:
        size = self.dtype.itemsize
        return np.frombuffer(self._file.read((b - a) * size, a * size), self.dtype)


class RaggedWriter:
    """Rows appended part by part to ``path`` (through ``path.tmp``, renamed by :meth:`close`,
    which returns the :class:`RaggedFile`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self._tmp, "wb")  # noqa: SIM115 (closed by close)
        self._lengths: list[np.ndarray] = []
        self._dtype: np.dtype | None = None

    def append(self, part: Ragged) -> None:
        if self._dtype is None:
            self._dtype = part.flat.dtype
        elif part.flat.dtype != self._dtype:
            raise ValueError("every part must have the same id type")
        self._f.write(part.flat.tobytes())
        self._lengths.append(part.lengths)

    def close(self) -> RaggedFile:
        self._f.close()
        self._tmp.replace(self.path)
        return RaggedFile(self.path, offsets_of(np.concatenate(self._lengths or [np.zeros(0, np.int64)])),
                          self._dtype or np.int32)
