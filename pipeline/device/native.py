"""The firmware itself on this machine: its C/C++ sources linked with the TFLM and esp-nn sources.

``python -m pipeline.predict MODEL_DIR INPUT --runtime firmware`` and ``python -m pipeline.console
MODEL_DIR --sim`` run it; ``python -m pipeline.bench MODEL_DIR`` measures it (:mod:`pipeline.device.bench`).

``firmware/host/CMakeLists.txt`` builds everything in ``firmware/src`` but ``main.c`` (the
ESP-IDF entry point) against esp-tflite-micro 1.3.7 and esp-nn 1.2.3 (default
``../shared/vendor/``; ``TINYSENT_TFLM_DIR`` / ``TINYSENT_ESP_NN_DIR`` or the ``tflm_dir`` /
``esp_nn_dir`` arguments point it elsewhere, e.g. at ``firmware/managed_components/`` after a
first ``pio run``), in two kernel flavours (``esp_nn``: what ESP32 / ESP32-C3 run; ``reference``:
upstream TFLM kernels), with ``firmware/host/sent_host.cc`` standing in for ``main.c``'s UART loop.

Targets: ``native`` (the host C/C++ compilers, ``CC``/``CXX`` or gcc/g++) and ``riscv32``
(``python -m ziglang c++ -target riscv32-linux-musl``, run under ``qemu-riscv32``). The
generated sources of MODEL_DIR come from ``pipeline.device.firmware.export_firmware``; a build is cached
under ``build/firmware/<hash of sources, model files and toolchain>/`` and the TFLM objects of
each target are compiled once (``build/firmware/cmake-<target>-<hash>/``).

The benchmark (riscv32 under QEMU) counts executed instructions (``qemu-riscv32 -singlestep -d
exec,nochain``: one log line per instruction) per token for the tokenizer, the step loop and the
head, and per function (hence per TFLM operator) in the step loop; it bisects the smallest
32-bit arena each model builds and runs in, and splits the code size (``.text``/``.rodata`` from
the linker map) into TFLM + esp-nn, firmware code, model arrays and tokenizer tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.device.firmware import export_firmware

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "firmware" / "src"
HOST = ROOT / "firmware" / "host"
VENDOR = ROOT.parent / "shared" / "vendor"
DEFAULT_TFLM_DIR = VENDOR / "esp-tflite-micro-1.3.7"
DEFAULT_ESP_NN_DIR = VENDOR / "esp-nn-1.2.3"
TARGETS = ("native", "riscv32")
KERNELS = ("esp_nn", "reference")
PORTABLE_SOURCES = ("console.c", "console.h", "sentiment.c", "sentiment.h", "tokenizer.c",
                    "tokenizer.h", "tokenizer_tables.h", "model_data.h", "tflm_model.cc",
                    "tflm_model.h", "gru_step.c", "gru_step.h", "gru_op.cc", "gru_op.h")
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
    """The generators of the firmware sources (a change rebuilds)."""
    return b"".join((ROOT / "pipeline" / m).read_bytes()
                    for m in ("device/firmware.py", "text/ctables.py"))


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
    reason: list[str | None]  # why predict gives no verdict (its wording), None when it judges


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
                       tokens_total=np.array([int(r[4]) for r in rows]),
                       reason=[r[5] or None for r in rows])


def load_predictor(model_dir: Path, target: str = "native", kernels: str = "esp_nn"):
    """``pipeline.predict``-style function: review strings -> float32 P(positive)."""
    def firmware_predict(texts: Sequence[str]) -> np.ndarray:
        return predict(model_dir, list(texts), target, kernels).p

    build(model_dir, target)  # build (or fail) before the reviews are read
    return firmware_predict


@dataclass(frozen=True)
class Result:
    label: str  # "positive" | "negative" (the model's, also when reason is set)
    p: float  # P(positive), a float32 value
    tokens: int
    tokens_total: int
    ms: int = 0
    reason: str | None = None  # why predict gives no verdict (its wording), or None


class FirmwareDevice:
    """The firmware's console in a subprocess (sent_host console --framed): ``start()`` the
    banner and first prompt, ``feed(bytes)`` what the board prints for those input bytes,
    ``classify(bytes)`` the console's answer for one review; ``ended`` once a ``quit`` ended the
    session (the process exits). Same interface as ``pipeline.device.console.SimDevice``.
    The process runs in its own session, so that Ctrl-C typed in the terminal reaches only
    Python (which hands it to the console as the Ctrl-C byte)."""

    def __init__(self, model_dir: Path, echo: bool = False, crlf: bool = False,
                 target: str = "native", kernels: str = "esp_nn") -> None:
        self.build = build(Path(model_dir), target)
        self.kernels = kernels
        args = [*self.build.command(kernels), "console", "--framed"]
        args += ["--echo"] if echo else []
        args += ["--crlf"] if crlf else []
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        self.ended = False
        self._banner = self._read_record()
        self._started = False

    def _read_record(self) -> bytes:
        assert self._proc.stdout is not None
        header = self._proc.stdout.readline()
        if not header.endswith(b"\n"):
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"the firmware process ended (rc {self._proc.poll()}): {err[-2000:]}")
        fields = header.split()  # b"<n>", or b"<n> quit" for the last record of a session
        n = int(fields[0])
        self.ended = fields[1:] == [b"quit"]
        data = self._proc.stdout.read(n)
        if len(data) != n:
            raise RuntimeError("the firmware process ended mid-record")
        return data

    def start(self) -> bytes:
        self._started = True
        return self._banner

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""  # as console_feed after a quit
        assert self._proc.stdin is not None
        self._proc.stdin.write(str(len(data)).encode() + b"\n" + data)
        self._proc.stdin.flush()
        return self._read_record()

    def classify(self, text: bytes) -> Result:
        proc = subprocess.run([*self.build.command(self.kernels), "batch"], input=_records([text]),
                              capture_output=True)
        line = proc.stdout.decode().rstrip("\n")
        if proc.returncode != 0 or not line or line.startswith("error"):
            raise RuntimeError(f"console_classify failed: {proc.stderr.decode()[-2000:]}")
        r = line.split("\t")
        return Result(r[0], float(np.float32(float(r[1]))), int(r[3]), int(r[4]), reason=r[5] or None)

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
            kernels: str = "esp_nn", stderr: BinaryIO | None = None) -> int:
    """``pipeline.console --sim`` on the firmware executable: one review per stdin line (a CR
    inside a line is a space), output to ``stdout``, until ``quit``/``exit`` or the end of stdin;
    Ctrl-C in a terminal drops the line (:func:`pipeline.device.console.serve_lines`)."""
    from pipeline.device.console import serve_lines

    with FirmwareDevice(model_dir, echo=False, crlf=False, target=target, kernels=kernels) as dev:
        return serve_lines(dev, stdin, stdout, stderr)


# ----------------------------------------------------------------------------- QEMU measurements
