"""Predict sentiment with a trained model directory.

    python -m pipeline.predict MODEL_DIR INPUT [--runtime keras|tflite|tflm] [--split test] [--json]

INPUT is any file or folder the data module reads (see README), or JSON lines with ``text`` and an
optional ``label``. With labels and ``--json`` one JSON object of metrics is printed; without labels
one prediction per line (``label<TAB>P(positive)``).

A model directory holds ``model.json`` (which runtimes it supports and their files), the tokenizer
(``tokenizer.model``, ``tokenizer.json``) and the model files themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import data
from pipeline.data.inputs import read_input
from pipeline.report.predictors import RUNTIMES, load_predictor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("input", type=Path)
    ap.add_argument("--runtime", choices=RUNTIMES, default="keras")
    ap.add_argument("--split", choices=("train", "val", "test"),
                    help="keep only reviews of this split (md5 rule)")
    ap.add_argument("--json", action="store_true", help="print metrics as one JSON object")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        rows = read_input(args.input, args.split)
        predict = load_predictor(args.model_dir, args.runtime)
    except (data.DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prob = predict([t for t, _ in rows])
    labels = [y for _, y in rows]
    if all(y is not None for y in labels):
        from pipeline.report.metrics import compute_metrics

        m = compute_metrics(labels, prob, args.threshold)
        keys = ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
        out = {k: m[k] for k in keys}
        if args.json:
            print(json.dumps(out))
        else:
            for k in keys:
                print(f"{k}\t{out[k]}")
        return 0
    for p in prob:
        print(f"{'positive' if p >= args.threshold else 'negative'}\t{p:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
