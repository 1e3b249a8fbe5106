"""Release gate: does a run meet the release targets? One row per target, from the run's own files.

    python -m pipeline.report.gate RUN [--reference reports/full]

``RUN``: an ``--out`` folder of ``python -m pipeline.all`` (after the two ``pipeline.bench``
commands of the README), or a published report folder (same layout). Targets (:data:`TARGETS`):
the int8 release on the device path over the whole test split (accuracy, label agreement with its
float model, the native and riscv32 firmware answering as ``--runtime tflm``); its balanced
accuracy on every held-out set of at least ``heldout_min_reviews`` reviews at or above each peer's;
flash (model arrays + tokenizer tables) and arena; the stage seconds of the run. Also printed: what
the Lottery ticket and quantization changed, and the validation accuracy beside ``--reference``'s
(a release replaces the published one only if it is better there). Exit status 0 when every target
holds, 1 when one does not or was not measured, 2 without the int8 release's evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.report.report import run_stages


@dataclass(frozen=True)
class Targets:
    """The release's bars (issues 13 and 14)."""

    test_accuracy: float = 0.932
    agreement: float = 0.995
    flash_bytes: int = 163_840
    arena_bytes: int = 16_384
    heldout_min_reviews: int = 900
    stage_seconds: float = 3_600.0


TARGETS = Targets()
PEERS = {"TF-IDF": ("peer_tfidf", "stopwords_kept"), "fastText": ("peer_fasttext", "bigram"),
         ".ftz": ("peer_fasttext", "quantized")}


@dataclass
class Row:
    target: str
    measured: str
    holds: bool | None  # None: information, not a target
    source: str


class Missing(FileNotFoundError):
    """A file the gate reads is not in the run folder (``rel``: its path inside the folder)."""

    def __init__(self, run: Path, rel: str) -> None:
        super().__init__(f"{run / rel} is missing: run the pipeline (and the README's two "
                         "pipeline.bench commands) into this folder first")
        self.rel = rel


def _load(run: Path, rel: str) -> dict[str, Any]:
    path = run / rel
    if not path.exists():
        raise Missing(run, rel)
    return json.loads(path.read_text())


def check(run: Path, reference: Path | None = None, t: Targets = TARGETS) -> list[Row]:
    """The gate's rows for ``run``. A group whose file is missing gives one failing row naming it;
    without ``int8_eval/metrics.json`` nothing can be checked (:class:`Missing`)."""
    m = _load(run, "int8_eval/metrics.json")
    rows: list[Row] = []
    for group, target in ((_accuracy, "test accuracy and agreement"),
                          (_firmware, "firmware answers as `--runtime tflm`"),
                          (_heldout, "held-out sets against the peers"), (_flash, "flash and arena"),
                          (_seconds, "stage seconds"), (_steps, "what Pruned and Quantized changed")):
        try:
            rows += group(run, m, t)
        except Missing as e:
            rows.append(Row(target, f"not measured: {e.rel} missing", False, "–"))
    if reference is not None:
        ref = _load(reference, "int8_eval/metrics.json")["val"]["accuracy"]
        rows.append(Row(f"validation accuracy > `{reference}`'s {100 * ref:.2f}%",
                        f"{100 * m['val']['accuracy']:.2f}%", m["val"]["accuracy"] > ref,
                        "int8_eval/metrics.json"))
    return rows


def _accuracy(run: Path, m: dict, t: Targets) -> list[Row]:
    test = m["test"]
    return [Row(f"test accuracy >= {100 * t.test_accuracy:.2f}%", f"{100 * test['accuracy']:.2f}%",
                test["accuracy"] >= t.test_accuracy, "int8_eval/metrics.json"),
            Row(f"test label agreement with the float model >= {100 * t.agreement:.1f}%",
                f"{100 * test['agreement']:.2f}%", test["agreement"] >= t.agreement,
                "int8_eval/metrics.json")]


def _firmware(run: Path, m: dict, t: Targets) -> list[Row]:
    agree = _load(run, "bench/agreement.json")
    firm = agree["sets"].get("test", {})
    differ = {k: firm[k]["label_differs"] for k in agree["targets"] if k in firm}
    return [Row("native and riscv32 firmware: test labels as `--runtime tflm`",
                ", ".join(f"{k}: {v} of {firm.get('reviews', 0):,} differ" for k, v in differ.items())
                or "test not measured",
                set(differ) >= {"native", "riscv32"} and not any(differ.values()), "bench/agreement.json")]


def _heldout(run: Path, m: dict, t: Targets) -> list[Row]:
    peers = {name: _load(run, f"{stage}/metrics.json")[key]["heldout"]
             for name, (stage, key) in PEERS.items()}
    rows = []
    for name, mine in sorted((m.get("heldout") or {}).items()):
        if mine["n"] < t.heldout_min_reviews:
            continue
        target = f"`{name}` ({mine['n']:,}) balanced accuracy >= every peer's"
        theirs = {p: h[name]["balanced_accuracy"] for p, h in peers.items() if name in (h or {})}
        if not theirs:
            rows.append(Row(target, "no peer measured on it", False, "peer_*/metrics.json"))
            continue
        best = max(theirs, key=theirs.get)
        rows.append(Row(target, f"{100 * mine['balanced_accuracy']:.2f} vs {best} {100 * theirs[best]:.2f}",
                        mine["balanced_accuracy"] >= theirs[best], "int8_eval, peer_*/metrics.json"))
    return rows


def _flash(run: Path, m: dict, t: Targets) -> list[Row]:
    fw = _load(run, "firmware_export/stage.json")["summary"]
    return [Row(f"flash (model arrays + tokenizer tables) <= {t.flash_bytes:,} B",
                f"{fw['total']:,} B ({fw['model_arrays']:,} + {fw['tokenizer_tables']:,})",
                fw["total"] <= t.flash_bytes, "firmware_export/stage.json"),
            Row(f"arena <= {t.arena_bytes:,} B", f"{fw['arena']:,} B", fw["arena"] <= t.arena_bytes,
                "firmware_export/stage.json")]


def _seconds(run: Path, m: dict, t: Targets) -> list[Row]:
    total = sum(_load(run, f"{s}/stage.json")["seconds"] for s in run_stages(run))
    return [Row(f"stage seconds <= {t.stage_seconds:,.0f}", f"{total:,.1f} s", total <= t.stage_seconds,
                "*/stage.json")]


def _steps(run: Path, m: dict, t: Targets) -> list[Row]:
    ticket = _load(run, "student_pruned/stage.json")["summary"]
    qat = _load(run, "qat_eval/metrics.json")
    arrays = _load(run, "firmware_export/stage.json")["summary"]["model_arrays"]
    return [Row("Pruned: what the Lottery ticket changed",
                f"{ticket['dense_flash_bytes'] - ticket['flash_bytes']:,} B of model arrays saved, "
                f"validation {100 * (ticket['val_accuracy'] - ticket['dense_val_accuracy']):+.2f} points",
                None, "student_pruned/stage.json"),
            Row("Quantized: what int8 changed against its float model",
                f"test {100 * (m['test']['accuracy'] - qat['test']['accuracy']):+.2f} points, "
                f"{arrays:,} B of model arrays", None, "int8_eval, qat_eval/metrics.json")]


def table(rows: list[Row]) -> str:
    """Markdown: target, measured, holds, source."""
    mark = {True: "yes", False: "**no**", None: "–"}
    return "\n".join(["| target | measured | holds | from |", "|---|---|---|---|",
                      *(f"| {r.target} | {r.measured} | {mark[r.holds]} | `{r.source}` |" for r in rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a pipeline.all --out folder or a published report folder")
    ap.add_argument("--reference", type=Path, help="the published release to beat on validation")
    args = ap.parse_args(argv)
    try:
        rows = check(args.run, args.reference)
    except Missing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0 if all(r.holds is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
