"""Print the per-stage table of ``reports/scale/README.md`` from runs' ``stage.json`` files.

    python reports/scale/stage_table.py RUN_125K RUN_1M

For each run (an ``--out`` folder of ``python -m pipeline.all``) and each stage: seconds, the
stage's peak RSS in the pipeline process and in its worker processes (where they grew), and
reviews per second (the reviews the data stage read, over the stage's seconds). The last rows are
the totals and the ratio of the runs' largest peaks (the second run's over the first's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.report.report import RUN_STAGES


def _records(run: Path) -> dict[str, dict]:
    return {s: json.loads(p.read_text()) for s in RUN_STAGES if (p := run / s / "stage.json").exists()}


def _peak(rec: dict) -> float:
    return max(rec.get("peak_rss_mib") or 0, rec.get("workers_peak_rss_mib") or 0)


def table(runs: list[Path]) -> list[str]:
    """Markdown lines: one row per stage, a column group per run."""
    recs = [_records(r) for r in runs]
    reviews = [json.loads((r / "data" / "stats.json").read_text())["totals"]["used"] for r in runs]
    head = " | ".join(f"{n:,} reviews: s / MiB / worker MiB / reviews per s" for n in reviews)
    lines = [f"| stage | {head} |", "|---|" + "---:|" * len(runs)]

    def cell(rec: dict | None, n: int) -> str:
        if rec is None:
            return "–"
        worker = rec.get("workers_peak_rss_mib")
        rate = f"{n / rec['seconds']:,.0f}" if rec["seconds"] >= 1 else "–"  # under a second: noise
        return (f"{rec['seconds']:,.1f} / {rec['peak_rss_mib']:,.0f} / "
                f"{f'{worker:,.0f}' if worker else '–'} / {rate}")

    for stage in RUN_STAGES:
        if any(stage in r for r in recs):
            lines.append(f"| {stage} | " + " | ".join(cell(r.get(stage), n)
                                                      for r, n in zip(recs, reviews, strict=True)) + " |")
    peaks = [max(map(_peak, r.values())) for r in recs]
    totals = [f"**{sum(x['seconds'] for x in r.values()):,.1f} s, largest peak {p:,.0f} MiB**"
              for r, p in zip(recs, peaks, strict=True)]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    if len(peaks) > 1:
        lines.append(f"\nLargest peak, second run over first: {peaks[1] / peaks[0]:.2f}×")
    return lines


if __name__ == "__main__":
    print("\n".join(table([Path(a) for a in sys.argv[1:]])))
