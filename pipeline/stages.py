"""Stage bookkeeping: atomic outputs, reuse when inputs are unchanged, resumable work folders.

A stage ``name`` under ``root`` writes into ``root/.name.tmp`` and is published by renaming it to
``root/name`` together with ``stage.json`` (its key and summary). The key hashes the stage's config
and its inputs' keys, so a change upstream re-runs everything below it. State that must survive a
kill (training checkpoints) lives in ``root/.name.work-KEY`` and is deleted once the stage is done.
A stage's ``seconds`` count all its attempts: each attempt adds its time to ``.name.seconds-KEY``
(a killed one: up to the last change in its work folder). ``cpu_count`` is ``os.cpu_count()`` of
the machine that finished the stage (the report's run time table). ``peak_rss_mib`` is the most
resident memory this process held during the stage's last attempt (Linux: the high-water mark is
reset when the stage starts; spawned workers, ``pipeline.parallel``, are not in it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(inputs: Any) -> str:
    """Stable short hash of json-able inputs (dataclasses and paths allowed)."""
    blob = json.dumps(inputs, sort_keys=True, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def files_fingerprint(path: Path) -> list[tuple[str, int, str]]:
    """(name, size, sha256) of every file under ``path``: content, not dates, decides a re-run.

    Names are relative to ``path`` (a file: its own name), so a copy of the data elsewhere or a
    fresh download of the same files reuses finished stages.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        name = p.name if p == path else str(p.relative_to(path))
        out.append((name, p.stat().st_size, h.hexdigest()))
    return out


def stage_key(root: Path, name: str) -> str | None:
    """Key of a finished stage, or None."""
    f = Path(root) / name / STAGE_FILE
    return json.loads(f.read_text())["key"] if f.exists() else None


def clean_stray(root: Path) -> list[Path]:
    """Delete the half-written outputs (``.NAME.tmp``, ``.NAME.old``) a killed run left in ``root``."""
    gone = []
    for p in sorted(Path(root).glob(".*")):
        if p.is_dir() and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    if gone:
        log.info("removed %d half-written folder(s) of an interrupted run: %s", len(gone),
                 ", ".join(p.name for p in gone))
    return gone


def _last_change(path: Path) -> float | None:
    """The latest modification time of ``path`` or anything under it (None if it does not exist)."""
    if not path.exists():
        return None
    return max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])


def _earlier_seconds(clock: Path, work: Path) -> float:
    """Seconds spent by earlier attempts of a stage, from its ``clock`` file.

    An attempt that was killed without closing its entry counts until the last change in its
    work folder (or not at all when it left nothing there).
    """
    if not clock.exists():
        return 0.0
    rec = json.loads(clock.read_text())
    done = float(rec.get("seconds", 0.0))
    if rec.get("open") is not None:
        last = _last_change(work)
        done += max(0.0, last - rec["open"]) if last else 0.0
    return done


_RUN_PEAK_MIB = 0.0  # this process's peak before the last reset (clear_refs forgets it)


def reset_peak_rss() -> bool:
    """Start a new peak-resident-memory count for this process (Linux ``clear_refs`` 5); the peak
    so far is kept for :func:`run_peak_rss_mib`. The kernel's own high-water mark restarts too, so
    ``/usr/bin/time``'s maximum resident set size then covers only what follows the last reset."""
    global _RUN_PEAK_MIB
    _RUN_PEAK_MIB = max(_RUN_PEAK_MIB, peak_rss_mib() or 0.0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since :func:`reset_peak_rss` (``VmHWM``), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def workers_peak_rss_mib() -> float:
    """The largest peak resident memory of this process's finished child processes (the worker
    processes of ``pipeline/parallel.py``), MiB; 0 before any."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def run_peak_rss_mib() -> dict[str, float]:
    """This process's peak resident memory over its whole life (every stage) and its workers'."""
    return {"main": max(_RUN_PEAK_MIB, peak_rss_mib() or 0.0), "workers": workers_peak_rss_mib()}


def run_stage(
    root: Path, name: str, inputs: Any, fn: Callable[[Path, Path], dict | None]
) -> tuple[Path, str]:
    """Run ``fn(out_tmp, work_dir)`` unless ``root/name`` already holds this key's outputs.

    Returns the published folder and the stage key.
    """
    root = Path(root)
    key = fingerprint({"stage": name, "inputs": inputs})
    final = root / name
    if stage_key(root, name) == key:
        log.info("[%s] up to date (key %s), reused", name, key)
        return final, key
    tmp = root / f".{name}.tmp"
    work = root / f".{name}.work-{key}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clock = root / f".{name}.seconds-{key}"
    for stale in root.glob(f".{name}.work-*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{name}.seconds-*"):
        if stale != clock:
            stale.unlink()
    log.info("[%s] running (key %s)%s", name, key, ", resuming" if work.exists() else "")
    earlier = _earlier_seconds(clock, work)
    clock.write_text(json.dumps({"seconds": earlier, "open": time.time()}))
    t0 = time.monotonic()
    fresh_peak = reset_peak_rss()
    workers_before = workers_peak_rss_mib()
    try:
        summary = fn(tmp, work) or {}
    except BaseException:  # Ctrl-C or an error: this attempt's time counts for the next one
        clock.write_text(json.dumps({"seconds": earlier + time.monotonic() - t0, "open": None}))
        raise
    record = {"key": key, "stage": name, "seconds": round(earlier + time.monotonic() - t0, 1),
              "cpu_count": os.cpu_count(), "peak_rss_mib": peak_rss_mib() if fresh_peak else None,
              # a worker process of this stage outgrew every earlier one: its peak
              "workers_peak_rss_mib": (workers if (workers := workers_peak_rss_mib()) > workers_before
                                       else None),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": summary}
    (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=_plain))
    old = root / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    clock.unlink(missing_ok=True)
    log.info("[%s] done in %.0fs", name, record["seconds"])
    return final, key
