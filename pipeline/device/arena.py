"""The smallest TFLM tensor arena a model builds and invokes in, found by bisection.

The TFLM Python interpreter (``tflite-micro``) runs in a child process: for some too-small arenas
it crashes the process (seen at 512 B and below, and at 9,200 B for a 13 KB step model) instead of
raising. These are host (64-bit) figures; ``pipeline.device.native`` measures the 32-bit ones. A
custom-operator step model cannot load in the Python interpreter, so only its head is measured
(the step's figure is ``pipeline.device.convert.CUSTOM_STEP_ARENA_BYTES``, an estimate).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.device import flatbuf

MIN_ARENA_FLOOR = 1024  # smaller arenas are never tried (the wrapper crashes on 512 B or less)


_ARENA_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
n_inputs = int(sys.argv[2])
for line in sys.stdin:
    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=int(line))
        for i in range(n_inputs):
            d = it.get_input_details(i)
            it.set_input(np.zeros(d["shape"], d["dtype"]), i)
        it.invoke()
        ok = 1
    except (RuntimeError, ValueError):
        ok = 0
    print(ok, flush=True)
"""


class _ArenaProber:
    """Answers "does the model build and invoke in N bytes?" from a child TFLM process.

    A crash of the child counts as "does not fit"; the next question starts a new child.
    """

    def __init__(self, model_bytes: bytes) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="arena-")
        self._model = Path(self._dir.name) / "model.tflite"
        self._model.write_bytes(model_bytes)
        self._inputs = len(flatbuf.io_map(model_bytes)["inputs"])
        self._child: subprocess.Popen | None = None

    def fits(self, size: int) -> bool:
        if self._child is None or self._child.poll() is not None:
            self._stop_child()
            self._child = subprocess.Popen(
                [sys.executable, "-c", _ARENA_PROBE, str(self._model), str(self._inputs)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            self._child.stdin.write(f"{size}\n")
            self._child.stdin.flush()
            answer = self._child.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:  # the child crashed on this size
            self._child.wait()
            return False
        return answer.strip() == "1"

    def _stop_child(self) -> None:
        if self._child is not None:
            for pipe in (self._child.stdin, self._child.stdout):
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()  # a live child reads EOF and exits
            self._child.wait()
            self._child = None

    def close(self) -> None:
        self._stop_child()
        self._dir.cleanup()

    def __enter__(self) -> _ArenaProber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def min_arena(model_bytes: bytes, hi: int = 1 << 20) -> int:
    """Smallest TFLM arena that builds and invokes the model (host build; a multiple of 16 B).

    Bisection between 1 KB and ``hi``; smaller arenas are never tried (they crash the wrapper).
    """
    with _ArenaProber(model_bytes) as probe:
        if probe.fits(MIN_ARENA_FLOOR):
            return MIN_ARENA_FLOOR
        if not probe.fits(hi):
            raise ValueError(f"model does not fit a {hi}-byte arena")
        lo, hi = MIN_ARENA_FLOOR // 16, hi // 16  # in 16-byte units; lo fails, hi fits
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if probe.fits(16 * mid) else (mid, hi)
        return 16 * hi
