"""Progress of long work: a bar with rate and ETA on a terminal, periodic log lines elsewhere.

``track(items, total, desc)`` wraps an iterable; ``Progress(total, desc)`` is updated by hand. On a
terminal (stderr is a TTY) they draw a tqdm bar; otherwise (a log file, CI) they log one line every
``LOG_EVERY_S`` seconds and one at the end, each with the count, the rate and the ETA. ``quiet()``
(the CLIs' ``-q``) silences both.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
LOG_EVERY_S = 30.0
_QUIET = False

log = logging.getLogger("pipeline.progress")


def quiet(on: bool = True) -> None:
    """Silence (or restore) every progress bar and progress line of this process."""
    global _QUIET
    _QUIET = on


def _fmt_s(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """``total`` units of work named ``desc``; call :meth:`update` with units done, then :meth:`close`."""

    def __init__(self, total: int | None, desc: str, unit: str = "it",
                 every: float = LOG_EVERY_S) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = 0
        self.info = ""
        self.start = self.last = time.monotonic()
        self._bar = None
        if not _QUIET and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # not installed (pyproject lists it): log lines instead
                return
            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def line(self) -> str:
        """``desc: n/total (p%), rate unit/s, elapsed, eta, info``: what a log line says."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n:,}" + (f"/{self.total:,}" if self.total else "")
        if self.total:
            text += f" ({100 * self.n / self.total:.1f}%)"
        text += f", {rate:,.1f} {self.unit}/s, {_fmt_s(elapsed)} elapsed"
        if self.total and rate > 0 and self.n < self.total:
            text += f", eta {_fmt_s((self.total - self.n) / rate)}"
        return text + (f", {self.info}" if self.info else "")

    def update(self, n: int = 1, info: str | None = None) -> None:
        """``n`` more units done; ``info`` (e.g. the running loss) is shown after the counts."""
        self.n += n
        if info is not None:
            self.info = info
        if _QUIET:
            return
        if self._bar is not None:
            if info is not None:
                self._bar.set_postfix_str(info, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not _QUIET and time.monotonic() - self.start >= self.every:
            log.info("%s (done)", self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          every: float = LOG_EVERY_S) -> Iterator[T]:
    """Yield ``items`` while showing progress (``total`` defaults to ``len(items)`` when known)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, every) as p:
        for item in items:
            yield item
            p.update()
