"""Progress reporting: log lines off a terminal, silence with quiet(), Ctrl-C's one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from pipeline import INTERRUPTED, progress

ROOT = Path(__file__).resolve().parents[1]


def test_lines_off_a_terminal_and_quiet(caplog) -> None:
    caplog.set_level(logging.INFO, "pipeline.progress")
    assert list(progress.track(range(5), desc="work", every=0.0)) == list(range(5))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("work: 1/5 (20.0%)") and "eta" in lines[0]
    assert lines[-1].startswith("work: 5/5 (100.0%)") and lines[-1].endswith("(done)")
    with progress.Progress(10, "loss", every=0.0) as p:
        p.update(4, "loss 0.5")
    assert caplog.records[-2].getMessage().endswith("loss 0.5")
    caplog.clear()
    progress.quiet()
    try:
        list(progress.track(range(5), desc="work", every=0.0))
    finally:
        progress.quiet(False)
    assert not caplog.records


def test_ctrl_c_ends_a_cli_with_one_line() -> None:
    code = ("import pipeline; pipeline.setup_logging()\n"
            "raise KeyboardInterrupt")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 130 and r.stderr.strip() == INTERRUPTED
