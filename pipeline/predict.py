"""Predict sentiment with a trained model directory.

    python -m pipeline.predict MODEL_DIR INPUT [--runtime keras|tflm|firmware|tflite] [--split test] [--json]

INPUT is a review file or a folder of them: any format the data module reads (see README), or
JSON lines with ``text`` and an optional ``label``. When every review has a label, the metrics are
printed (``--json``: one JSON object). Otherwise one line per review, in input order:
``LINE<TAB>LABEL<TAB>P(positive)`` (a folder: ``FILE<TAB>LINE<TAB>...``), where LINE is the
review's 1-based line number in its file, so a skipped malformed row never shifts the answers;
``--json`` prints ``{"file": ..., "line": N, "label": "positive", "p_positive": p}`` per review
(``file`` only for a folder). A review the model cannot judge (no words after normalization, or
only characters the tokenizer does not know) gets the label ``unknown``, no probability and a
``reason``; with labels it is left out of the metrics, and a note on stderr says how many were.
The model is English-only.

A model directory holds ``model.json`` (which runtimes it supports and their files), the tokenizer
(``tokenizer.model``, ``tokenizer.json``) and the model files themselves. Which ``--runtime`` a
folder needs: see the runtimes list below (:data:`RUNTIME_HELP`); without ``--runtime``, keras
where the folder has a Keras model, else tflm (:func:`~pipeline.report.predictors.default_runtime`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections import Counter
from pathlib import Path

from pipeline import data
from pipeline.config import THREE_STAR_POLICIES
from pipeline.data.inputs import read_input
from pipeline.report.predictors import (
    RUNTIMES,
    ModelDirError,
    Verdict,
    check_model_dir,
    default_runtime,
    load_judge,
)

METRIC_KEYS = ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")

RUNTIME_HELP = {  # --help lists every runtime of pipeline.report.predictors.RUNTIMES, in this order
    "keras": "a float Keras model folder (model.keras: runs/full/teacher, runs/full/qat, ...); "
             "TensorFlow. The default for such a folder.",
    "tflm": "an int8 release folder (models/release: step.tflite + head.tflite, what --release "
            "writes) in the TFLM Python interpreter: the independent cross-check; no TensorFlow. "
            "The default for such a folder.",
    "firmware": "an int8 release folder through the firmware's own C tokenizer, step loop and "
                "TFLM, built natively against the pinned TFLM sources on first use (cmake, g++).",
    "tflite": "an int8 release folder through tf.lite (TensorFlow); not bit-exact with TFLM.",
}


def _epilog() -> str:
    width = max(map(len, RUNTIME_HELP))
    lines = ["runtimes (--runtime):"]
    for name in RUNTIME_HELP:
        lines += textwrap.wrap(RUNTIME_HELP[name], 96, initial_indent=f"  {name:<{width}}  ",
                               subsequent_indent=" " * (width + 4))
    return "\n".join(lines + [
        "",
        "A release folder (models/release: int8 step.tflite + head.tflite) needs --runtime tflm or",
        "firmware (tflite reads it too); a Keras model folder (model.keras) needs keras. Without",
        "--runtime: keras where the folder has a Keras model, else tflm. The folder's model.json",
        "lists what it offers.",
    ])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                 epilog=_epilog(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                    help="model folder with model.json and the tokenizer (models/release, "
                         "runs/full/teacher, ...)")
    ap.add_argument("input", type=Path, metavar="INPUT",
                    help="review file or folder (searched recursively): a format of the data "
                         "module, or JSON lines with 'text' and an optional 'label'")
    ap.add_argument("--runtime", choices=RUNTIMES,
                    help="how to run the model: keras for a Keras model folder; tflm or firmware "
                         "for an int8 release folder such as models/release (tflite also reads "
                         "one). Default: keras where the folder has a Keras model, else tflm; see "
                         "'runtimes' below")
    ap.add_argument("--split", choices=data.SPLITS,
                    help="keep only the reviews of this split (md5 rule, see README)")
    ap.add_argument("--json", action="store_true",
                    help="JSON output: one object per review, or one metrics object when every "
                         "review has a label")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="P(positive) at or above which a review is positive (default 0.5)")
    ap.add_argument("--three-star", choices=THREE_STAR_POLICIES, default="drop",
                    help="3-star reviews of rated files: drop (default: neither positive nor "
                         "negative), or count them as negative or positive")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    stats: list[data.FileStats] = []
    try:
        runtime = args.runtime or default_runtime(args.model_dir)
        check_model_dir(args.model_dir, runtime)  # before reading INPUT
        records = read_input(args.input, args.split, args.three_star, stats)
        judge = load_judge(args.model_dir, runtime)
    except (data.DataError, ModelDirError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dropped = sum(fs.dropped_neutral for fs in stats)
    if dropped:
        print(f"note: {dropped} 3-star review(s) left out: a 3-star rating is neither positive nor "
              "negative (--three-star negative or positive counts them)", file=sys.stderr)
    verdicts = judge([r.text for r in records])
    if all(r.label is not None for r in records):
        return _print_metrics(records, verdicts, args)
    folder = args.input.is_dir()
    for r, v in zip(records, verdicts, strict=True):
        label = v.label(args.threshold)
        if args.json:
            obj: dict = {"file": r.file} if folder else {}
            obj.update(line=r.line, label=label, p_positive=v.p_positive)
            if v.reason:
                obj["reason"] = v.reason
            print(json.dumps(obj, ensure_ascii=False))
        else:
            where = f"{r.file}\t{r.line}" if folder else str(r.line)
            print(f"{where}\t{label}\t{v.reason or f'{v.p_positive:.4f}'}")
    return 0


def _print_metrics(records: list[data.Record], verdicts: list[Verdict],
                   args: argparse.Namespace) -> int:
    from pipeline.report.metrics import compute_metrics

    judged = [(r.label, v.p_positive) for r, v in zip(records, verdicts, strict=True)
              if v.p_positive is not None]
    excluded = Counter(v.reason for v in verdicts if v.reason)
    if excluded:
        why = ", ".join(f"{n} with {reason!r}" for reason, n in excluded.items())
        print(f"note: {sum(excluded.values())} review(s) left out of the metrics, the model cannot "
              f"judge them: {why}", file=sys.stderr)
    if not judged:
        print(f"error: {args.input}: no review the model can judge", file=sys.stderr)
        return 2
    m = compute_metrics([y for y, _ in judged], [p for _, p in judged], args.threshold)
    out = {k: m[k] for k in METRIC_KEYS}
    out["excluded"] = sum(excluded.values())
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}\t{v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
