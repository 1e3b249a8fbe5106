"""The firmware's serial console on the host (``--sim``), or a client for a real board (``--port``).

The CLI is ``python -m pipeline.console`` (:mod:`pipeline.console`). ``--sim`` is the device without
a board: the firmware's own C console, step loop and tokenizer (``firmware/src/console.c``,
``sentiment.c``, ``tokenizer.c``) built with gcc for the host and called through ctypes, with the
two int8 models run by the TFLM Python interpreter on the bytes parsed back from the generated C
arrays (``model_data.c``, written by ``pipeline.device.firmware.export_firmware`` for MODEL_DIR and
checked against the ``.tflite`` files). It reads lines from stdin and prints what the board would
print: the same prompts, the same ``positive 0.9297 tokens=57 ms=21`` replies (``ms`` is host time
here), ``help``, ``info`` and the same handling of bad input. Labels and probabilities are those of
``python -m pipeline.predict MODEL_DIR FILE --runtime tflm``, and so are the answers to reviews with
nothing to judge (``unknown no words to judge``, ``unknown no known words: ...``).

``--port`` sends each stdin line to a board running the firmware (pyserial, ``pip install
pyserial``) and prints its replies with the same prompts, without the board's echo. Opening the port
leaves DTR/RTS low so that the board is not reset.

Both read one review per stdin line (a CR inside a line is a space), so a terminal that sends CR,
LF or CR LF for Enter gives one answer per review. ``quit`` or ``exit`` end the session (``bye``),
as does the end of stdin (Ctrl-D). Ctrl-C typed in a terminal drops the line being typed and
prompts again, as the board does on Ctrl-C (when stdin is not a terminal, Ctrl-C stops the
program).

The builds are cached under ``build/console/<hash>/`` (sources, model folder and files, flags).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.device.firmware import (
    HEAD_ARRAY,
    MODEL_CONFIG_H,
    MODEL_DATA_C,
    STEP_ARRAY,
    export_firmware,
    parse_c_array,
)
from pipeline.text.ctok import HOST, ROOT, SANITIZE, SRC, WARNINGS, cache_root, compiler

PROMPT = b"> "
BYE = b"bye\n"  # what console.c prints for `quit` where the session can end (io.can_quit)
QUIT_COMMANDS = (b"quit", b"exit")
CTRL_C = b"\x03"
PORTABLE_SOURCES = ("console.c", "console.h", "sentiment.c", "sentiment.h", "tokenizer.c",
                    "tokenizer.h", "tokenizer_tables.h", "model_data.h")
C_SOURCES = ("console.c", "sentiment.c", "tokenizer.c", "tokenizer_tables.c", "model_data.c")
MODEL_FILES = ("step.tflite", "head.tflite", "quant.json", "tokenizer.model", "tokenizer.json")
RESPONSE_TIMEOUT_S = 30.0
GENERATORS = ("device/firmware.py", "text/ctables.py")  # a change rebuilds


# ----------------------------------------------------------------------------- host build


def _cache_root() -> Path:
    return cache_root("console")


def prepare_sources(model_dir: Path, out_root: Path) -> dict:
    """A host-buildable copy of the firmware sources for ``model_dir`` under ``out_root/src``.

    The generated files come from :func:`pipeline.device.firmware.export_firmware`, the portable C files
    are copied from ``firmware/src`` (so that their ``#include "model_config.h"`` finds the
    generated one). Returns export_firmware's sizes.
    """
    sizes = export_firmware(Path(model_dir), Path(out_root))
    for name in PORTABLE_SOURCES:
        shutil.copyfile(SRC / name, Path(out_root) / "src" / name)
    return sizes


def _build_key(model_dir: Path, flags: list[str], extra: list[Path]) -> str:
    h = hashlib.sha256()
    parts = [compiler().encode(), " ".join(flags).encode(),
             str(Path(model_dir).resolve()).encode(),  # the generated sources name the folder
             *[(Path(model_dir) / f).read_bytes() for f in MODEL_FILES],
             *[(SRC / s).read_bytes() for s in PORTABLE_SOURCES],
             *[p.read_bytes() for p in extra],
             *[(ROOT / "pipeline" / m).read_bytes() for m in GENERATORS]]
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


def _build(model_dir: Path, out_name: str, flags: list[str], extra: list[Path]) -> Path:
    """Compile the console, loop and tokenizer (+ ``extra``) for ``model_dir``; cached."""
    cc = compiler()
    out_dir = _cache_root() / _build_key(model_dir, flags, extra)
    out = out_dir / out_name
    if out.exists():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".work-", dir=_cache_root()))
    try:
        prepare_sources(model_dir, tmp)
        cmd = [cc, *flags, f"-I{tmp / 'src'}", *map(str, extra),
               *[str(tmp / "src" / s) for s in C_SOURCES], "-o", str(tmp / out_name), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"C build failed: {' '.join(cmd)}\n{proc.stderr}")
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / "src").exists():
            try:
                os.replace(tmp / "src", out_dir / "src")
            except OSError:
                pass  # another process published the same sources first
        os.replace(tmp / out_name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_library(model_dir: Path) -> Path:
    """Shared library of the console for ``model_dir`` (warnings are errors)."""
    return _build(Path(model_dir), "libconsole.so", [*WARNINGS, "-O2", "-fPIC", "-shared"], [])


def build_driver(model_dir: Path, sanitize: bool = True) -> Path:
    """``firmware/host/console_host.c`` (fake model) for ``model_dir``'s shapes, ASan+UBSan."""
    flags = [*WARNINGS, "-g", "-O1", *(SANITIZE if sanitize else [])]
    return _build(Path(model_dir), "console_host" + ("_san" if sanitize else ""), flags,
                  [HOST / "console_host.c"])


def read_defines(header: Path) -> dict[str, str]:
    """``#define NAME VALUE`` lines of a generated header (comments stripped)."""
    text = re.sub(r"/\*.*?\*/", "", Path(header).read_text(), flags=re.S)
    return dict(re.findall(r"^#define (\w+) (.+?)\s*$", text, re.M))


# ----------------------------------------------------------------------------- ctypes binding


STEP_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32),
                           ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int8))
HEAD_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int8),
                           ctypes.POINTER(ctypes.c_int8))
WRITE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)
CLOCK_FN = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)
DESCRIBE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)


class _Model(ctypes.Structure):
    _fields_ = [("step", STEP_FN), ("head", HEAD_FN), ("ctx", ctypes.c_void_p)]


class _IO(ctypes.Structure):
    _fields_ = [("write", WRITE_FN), ("now_us", CLOCK_FN), ("describe", DESCRIBE_FN),
                ("ctx", ctypes.c_void_p), ("echo", ctypes.c_int), ("crlf", ctypes.c_int),
                ("can_quit", ctypes.c_int)]


class _Result(ctypes.Structure):
    _fields_ = [("positive", ctypes.c_int), ("p", ctypes.c_float), ("tokens", ctypes.c_uint32),
                ("tokens_total", ctypes.c_uint32), ("ms", ctypes.c_uint32),
                ("reason", ctypes.c_char_p)]


@dataclass(frozen=True)
class Result:
    label: str  # "positive" | "negative" (the model's, also when reason is set)
    p: float  # P(positive), a float32 value
    tokens: int  # ids the model read
    tokens_total: int  # ids of the whole text
    ms: int
    reason: str | None = None  # why predict gives no verdict (its wording), or None


class SimDevice:
    """The firmware console with the int8 models in the TFLM Python interpreter.

    ``feed(bytes)`` returns what the device prints for those input bytes; ``start()`` the boot
    banner and first prompt. ``echo`` / ``crlf`` as on the serial line (the board: both on);
    ``can_quit``: ``quit``/``exit`` end the session (``ended`` becomes True; the board: off, it
    prints how to leave the terminal). Each instance loads its own copy of the library (the
    console keeps no global state, but the copy keeps instances independent whatever the C code
    does).
    """

    def __init__(self, model_dir: Path, echo: bool = False, crlf: bool = False,
                 can_quit: bool = True) -> None:
        from pipeline.device.release import load_release
        from pipeline.device.runtime import TflmModel

        self.model_dir = Path(model_dir)
        lib_path = build_library(self.model_dir)
        src = lib_path.parent / "src"
        text = (src / MODEL_DATA_C).read_text()
        release = load_release(self.model_dir)
        step, head = parse_c_array(text, STEP_ARRAY), parse_c_array(text, HEAD_ARRAY)
        if step != release["step"] or head != release["head"]:
            raise RuntimeError(f"{src / MODEL_DATA_C}: arrays differ from the .tflite files")
        defines = read_defines(src / MODEL_CONFIG_H)
        self.arena = {"step": int(defines["SENT_STEP_ARENA_BYTES_64BIT"]),  # a 64-bit interpreter
                      "head": int(defines["SENT_HEAD_ARENA_BYTES_64BIT"])}
        self.units = int(defines["SENT_UNITS"])
        self.tflm = TflmModel({"step": step, "head": head, "meta": release["meta"]},
                              arena=self.arena)

        self._tmp = tempfile.mkdtemp(prefix="tinysent-console-")
        weakref.finalize(self, shutil.rmtree, self._tmp, True)
        private = Path(self._tmp) / lib_path.name
        shutil.copyfile(lib_path, private)
        lib = self._lib = ctypes.CDLL(str(private))
        lib.console_size.restype = ctypes.c_size_t
        lib.console_classify.restype = ctypes.c_int
        lib.console_classify.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(_Result)]
        lib.console_feed.restype = ctypes.c_int
        lib.console_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.console_init.argtypes = [ctypes.c_void_p, ctypes.POINTER(_IO), ctypes.POINTER(_Model)]
        lib.console_start.argtypes = [ctypes.c_void_p]
        self._con = ctypes.create_string_buffer(int(lib.console_size()))
        self._out = bytearray()
        self.error: BaseException | None = None
        self.ended = False  # a `quit` ended the session
        units = self.units

        def step(_ctx: Any, tokens: Any, hf: Any, hb: Any) -> int:
            try:
                t = np.ctypeslib.as_array(tokens, (1, 2)).copy()
                f = np.ctypeslib.as_array(hf, (1, units))
                b = np.ctypeslib.as_array(hb, (1, units))
                nf, nb = self.tflm.step_fn(t, f.copy(), b.copy())
                f[:], b[:] = nf, nb
                return 0
            except Exception as e:  # reported through the C return code, raised by _drain
                self.error = e
                return -1

        def head(_ctx: Any, pooled: Any, prob: Any) -> int:
            try:
                x = np.ctypeslib.as_array(pooled, (1, 2 * units)).copy()
                prob[0] = int(np.asarray(self.tflm.head_fn(x)).reshape(-1)[0])
                return 0
            except Exception as e:
                self.error = e
                return -1

        def write(_ctx: Any, data: Any, n: int) -> None:
            self._out += ctypes.string_at(data, n)

        def clock(_ctx: Any) -> int:
            return time.perf_counter_ns() // 1000

        def describe(_ctx: Any, buf: Any, cap: int) -> None:
            line = (f"host simulation: TFLM Python interpreter on the generated C arrays, arena "
                    f"step {self.arena['step']} + head {self.arena['head']} B").encode()
            ctypes.memmove(buf, line[: cap - 1] + b"\0", min(len(line), cap - 1) + 1)

        # keep the callbacks alive as long as the device
        self._callbacks = (STEP_FN(step), HEAD_FN(head), WRITE_FN(write), CLOCK_FN(clock),
                           DESCRIBE_FN(describe))
        self._model = _Model(self._callbacks[0], self._callbacks[1], None)
        self._io = _IO(self._callbacks[2], self._callbacks[3], self._callbacks[4], None,
                       int(echo), int(crlf), int(can_quit))
        lib.console_init(self._con, ctypes.byref(self._io), ctypes.byref(self._model))

    def _drain(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"model callback failed: {err!r}") from err
        return out

    def start(self) -> bytes:
        """The banner and the first prompt."""
        self._lib.console_start(self._con)
        return self._drain()

    def feed(self, data: bytes) -> bytes:
        """Input bytes -> what the device prints (nothing more once a `quit` ended it)."""
        self.ended = bool(self._lib.console_feed(self._con, data, len(data)))
        return self._drain()

    def classify(self, text: bytes) -> Result:
        """A review's bytes as the console classifies a line (no line editing, no output)."""
        r = _Result()
        if self._lib.console_classify(self._con, text, len(text), ctypes.byref(r)) != 0:
            self._drain()
            raise RuntimeError("console_classify failed")
        return Result("positive" if r.positive else "negative", float(r.p), r.tokens,
                      r.tokens_total, r.ms, r.reason.decode() if r.reason else None)


# ----------------------------------------------------------------------------- front ends


def _is_quit(line: bytes) -> bool:
    """A stdin line (CR/LF stripped) that is the console's `quit` or `exit` command."""
    return line.strip(b" \t") in QUIT_COMMANDS


class _LineReader:
    """stdin lines for a session; with stdin a terminal, Ctrl-C drops the line instead of stopping
    the program: :meth:`readline` gives None for it (the terminal has discarded what was typed).

    A Ctrl-C that comes while a reply is being computed (not while waiting for a line) is kept and
    given as the next None, so it never stops the session either. The SIGINT handler is installed
    only for a terminal and only over Python's default one (a program started with SIGINT ignored
    keeps it so); when stdin is no terminal, Ctrl-C stops the program as usual.
    """

    def __init__(self, stdin: BinaryIO) -> None:
        self.stdin = stdin
        self.tty = bool(stdin.isatty())
        self.waiting = False  # in readline: a Ctrl-C interrupts it
        self.pending = False  # a Ctrl-C came outside readline
        self._old: Any = None

    def __enter__(self) -> _LineReader:
        if self.tty and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            try:
                self._old = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread: Python's handler stays
                self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.waiting:
            self.waiting = False
            raise KeyboardInterrupt
        self.pending = True

    def readline(self) -> bytes | None:
        self.waiting = True
        try:
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt
            line = self.stdin.readline()
            self.waiting = False
            return line
        except KeyboardInterrupt:
            self.waiting = False
            if not self.tty:
                raise
            return None


_TERMINAL_HINT = b"(in this terminal: quit, exit or Ctrl-D end the session; Ctrl-C drops the line)\n"


def serve_lines(dev: Any, stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO | None = None) -> int:
    """``pipeline.console --sim``'s loop for a device (``SimDevice`` or
    ``pipeline.device.native.FirmwareDevice``): its banner, then one review per stdin line (a CR
    inside a line is a space, so CR, LF and CR LF line ends all give one answer per line) and the
    device's output, until ``quit``/``exit`` (the device ends the session: ``dev.ended``) or the end
    of stdin. Ctrl-C in a terminal drops the line: the device gets the Ctrl-C byte and prompts
    again (a hint on ``stderr`` says so when stdin is a terminal)."""
    if stderr is not None and stdin.isatty():
        stderr.write(_TERMINAL_HINT)
        stderr.flush()
    stdout.write(dev.start())
    stdout.flush()
    with _LineReader(stdin) as reader:
        while True:
            line = reader.readline()
            if line is None:
                stdout.write(dev.feed(CTRL_C))
                stdout.flush()
                continue
            if not line:
                break
            # one stdin line is one review: a CR inside it is a space, not a line end
            stdout.write(dev.feed(line.rstrip(b"\r\n").replace(b"\r", b" ") + b"\n"))
            stdout.flush()
            if dev.ended:  # `quit`: the device printed "bye"
                return 0
    stdout.write(b"\n")
    stdout.flush()
    return 0


def run_sim(model_dir: Path, stdin: BinaryIO, stdout: BinaryIO,
            stderr: BinaryIO | None = None) -> int:
    """Lines from ``stdin`` through the simulated device; its output to ``stdout``
    (:func:`serve_lines`)."""
    return serve_lines(SimDevice(model_dir, echo=False, crlf=False), stdin, stdout, stderr)


def _open_serial(port: str, baud: int) -> Any:
    try:
        import serial
    except ImportError:
        raise RuntimeError("--port needs pyserial: .venv/bin/pip install pyserial") from None
    ser = serial.Serial()
    ser.port, ser.baudrate, ser.timeout = port, baud, 0.05
    ser.dtr = ser.rts = False  # on ESP32 dev boards DTR/RTS drive reset and boot mode
    ser.open()
    return ser


def _read_reply(ser: Any, timeout: float, grace: float = 0.05) -> bytes:
    """Bytes from the board up to its next prompt (``\\r\\n> ``) after which it stays quiet.

    The grace period catches a line that made the board print several prompts (a CR or a Ctrl-C
    inside it).
    """
    buf = bytearray()
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        chunk = ser.read(max(1, getattr(ser, "in_waiting", 0) or 0))
        now = time.monotonic()
        if chunk:
            buf += chunk
            deadline, quiet_since = now + timeout, None
            continue
        if buf.endswith(b"\n" + PROMPT):
            quiet_since = quiet_since or now
            if now - quiet_since >= grace:
                return bytes(buf)
        elif now > deadline:
            raise TimeoutError(f"no prompt from the board within {timeout:.0f} s; got {bytes(buf)!r}")
        time.sleep(0.002)


def strip_echo(reply: bytes) -> bytes:
    """The board's output for one sent line without its echo, with ``\\n`` line ends.

    The board echoes what it receives after each prompt and ends the echo with CR LF (the echo
    itself never holds one: CR and LF end lines there); what follows, up to the next prompt, is
    its reply.
    """
    out, rest = bytearray(), reply
    while rest:
        nl = rest.find(b"\r\n")
        if nl < 0:
            out += rest
            break
        rest = rest[nl + 2:]  # drop the echo and its line end
        if rest.startswith(PROMPT):
            cut = len(PROMPT)
        else:
            p = rest.find(b"\r\n" + PROMPT)
            cut = len(rest) if p < 0 else p + 2 + len(PROMPT)
        out += rest[:cut]
        rest = rest[cut:]
    return bytes(out).replace(b"\r\n", b"\n")


def run_port(port: str, baud: int, stdin: BinaryIO, stdout: BinaryIO,
             serial_factory: Callable[[str, int], Any] | None = None,
             timeout: float = RESPONSE_TIMEOUT_S) -> int:
    """Lines from ``stdin`` to a board on ``port``; its replies, without its echo, to ``stdout``."""
    ser = (serial_factory or _open_serial)(port, baud)
    try:
        ser.write(b"\r")  # an empty line: the board answers with a fresh prompt
        _read_reply(ser, timeout)
        stdout.write(f"connected to {port} at {baud} baud; type a review, 'help' or 'info' "
                     "(end with quit, exit or Ctrl-D)\n".encode() + PROMPT)
        stdout.flush()
        with _LineReader(stdin) as reader:
            while True:
                line = reader.readline()
                if line is None:  # Ctrl-C: the line was never sent; a fresh prompt, as the sim
                    stdout.write(b"\n" + PROMPT)
                    stdout.flush()
                    continue
                if not line:
                    break
                text = line.rstrip(b"\r\n").replace(b"\r", b" ")
                if _is_quit(text):  # the board runs on; the session with it ends here
                    stdout.write(BYE)
                    stdout.flush()
                    return 0
                ser.write(text + b"\r")
                stdout.write(strip_echo(_read_reply(ser, timeout)))
                stdout.flush()
        stdout.write(b"\n")
        stdout.flush()
    finally:
        ser.close()
    return 0
