"""The firmware itself on this machine: its C/C++ sources linked with the TFLM and esp-nn sources.

    python -m pipeline.native predict MODEL_DIR INPUT [--target native|riscv32] [--kernels esp_nn]
    python -m pipeline.native console MODEL_DIR [--target ...]        # what pipeline.console --sim runs
    python -m pipeline.native bench MODEL_DIR [--kernels esp_nn reference] [--out FILE.json]

``firmware/host/CMakeLists.txt`` builds everything in ``firmware/src`` but ``main.c`` (the
ESP-IDF entry point) against esp-tflite-micro 1.3.7 and esp-nn 1.2.3 (default
``../shared/vendor/``; ``TINYSENT_TFLM_DIR`` / ``TINYSENT_ESP_NN_DIR`` or the ``tflm_dir`` /
``esp_nn_dir`` arguments point it elsewhere, e.g. at ``firmware/managed_components/`` after a
first ``pio run``), in two kernel flavours (``esp_nn``: what ESP32 / ESP32-C3 run; ``reference``:
upstream TFLM kernels), with ``firmware/host/sent_host.cc`` standing in for ``main.c``'s UART loop.

Targets: ``native`` (the host C/C++ compilers, ``CC``/``CXX`` or gcc/g++) and ``riscv32``
(``python -m ziglang c++ -target riscv32-linux-musl``, run under ``qemu-riscv32``). The
generated sources of MODEL_DIR come from ``pipeline.export.export_firmware``; a build is cached
under ``build/firmware/<hash of sources, model files and toolchain>/`` and the TFLM objects of
each target are compiled once (``build/firmware/cmake-<target>-<hash>/``).

The benchmark (riscv32 under QEMU) counts executed instructions (``qemu-riscv32 -singlestep -d
exec,nochain``: one log line per instruction) per token for the tokenizer, the step loop and the
head, and per function (hence per TFLM operator) in the step loop; it bisects the smallest
32-bit arena each model builds and runs in, and splits the code size (``.text``/``.rodata`` from
the linker map) into TFLM + esp-nn, firmware code, model arrays and tokenizer tables.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "src"
HOST = ROOT / "firmware" / "host"
VENDOR = ROOT.parent / "shared" / "vendor"
DEFAULT_TFLM_DIR = VENDOR / "esp-tflite-micro-1.3.7"
DEFAULT_ESP_NN_DIR = VENDOR / "esp-nn-1.2.3"
TARGETS = ("native", "riscv32")
KERNELS = ("esp_nn", "reference")
PORTABLE_SOURCES = ("console.c", "console.h", "sentiment.c", "sentiment.h", "tokenizer.c",
                    "tokenizer.h", "tokenizer_tables.h", "model_data.h", "tflm_model.cc",
                    "tflm_model.h")
MODEL_FILES = ("step.tflite", "head.tflite", "quant.json", "tokenizer.model", "tokenizer.json")
ZIG_TARGET = ["-target", "riscv32-linux-musl", "-mcpu=generic_rv32+m+a+c"]
QEMU = "qemu-riscv32"
PROMPT = b"> "


class NativeBuildError(RuntimeError):
    """The native firmware could not be built (missing tools or sources, compile error)."""


# ----------------------------------------------------------------------------- tools


def cache_root() -> Path:
    """``build/firmware`` in the repository (git-ignored; ``TINYSENT_FIRMWARE_CACHE`` overrides),
    or a temp folder when not writable."""
    root = Path(os.environ.get("TINYSENT_FIRMWARE_CACHE") or ROOT / "build" / "firmware")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / "tinysent-firmware"
        root.mkdir(parents=True, exist_ok=True)
    return root


def zig_binary() -> Path | None:
    """The ``zig`` executable of the ``ziglang`` wheel (``pip install ziglang``), or None."""
    try:
        import ziglang  # type: ignore[import-not-found]
    except ImportError:
        return None
    exe = Path(ziglang.__file__).parent / "zig"
    return exe if exe.exists() else None


def qemu_binary() -> str | None:
    return shutil.which(QEMU)


def missing_tools(target: str) -> list[str]:
    """What this machine lacks to build (and run) ``target``; [] when nothing."""
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if target == "native":
        cc, cxx = os.environ.get("CC", "gcc"), os.environ.get("CXX", "g++")
        missing += [t for t in (cc, cxx) if shutil.which(t) is None]
    else:
        if zig_binary() is None:
            missing.append("ziglang (pip install ziglang)")
        if qemu_binary() is None:
            missing.append(f"{QEMU} (apt-get install qemu-user)")
    return missing


def _tool_id(target: str) -> str:
    """Version line of the compilers of ``target`` (part of the cache keys)."""
    if target == "native":
        cmds = [[os.environ.get("CC", "gcc"), "--version"], [os.environ.get("CXX", "g++"), "--version"]]
    else:
        zig = zig_binary()
        if zig is None:
            raise NativeBuildError("riscv32 needs zig: .venv/bin/pip install ziglang")
        cmds = [[str(zig), "version"]]
    out = []
    for cmd in cmds:
        try:
            out.append(subprocess.run(cmd, capture_output=True, text=True).stdout.split("\n")[0])
        except OSError as e:
            raise NativeBuildError(f"{cmd[0]}: {e}") from e
    return f"{target}: " + " | ".join(out)


def _hash(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _dirs(tflm_dir: Path | None, esp_nn_dir: Path | None) -> tuple[Path, Path]:
    tflm = Path(tflm_dir or os.environ.get("TINYSENT_TFLM_DIR") or DEFAULT_TFLM_DIR).resolve()
    esp_nn = Path(esp_nn_dir or os.environ.get("TINYSENT_ESP_NN_DIR") or DEFAULT_ESP_NN_DIR).resolve()
    if not (tflm / "tensorflow" / "lite" / "micro" / "micro_interpreter.cc").exists():
        raise NativeBuildError(f"{tflm}: no esp-tflite-micro sources (see ../shared/vendor/README.md; "
                               "or firmware/managed_components/espressif__esp-tflite-micro after "
                               "a first `pio run`)")
    if not (esp_nn / "include" / "esp_nn.h").exists():
        raise NativeBuildError(f"{esp_nn}: no esp-nn sources")
    return tflm, esp_nn


def _riscv32_toolchain(dest: Path) -> Path:
    """A CMake toolchain file for zig's riscv32-linux-musl (wrapper scripts next to it)."""
    zig = zig_binary()
    if zig is None:
        raise NativeBuildError("riscv32 needs zig: .venv/bin/pip install ziglang")
    dest.mkdir(parents=True, exist_ok=True)
    target = " ".join(ZIG_TARGET)
    # C++ without libc++/libc++abi (TFLM needs four runtime symbols: shim/cxx_runtime.cc), so
    # that zig does not compile them on first use; also for CMake's compiler checks
    for name, cmd in (("zcc", f"cc {target}"), ("zcxx", f"c++ {target}"), ("zar", "ar"),
                      ("zranlib", "ranlib")):
        script = dest / name
        link_only = ""
        if name == "zcxx":  # -nostdlib++ when linking only: it also drops the libc++ headers
            link_only = (f'for a in "$@"; do [ "$a" = "-c" ] && exec "{zig}" {cmd} "$@"; done\n'
                         f'exec "{zig}" {cmd} -nostdlib++ "$@"\n')
        script.write_text(f'#!/bin/sh\n{link_only}exec "{zig}" {cmd} "$@"\n')
        script.chmod(0o755)
    toolchain = dest / "riscv32.cmake"
    toolchain.write_text(f"""set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv32)
set(CMAKE_C_COMPILER "{dest / 'zcc'}")
set(CMAKE_CXX_COMPILER "{dest / 'zcxx'}")
set(CMAKE_AR "{dest / 'zar'}" CACHE FILEPATH "" FORCE)
set(CMAKE_RANLIB "{dest / 'zranlib'}" CACHE FILEPATH "" FORCE)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(NO_CXX_RUNTIME ON CACHE BOOL "" FORCE)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
""")
    return toolchain


# ----------------------------------------------------------------------------- build


def prepare_sources(model_dir: Path, out_root: Path) -> dict:
    """``out_root/src``: export_firmware's generated files for ``model_dir`` + the hand-written
    sources of ``firmware/src`` the host build compiles (not main.c). Returns the export sizes."""
    from pipeline.export import export_firmware

    sizes = export_firmware(Path(model_dir), Path(out_root))
    for name in PORTABLE_SOURCES:
        shutil.copyfile(SRC / name, Path(out_root) / "src" / name)
    return sizes


@dataclass(frozen=True)
class Build:
    """A built firmware for one model: ``exe[kernels]``, the sources and the linker maps."""
    dir: Path
    target: str
    exe: dict[str, Path]
    src: Path
    tree: Path  # the CMake build tree (TFLM objects and static libraries)
    seconds: float = 0.0  # time of the build (0 when it came from the cache)

    def command(self, kernels: str = "esp_nn") -> list[str]:
        """How to run the executable (under qemu-riscv32 for riscv32)."""
        exe = str(self.exe[kernels])
        if self.target == "riscv32":
            qemu = qemu_binary()
            if qemu is None:
                raise NativeBuildError(f"{QEMU} not found (apt-get install qemu-user)")
            return [qemu, exe]
        return [exe]


def _export_source() -> bytes:
    import pipeline.export as E

    return Path(E.__file__).read_bytes()


def build(model_dir: Path, target: str = "native", *, tflm_dir: Path | None = None,
          esp_nn_dir: Path | None = None, jobs: int | None = None, verbose: bool = False) -> Build:
    """Build (or take from the cache) the firmware for ``model_dir`` on ``target``, both kernels."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    lacking = [t for t in missing_tools(target) if not t.startswith(QEMU)]
    if lacking:
        raise NativeBuildError(f"cannot build the {target} firmware: missing {', '.join(lacking)}")
    model_dir = Path(model_dir)
    tflm, esp_nn = _dirs(tflm_dir, esp_nn_dir)
    tool = _tool_id(target)
    host_files = [HOST / "CMakeLists.txt", HOST / "sent_host.cc", *sorted((HOST / "shim").iterdir())]
    key = _hash([tool.encode(), str(tflm).encode(), str(esp_nn).encode(),
                 str(model_dir.resolve()).encode(),  # the generated sources name the folder
                 *[(model_dir / f).read_bytes() for f in MODEL_FILES],
                 *[(SRC / s).read_bytes() for s in PORTABLE_SOURCES],
                 *[p.read_bytes() for p in host_files], _export_source()])
    out = cache_root() / f"{target}-{key}"
    exes = {k: out / f"sent_host_{k}" for k in KERNELS}
    # one CMake tree per target and TFLM folder: the TFLM objects are compiled once and reused
    # by every model (CMake rebuilds only what a new FIRMWARE_SRC changes)
    tree = cache_root() / f"cmake-{target}-{_hash([tool.encode(), str(tflm).encode(), str(esp_nn).encode()])}"
    if all(p.exists() for p in exes.values()):
        return Build(out, target, exes, out / "src", tree)
    t0 = time.perf_counter()
    with _locked(tree.with_suffix(".lock")):
        if all(p.exists() for p in exes.values()):
            return Build(out, target, exes, out / "src", tree)
        work = Path(tempfile.mkdtemp(prefix=".src-", dir=cache_root()))
        try:
            prepare_sources(model_dir, work)
            src = work / "src"
            cfg = ["cmake", "-S", str(HOST), "-B", str(tree), f"-DTFLM_DIR={tflm}",
                   f"-DESP_NN_DIR={esp_nn}", f"-DFIRMWARE_SRC={tree / 'fwsrc'}",
                   "-DKERNELS=esp_nn;reference", "-DCMAKE_BUILD_TYPE=Release"]
            if target == "riscv32":
                cfg.append(f"-DCMAKE_TOOLCHAIN_FILE={_riscv32_toolchain(tree.parent / 'zig-riscv32')}")
            else:
                env_cc = os.environ.get("CC", "gcc"), os.environ.get("CXX", "g++")
                cfg += [f"-DCMAKE_C_COMPILER={shutil.which(env_cc[0])}",
                        f"-DCMAKE_CXX_COMPILER={shutil.which(env_cc[1])}"]
            # the sources are compiled from a fixed folder so that object paths stay the same;
            # a file whose bytes did not change keeps its time stamp (no recompilation)
            fwsrc = tree / "fwsrc"
            fwsrc.mkdir(parents=True, exist_ok=True)
            for p in src.iterdir():
                dst = fwsrc / p.name
                if not dst.exists() or dst.read_bytes() != p.read_bytes():
                    shutil.copyfile(p, dst)
            for p in fwsrc.iterdir():
                if not (src / p.name).exists():
                    p.unlink()
            for cmd in (cfg, ["cmake", "--build", str(tree), "-j", str(jobs or os.cpu_count() or 2)]):
                proc = subprocess.run(cmd, capture_output=not verbose, text=True)
                if proc.returncode != 0:
                    raise NativeBuildError(f"{' '.join(cmd)} failed:\n"
                                           f"{(proc.stdout or '')[-6000:]}\n{(proc.stderr or '')[-6000:]}")
            stage = Path(tempfile.mkdtemp(prefix=".out-", dir=cache_root()))
            for k in KERNELS:
                shutil.copy2(tree / f"sent_host_{k}", stage / f"sent_host_{k}")
                if (tree / f"sent_host_{k}.map").exists():
                    shutil.copy2(tree / f"sent_host_{k}.map", stage / f"sent_host_{k}.map")
            os.replace(src, stage / "src")
            if out.exists():
                shutil.rmtree(out)
            os.replace(stage, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Build(out, target, exes, out / "src", tree, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- running it


def _records(texts: Iterable[bytes]) -> bytes:
    return b"".join(str(len(t)).encode() + b"\n" + t for t in texts)


@dataclass
class Predictions:
    """One entry per review, in order: what the firmware's console_classify answered."""
    label: list[str]
    p: np.ndarray  # float32 P(positive), exactly the firmware's float
    p4: list[str]  # the console's 4-decimal rendering
    tokens: np.ndarray  # ids the model read
    tokens_total: np.ndarray  # ids of the whole text


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def predict(model_dir: Path, texts: Sequence[str | bytes], target: str = "native",
            kernels: str = "esp_nn", timeout: float | None = None, **build_kw: Any) -> Predictions:
    """Run ``texts`` through the firmware's ``console_classify`` (batch mode of sent_host)."""
    b = build(model_dir, target, **build_kw)
    proc = subprocess.run([*b.command(kernels), "batch"], input=_records(map(_as_bytes, texts)),
                          capture_output=True, timeout=timeout)
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0 or len(lines) != len(texts):
        raise RuntimeError(f"sent_host batch failed (rc {proc.returncode}, {len(lines)} of "
                           f"{len(texts)} answers): {proc.stderr.decode(errors='replace')[-2000:]}")
    bad = [i for i, line in enumerate(lines) if line.startswith("error")]
    if bad:
        raise RuntimeError(f"the firmware failed on review {bad[0]}: {proc.stderr.decode()[-2000:]}")
    rows = [line.split("\t") for line in lines]
    return Predictions(label=[r[0] for r in rows], p=np.array([float(r[1]) for r in rows], np.float32),
                       p4=[r[2] for r in rows], tokens=np.array([int(r[3]) for r in rows]),
                       tokens_total=np.array([int(r[4]) for r in rows]))


def load_predictor(model_dir: Path, target: str = "native", kernels: str = "esp_nn"):
    """``pipeline.predict``-style function: review strings -> float32 P(positive)."""
    def firmware_predict(texts: Sequence[str]) -> np.ndarray:
        return predict(model_dir, list(texts), target, kernels).p

    build(model_dir, target)  # build (or fail) before the reviews are read
    return firmware_predict


@dataclass(frozen=True)
class Result:
    label: str  # "positive" | "negative"
    p: float  # P(positive), a float32 value
    tokens: int
    tokens_total: int
    ms: int = 0


class FirmwareDevice:
    """The firmware's console in a subprocess (sent_host console --framed): ``start()`` the
    banner and first prompt, ``feed(bytes)`` what the board prints for those input bytes,
    ``classify(bytes)`` the console's answer for one review. Same interface as
    ``pipeline.console.SimDevice``."""

    def __init__(self, model_dir: Path, echo: bool = False, crlf: bool = False,
                 target: str = "native", kernels: str = "esp_nn") -> None:
        self.build = build(Path(model_dir), target)
        self.kernels = kernels
        args = [*self.build.command(kernels), "console", "--framed"]
        args += ["--echo"] if echo else []
        args += ["--crlf"] if crlf else []
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._banner = self._read_record()
        self._started = False

    def _read_record(self) -> bytes:
        assert self._proc.stdout is not None
        header = self._proc.stdout.readline()
        if not header.endswith(b"\n"):
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"the firmware process ended (rc {self._proc.poll()}): {err[-2000:]}")
        n = int(header)
        data = self._proc.stdout.read(n)
        if len(data) != n:
            raise RuntimeError("the firmware process ended mid-record")
        return data

    def start(self) -> bytes:
        self._started = True
        return self._banner

    def feed(self, data: bytes) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.write(str(len(data)).encode() + b"\n" + data)
        self._proc.stdin.flush()
        return self._read_record()

    def classify(self, text: bytes) -> Result:
        proc = subprocess.run([*self.build.command(self.kernels), "batch"], input=_records([text]),
                              capture_output=True)
        line = proc.stdout.decode().strip()
        if proc.returncode != 0 or not line or line.startswith("error"):
            raise RuntimeError(f"console_classify failed: {proc.stderr.decode()[-2000:]}")
        r = line.split("\t")
        return Result(r[0], float(np.float32(float(r[1]))), int(r[3]), int(r[4]))

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> FirmwareDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def run_sim(model_dir: Path, stdin: BinaryIO, stdout: BinaryIO, target: str = "native",
            kernels: str = "esp_nn") -> int:
    """``pipeline.console --sim`` on the firmware executable: lines from ``stdin``, output to
    ``stdout`` (exactly ``pipeline.console.run_sim``'s framing)."""
    with FirmwareDevice(model_dir, echo=False, crlf=False, target=target, kernels=kernels) as dev:
        stdout.write(dev.start())
        stdout.flush()
        for line in iter(stdin.readline, b""):
            if not line.endswith((b"\n", b"\r")):
                line += b"\n"
            stdout.write(dev.feed(line))
            stdout.flush()
        stdout.write(b"\n")
        stdout.flush()
    return 0


# ----------------------------------------------------------------------------- QEMU measurements


def _demangle(names: Sequence[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return list(names)
    proc = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True)
    out = proc.stdout.split("\n")
    return out[:len(names)] if proc.returncode == 0 and len(out) >= len(names) else list(names)


@dataclass
class Count:
    instructions: int
    by_function: dict[str, int] = field(default_factory=dict)
    stdout: str = ""


def count_instructions(cmd: Sequence[str], stdin: bytes = b"", by_function: bool = False,
                       timeout: float = 1800) -> Count:
    """Executed guest instructions of ``cmd`` (a riscv32 executable and its arguments) under
    ``qemu-riscv32 -singlestep -d exec,nochain`` (one log line per instruction, read from a FIFO).
    ``by_function``: also per function symbol (qemu names the symbol of each PC)."""
    qemu = qemu_binary()
    if qemu is None:
        raise NativeBuildError(f"{QEMU} not found (apt-get install qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "exec.log"
        os.mkfifo(fifo)
        (Path(tmp) / "stdin").write_bytes(stdin)
        with open(Path(tmp) / "stdin", "rb") as fin, open(Path(tmp) / "stdout", "wb") as fout, \
                open(Path(tmp) / "stderr", "w+b") as ferr:
            proc = subprocess.Popen([qemu, "-singlestep", "-d", "exec,nochain", "-D", str(fifo),
                                     *cmd], stdin=fin, stdout=fout, stderr=ferr)
            killer = threading.Timer(timeout, proc.kill)
            killer.start()

            def unblock() -> None:  # qemu died before opening the log: end our open() of it
                proc.wait()
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

            threading.Thread(target=unblock, daemon=True).start()
            total = 0
            counts: collections.Counter[bytes] = collections.Counter()
            try:
                with open(fifo, "rb", buffering=0) as log:
                    rest = b""
                    while True:
                        chunk = log.read(1 << 22)
                        if not chunk:
                            break
                        if by_function:
                            lines = (rest + chunk).split(b"\n")
                            rest = lines.pop()
                            counts.update(lines)
                        else:
                            total += chunk.count(b"\n")  # every line is "Trace ...": one instruction
                    if by_function and rest:
                        counts[rest] += 1
                proc.wait()
                ferr.seek(0)
                err = ferr.read()
            finally:
                killer.cancel()
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} under qemu failed (rc {proc.returncode}): "
                                   f"{err.decode(errors='replace')[-2000:]}")
        out = (Path(tmp) / "stdout").read_text(errors="replace")
    if by_function:
        return Count(sum(counts.values()), _by_function(Path(cmd[0]), counts), out)
    return Count(total, {}, out)


_TRACE_PC = re.compile(rb"\[[0-9a-f]+/([0-9a-f]+)/")


def _by_function(exe: Path, counts: collections.Counter[bytes]) -> dict[str, int]:
    """Instruction counts per function of ``exe`` from qemu's exec log lines (PC -> symbol;
    functions local to a file are named ``name [file]``: anonymous-namespace kernels share names)."""
    import bisect

    funcs = _elf_functions(exe.read_bytes())
    starts = [f[0] for f in funcs]
    raw: collections.Counter[int] = collections.Counter()
    for line, n in counts.items():
        m = _TRACE_PC.search(line)
        if not m:
            continue
        pc = int(m.group(1), 16)
        i = bisect.bisect_right(starts, pc) - 1
        raw[i if i >= 0 and pc < funcs[i][0] + funcs[i][1] else -1] += n
    names = _demangle([funcs[i][2] for i in raw if i >= 0])
    pretty = dict(zip([i for i in raw if i >= 0], names, strict=True))
    out: collections.Counter[str] = collections.Counter()
    for i, n in raw.items():
        if i < 0:
            out["?"] += n
        else:
            out[pretty[i] + (f" [{funcs[i][3]}]" if funcs[i][3] else "")] += n
    return dict(out.most_common())


_OPERATORS = (  # (bucket, pattern on "demangled name [file]"), first match wins
    ("requantization (shared by kernels)", r"MultiplyByQuantizedMultiplier"),
    ("FULLY_CONNECTED", r"FullyConnected|fully_connected"),
    ("ADD/SUB/MUL broadcast helpers", r"ProcessBroadcastShapes|ReduceDimensionsForBroadcast"),
    ("ADD", r"\bAdd\w*[<(]|AddFunc|EvalAdd|AddEval|esp_nn_add|\[add(_common)?\.cc\]"),
    ("SUB", r"\bSub\w*[<(]|SubElementwise|EvalSub|SubEval|\[sub(_common)?\.cc\]"),
    ("MUL", r"\bMul\w*[<(]|EvalMul|MulEval|esp_nn_mul|\[mul(_common)?\.cc\]"),
    ("CAST", r"Cast\w*[<(]|\[cast\.cc\]"),
    ("GATHER", r"Gather\w*[<(]|\[gather\.cc\]"),
    ("SPLIT", r"Split\w*[<(]|\[split\.cc\]"),
    ("UNPACK", r"Unpack\w*[<(]|\[unpack\.cc\]"),
    ("LOGISTIC", r"Logistic\w*[<(]|esp_nn_logistic|\[logistic(_common)?\.cc\]"),
    ("firmware", r"\[tflm_model\.cc\]|^(sent_|console_|tok_|main$)|\[(console|sentiment|tokenizer)\.c\]"),
    ("TFLM interpreter", r"^(void |bool |int |unsigned |\w+\* )?(tflite|flatbuffers)::"),
    ("esp-nn other", r"^esp_nn"),
)


def operator_breakdown(by_function: dict[str, int]) -> dict[str, int]:
    """Instructions per TFLM operator (its kernel functions, by name or source file), the
    interpreter's own work, the firmware, and the C library (memcpy, memset, ...)."""
    out: collections.Counter[str] = collections.Counter()
    for name, n in by_function.items():
        for op, pat in _OPERATORS:
            if re.search(pat, name):
                out[op] += n
                break
        else:
            out["C library / runtime"] += n
    return dict(out.most_common())


def _bench_text() -> bytes:
    """About 1,900 bytes of ordinary review text (under the tokenizer's 2,048-byte input)."""
    base = ("I bought this charger for my phone and it works great. The cable is sturdy, it charges "
            "fast and the price was fair. After a month the plug got loose and it stopped working, "
            "so I returned it. Customer service was helpful and the replacement has been fine. ")
    return (base * 8)[:1900].encode()


def bench(model_dir: Path, kernels: Sequence[str] = ("esp_nn",), n_tokens: int = 128,
          by_function: bool = True, **build_kw: Any) -> dict:
    """Instructions on riscv32 (QEMU) per token: tokenizer / step loop / head, per
    ``n_tokens``-token review; the 32-bit arena minimum; code sizes."""
    b = build(model_dir, "riscv32", **build_kw)
    text = _bench_text()
    out: dict[str, Any] = {"model_dir": str(model_dir), "target": "riscv32 (qemu-riscv32, "
                           + " ".join(ZIG_TARGET) + ")", "n_tokens": n_tokens, "kernels": {}}
    for k in kernels:
        exe = [str(b.exe[k])]
        base = count_instructions([*exe, "bench", "none"], text).instructions
        tok = count_instructions([*exe, "bench", "tok"], text)
        n_ids = int(tok.stdout.split()[-1])
        head = count_instructions([*exe, "bench", "head"], text).instructions - base
        run = count_instructions([*exe, "bench", "run", str(n_tokens)], text, by_function=by_function)
        base_f = (count_instructions([*exe, "bench", "none"], text, by_function=True).by_function
                  if by_function else {})
        step_loop = run.instructions - base - head
        fig: dict[str, Any] = {
            "baseline_setup": base,
            "tokenizer_per_token": round((tok.instructions - base) / n_ids, 1),
            "tokenizer_text": {"bytes": len(text), "tokens": n_ids},
            "step_loop_per_token": round(step_loop / n_tokens, 1),
            "head": head,
            f"review_{n_tokens}_tokens_model": step_loop + head,
            f"review_{n_tokens}_tokens_with_tokenizer": step_loop + head
            + round((tok.instructions - base) / n_ids * n_tokens),
        }
        if by_function:
            diff = {f: run.by_function.get(f, 0) - base_f.get(f, 0) for f in run.by_function}
            diff = {f: n for f, n in sorted(diff.items(), key=lambda x: -x[1]) if n > 0}
            per_tok = {f: round(n / n_tokens, 1) for f, n in diff.items()}
            fig["run_per_token_by_function"] = dict(list(per_tok.items())[:40])
            fig["run_per_token_by_operator"] = {
                op: round(n / n_tokens, 1) for op, n in operator_breakdown(diff).items()}
        out["kernels"][k] = fig
    out["arena_min_32bit"] = arena_minimum(model_dir, **build_kw)
    out["code_size"] = code_size(b)
    return out


def _probe(cmd: list[str], step: int, head: int) -> bool:
    proc = subprocess.run([*cmd, "probe", str(step), str(head)], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode == 0 and proc.stdout.startswith("ok")


def arena_minimum(model_dir: Path, target: str = "riscv32", kernels: Sequence[str] = KERNELS,
                  **build_kw: Any) -> dict:
    """Smallest arena (multiple of 16 B) in which each model builds and runs one review, by
    bisection on ``target`` (riscv32: the 32-bit layout of the board), per kernel flavour."""
    b = build(model_dir, target, **build_kw)
    res: dict[str, Any] = {}
    for k in kernels:
        cmd = b.command(k)
        big = 1 << 16
        out = {}
        for which in ("step", "head"):
            lo, hi = 0, big  # lo fails (or is 0), hi works
            if not _probe(cmd, big, big):
                raise RuntimeError(f"{k}: the models do not run even in {big} B arenas")
            while hi - lo > 16:
                mid = (lo + hi) // 2 // 16 * 16
                ok = _probe(cmd, mid, big) if which == "step" else _probe(cmd, big, mid)
                lo, hi = (lo, mid) if ok else (mid, hi)
            out[which] = hi
        out["total"] = out["step"] + out["head"]
        res[k] = out
    return res


# ----------------------------------------------------------------------------- ELF sizes

_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 0x1, 0x2, 0x4
_SHT_SYMTAB, _SHT_NOBITS = 2, 8


def _elf_sections(data: bytes) -> tuple[str, list[dict]]:
    """(endianness + class format prefix, section headers with names) of an ELF file."""
    import struct

    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        fmt = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        fmt = end + "IIIIIIIIII"
    secs = []
    for i in range(shnum):
        name, typ, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
            fmt, data, shoff + i * shentsize)
        secs.append({"name_off": name, "type": typ, "flags": flags, "offset": off, "size": size,
                     "link": link, "entsize": entsize})
    strtab = secs[shstrndx]
    for sec in secs:
        o = strtab["offset"] + sec["name_off"]
        sec["name"] = data[o:data.index(b"\0", o)].decode()
    return ("64" if is64 else "32") + end, secs


def _elf_symbols(data: bytes, with_value: bool = False) -> list[tuple]:
    """Defined function/object symbols of an ELF file: (name, size, section index[, value])."""
    import struct

    kind, secs = _elf_sections(data)
    end = kind[2]
    out = []
    for sec in secs:
        if sec["type"] != _SHT_SYMTAB:
            continue
        strs = secs[sec["link"]]
        for i in range(sec["size"] // sec["entsize"]):
            o = sec["offset"] + i * sec["entsize"]
            if kind.startswith("64"):
                name, info, other, shndx, value, size = struct.unpack_from(end + "IBBHQQ", data, o)
            else:
                name, value, size, info, other, shndx = struct.unpack_from(end + "IIIBBH", data, o)
            if shndx == 0 or shndx >= 0xFF00 or info & 0xF not in (1, 2):  # OBJECT / FUNC only
                continue
            so = strs["offset"] + name
            name_s = data[so:data.index(b"\0", so)].decode(errors="replace")
            out.append((name_s, size, shndx, value) if with_value else (name_s, size, shndx))
    return out


def _elf_functions(data: bytes) -> list[tuple[int, int, str, str]]:
    """Function symbols of an executable: (address, size, name, source file of local ones)."""
    import struct

    kind, secs = _elf_sections(data)
    end = kind[2]
    out = []
    for sec in secs:
        if sec["type"] != _SHT_SYMTAB:
            continue
        strs = secs[sec["link"]]
        current_file = ""
        for i in range(sec["size"] // sec["entsize"]):
            o = sec["offset"] + i * sec["entsize"]
            if kind.startswith("64"):
                name, info, other, shndx, value, size = struct.unpack_from(end + "IBBHQQ", data, o)
            else:
                name, value, size, info, other, shndx = struct.unpack_from(end + "IIIBBH", data, o)
            so = strs["offset"] + name
            text = data[so:data.index(b"\0", so)].decode(errors="replace")
            if info & 0xF == 4:  # STT_FILE: the local symbols that follow are this file's
                current_file = text
            elif info & 0xF == 2 and size:
                out.append((value & ~1, size, text, current_file if info >> 4 == 0 else ""))
    return sorted(out)


def _ar_members(data: bytes) -> Iterable[bytes]:
    """The object files of a static library (ar archive)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        size = int(header[48:58].decode().strip())
        name = header[:16].decode(errors="replace").strip()
        body = data[pos + 60:pos + 60 + size]
        if name.startswith("#1/"):  # BSD long name inside the body
            n = int(name[3:])
            body = body[n:]
        if body[:4] == b"\x7fELF":
            yield body
        pos += 60 + size + (size & 1)


_LIB_CATEGORY = {  # static library of firmware/host/CMakeLists.txt -> code size category
    "libtflm_core.a": "tflm_esp_nn", "libtflm_kernels_common.a": "tflm_esp_nn",
    "libtflm_kernels_esp_nn.a": "tflm_esp_nn", "libtflm_kernels_reference.a": "tflm_esp_nn",
    "libesp_nn.a": "tflm_esp_nn", "libfirmware.a": "firmware_code",
    "libfirmware_model.a": "model_arrays", "libfirmware_tables.a": "tokenizer_tables",
}


def _section_kind(sec: dict) -> str | None:
    """text / rodata / data / bss for the sections that hold code and data; other for the rest
    of the loaded image (unwind tables, relocations, notes), None for what is not loaded."""
    if not sec["flags"] & _SHF_ALLOC:
        return None
    name = sec["name"]
    for kind, prefixes in (("text", (".text", ".init", ".fini", ".plt")),
                           ("rodata", (".rodata", ".srodata")),
                           ("data", (".data", ".sdata", ".init_array", ".fini_array", ".got")),
                           ("bss", (".bss", ".sbss"))):
        if name == prefixes[0] or name.startswith(prefixes):
            return kind
    return "other"


def code_size(b: Build, kernels: Sequence[str] = KERNELS) -> dict:
    """Bytes of ``.text`` / ``.rodata`` / ``.data`` / ``.bss`` in each linked executable, split by
    where each function or object symbol comes from: TFLM + esp-nn, the firmware's code
    (console, step loop, tokenizer, tflm_model.cc, op resolver, host shims), the model arrays,
    the tokenizer tables, and the rest (host driver, C/C++ runtime). ``unattributed`` is what
    has no sized symbol (string literals, constants pools, padding); ``total`` the sections."""
    category: dict[str, str] = {}
    if b.tree.is_dir():  # (its libraries: of the last model built there; same symbol names)
        for lib, cat in _LIB_CATEGORY.items():
            path = b.tree / lib
            if path.exists():
                for obj in _ar_members(path.read_bytes()):
                    for name, _, _ in _elf_symbols(obj):
                        category.setdefault(name, cat)
    res: dict[str, Any] = {}
    for k in kernels:
        data = b.exe[k].read_bytes()
        _, secs = _elf_sections(data)
        sizes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        seen: set[tuple[int, int]] = set()
        for name, size, shndx, value in _elf_symbols(data, with_value=True):
            kind = _section_kind(secs[shndx]) if shndx < len(secs) else None
            if (shndx, value) in seen:  # aliases (C1/C2 constructors, weak libc names)
                continue
            seen.add((shndx, value))
            if kind and kind != "other" and size:
                sizes[category.get(name, "runtime_and_driver")][kind] += size
        total: collections.Counter[str] = collections.Counter()
        for sec in secs:
            kind = _section_kind(sec)
            if kind:
                total[kind] += sec["size"]
        attributed: collections.Counter[str] = collections.Counter()
        for c in sizes.values():
            attributed.update(c)
        out = {cat: dict(c) for cat, c in sorted(sizes.items())}
        out["unattributed"] = {kind: total[kind] - attributed[kind] for kind in total
                               if kind != "other"}
        out["total"] = dict(total)
        res[k] = out
    return res


# ----------------------------------------------------------------------------- command line


def _read_texts(path: Path, split: str | None) -> list[str]:
    from pipeline.predict import read_input

    return [t for t, _ in read_input(path, split)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.native", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("build", "predict", "console", "bench", "arena"):
        p = sub.add_parser(name)
        p.add_argument("model_dir", type=Path)
        if name == "predict":
            p.add_argument("input", type=Path)
            p.add_argument("--split", choices=("train", "val", "test"))
            p.add_argument("--tsv", action="store_true",
                           help="label, exact p, 4-decimal p, tokens, total tokens per review")
        if name != "bench":
            p.add_argument("--target", choices=TARGETS, default="native")
        if name in ("predict", "console"):
            p.add_argument("--kernels", choices=KERNELS, default="esp_nn")
        if name == "bench":
            p.add_argument("--kernels", choices=KERNELS, nargs="+", default=list(KERNELS))
            p.add_argument("--tokens", type=int, default=128)
            p.add_argument("--no-functions", action="store_true")
            p.add_argument("--out", type=Path)
        p.add_argument("--tflm-dir", type=Path)
        p.add_argument("--esp-nn-dir", type=Path)
    args = ap.parse_args(argv)
    kw = {"tflm_dir": args.tflm_dir, "esp_nn_dir": args.esp_nn_dir}
    try:
        if args.cmd == "build":
            b = build(args.model_dir, args.target, verbose=True, **kw)
            print(json.dumps({"dir": str(b.dir), "exe": {k: str(v) for k, v in b.exe.items()},
                              "seconds": round(b.seconds, 1)}, indent=1))
        elif args.cmd == "predict":
            texts = _read_texts(args.input, args.split)
            pred = predict(args.model_dir, texts, args.target, args.kernels, **kw)
            for i in range(len(texts)):
                if args.tsv:
                    print(f"{pred.label[i]}\t{float(pred.p[i])!r}\t{pred.p4[i]}\t{pred.tokens[i]}\t"
                          f"{pred.tokens_total[i]}")
                else:
                    print(f"{pred.label[i]}\t{pred.p4[i]}")
        elif args.cmd == "console":
            return run_sim(args.model_dir, sys.stdin.buffer, sys.stdout.buffer, args.target,
                           args.kernels)
        elif args.cmd == "arena":
            print(json.dumps(arena_minimum(args.model_dir, args.target, **kw), indent=1))
        else:
            t0 = time.perf_counter()
            res = bench(args.model_dir, args.kernels, args.tokens, not args.no_functions, **kw)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            text = json.dumps(res, indent=1)
            if args.out:
                args.out.write_text(text + "\n")
            print(text)
    except (NativeBuildError, RuntimeError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = ["Build", "Count", "FirmwareDevice", "NativeBuildError", "Predictions", "Result",
           "arena_minimum", "bench", "build", "code_size", "count_instructions", "load_predictor",
           "missing_tools", "operator_breakdown", "predict", "prepare_sources", "run_sim"]

if __name__ == "__main__":
    sys.exit(main())
