"""Host build of the C tokenizer (firmware/src/tokenizer.c) with a ctypes binding.

``CTokenizer(tokenizer_dir)`` generates the tables for that tokenizer, compiles them with the C
sources into a shared library (cached under ``build/ctok/<hash of sources and flags>/``) and
encodes like the device does. ``build_driver`` builds the standalone test driver
(firmware/host/fuzz_tokenizer.c), by default with AddressSanitizer and UBSan.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.text.ctables import TABLES_C, write_tokenizer_tables

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "firmware" / "src"
HOST = ROOT / "firmware" / "host"
SOURCES = ("tokenizer.c", "tokenizer.h", "tokenizer_tables.h")
DEVICE_MAX_INPUT_BYTES = 2048  # TOK_MAX_INPUT_BYTES's default in tokenizer.h
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


class CompilerNotFound(RuntimeError):
    """No C compiler on PATH."""


def compiler() -> str:
    cc = os.environ.get("CC", "gcc")
    path = shutil.which(cc)
    if path is None:
        raise CompilerNotFound(f"C compiler {cc!r} not found (install gcc or set CC)")
    return path


def cache_root(name: str = "ctok") -> Path:
    """``build/NAME`` in the repository (git-ignored), or a temp folder when not writable."""
    root = ROOT / "build" / name
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / f"tinysent-{name}"
        root.mkdir(parents=True, exist_ok=True)
    return root


def _compile(out_name: str, tokenizer_dir: Path, extra_sources: list[Path], flags: list[str]) -> Path:
    """Compile tokenizer.c + tables of ``tokenizer_dir`` (+ extra) into ``out_name``, cached."""
    cc = compiler()
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_tables(Path(tokenizer_dir), Path(tmp))
        tables = (Path(tmp) / TABLES_C).read_bytes()
    # the generated header comment names the temp folder: hash the data only
    tables_data = tables[tables.index(b"#include"):]
    h = hashlib.sha256()
    for part in [cc.encode(), " ".join(flags).encode(), tables_data,
                 *[(SRC / s).read_bytes() for s in SOURCES], *[p.read_bytes() for p in extra_sources]]:
        h.update(hashlib.sha256(part).digest())
    out_dir = cache_root() / h.hexdigest()[:20]
    out = out_dir / out_name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f".{os.getpid()}"  # concurrent builds of the same hash write different files
    (out_dir / (TABLES_C + tag)).write_bytes(tables)
    os.replace(out_dir / (TABLES_C + tag), out_dir / TABLES_C)
    tmp_out = out_dir / (out_name + tag)
    cmd = [cc, *flags, f"-I{SRC}", *map(str, extra_sources), str(SRC / "tokenizer.c"),
           str(out_dir / TABLES_C), "-o", str(tmp_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"C build failed: {' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp_out, out)
    return out


def build_library(tokenizer_dir: Path, max_input_bytes: int = DEVICE_MAX_INPUT_BYTES,
                  defines: tuple[str, ...] = ()) -> Path:
    """Shared library of the C tokenizer for ``tokenizer_dir``, built with warnings as errors.

    ``defines`` are extra ``-D`` macros (e.g. the test hook ``TOK_NEVER_SPLIT``).
    """
    flags = [*WARNINGS, "-O2", "-fPIC", "-shared", f"-DTOK_MAX_INPUT_BYTES={max_input_bytes}",
             *(f"-D{d}" for d in defines)]
    return _compile("libtok.so", tokenizer_dir, [], flags)


def build_driver(tokenizer_dir: Path, sanitize: bool = True,
                 max_input_bytes: int = DEVICE_MAX_INPUT_BYTES) -> Path:
    """Executable firmware/host/fuzz_tokenizer.c (standalone main), with ASan+UBSan by default."""
    flags = [*WARNINGS, "-g", "-O1", "-DTOK_STANDALONE_MAIN",
             f"-DTOK_MAX_INPUT_BYTES={max_input_bytes}", *(SANITIZE if sanitize else [])]
    return _compile("fuzz_tokenizer" + ("_san" if sanitize else ""), tokenizer_dir,
                    [HOST / "fuzz_tokenizer.c"], flags)


class _Info(ctypes.Structure):
    _fields_ = [("n_ids", ctypes.c_size_t), ("ids_truncated", ctypes.c_bool),
                ("input_bytes_used", ctypes.c_size_t), ("input_cut", ctypes.c_bool)]


@dataclass(frozen=True)
class Encoded:
    ids: list[int]  # the ids written (truncated to max_ids when given)
    n_ids: int  # untruncated count
    input_bytes_used: int  # < len(input) when it was longer than max_input_bytes


class CTokenizer:
    """The C tokenizer for one tokenizer directory (tokenizer.model + tokenizer.json)."""

    def __init__(self, tokenizer_dir: Path, max_input_bytes: int = DEVICE_MAX_INPUT_BYTES,
                 defines: tuple[str, ...] = ()) -> None:
        self.library = build_library(Path(tokenizer_dir), max_input_bytes, defines)
        lib = ctypes.CDLL(str(self.library))
        for name in ("tok_encode", "tok_encode_tail"):
            f = getattr(lib, name)
            f.restype = ctypes.c_size_t
            f.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int32),
                          ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(_Info)]
        lib.tok_normalize.restype = ctypes.c_size_t
        lib.tok_normalize.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                      ctypes.c_size_t, ctypes.c_bool, ctypes.POINTER(ctypes.c_size_t)]
        lib.tok_work_size.restype = lib.tok_max_input_bytes.restype = ctypes.c_size_t
        lib.tok_space_id.restype = ctypes.c_int32
        lib.tok_no_verdict_reason.restype = ctypes.c_char_p
        lib.tok_no_verdict_reason.argtypes = [ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                              ctypes.c_int32]
        self._lib = lib
        self.max_input_bytes = int(lib.tok_max_input_bytes())
        self._work = ctypes.create_string_buffer(int(lib.tok_work_size()))
        self._ids = (ctypes.c_int32 * (self.max_input_bytes + 1))()

    def encode_info(self, data: bytes, max_ids: int | None = None, tail: bool = False) -> Encoded:
        """Ids of UTF-8 ``data`` with the count and the input bytes used (see tokenizer.h)."""
        cap = len(self._ids) if max_ids is None else min(max_ids, len(self._ids))
        info = _Info()
        f = self._lib.tok_encode_tail if tail else self._lib.tok_encode
        n = f(data, len(data), self._ids, cap, self._work, ctypes.byref(info))
        return Encoded(list(self._ids[:n]), int(info.n_ids), int(info.input_bytes_used))

    def encode_bytes(self, data: bytes, max_ids: int | None = None) -> list[int]:
        """Ids of raw bytes, as Python's ``encode(data.decode("utf-8", "replace"))[:max_ids]``."""
        return self.encode_info(data, max_ids).ids

    def encode(self, text: str, max_ids: int | None = None) -> list[int]:
        """Ids of ``text`` (head-truncated to ``max_ids`` when given)."""
        return self.encode_bytes(text.encode("utf-8"), max_ids)

    @property
    def space_id(self) -> int:
        """``tok_space_id``: id of the bare ``▁`` piece (``Tokenizer.space_id``)."""
        return int(self._lib.tok_space_id())

    def no_verdict_reason(self, ids: list[int], space_id: int | None = None) -> str | None:
        """``tok_no_verdict_reason`` (``pipeline.text.tokenizer.no_verdict_reason`` in C)."""
        arr = (ctypes.c_int32 * max(len(ids), 1))(*ids)
        why = self._lib.tok_no_verdict_reason(arr, len(ids),
                                              self.space_id if space_id is None else space_id)
        return why.decode() if why is not None else None

    def normalize_bytes(self, data: bytes, stopwords: bool = False) -> bytes:
        """``tok_normalize``: the tables' normalization spec (+ stopword removal) of raw bytes."""
        out = ctypes.create_string_buffer(3 * len(data) + 1)
        used = ctypes.c_size_t()
        n = self._lib.tok_normalize(data, len(data), out, len(out), stopwords, ctypes.byref(used))
        return out.raw[:n]
