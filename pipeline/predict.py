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
import gzip
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline import data
from pipeline.tokenizer import Tokenizer

log = logging.getLogger(__name__)

RUNTIMES = ("keras", "tflite", "tflm")
MODEL_INFO = "model.json"

Predictor = Callable[[Sequence[str]], np.ndarray]


def load_predictor(model_dir: Path, runtime: str = "keras") -> Predictor:
    """A function from review strings to P(positive) for the model in ``model_dir``."""
    model_dir = Path(model_dir)
    info_path = model_dir / MODEL_INFO
    if not info_path.exists():
        raise FileNotFoundError(
            f"{model_dir} is not a model directory (no {MODEL_INFO}); point at a stage output "
            "such as runs/full/teacher or models/release"
        )
    info = json.loads(info_path.read_text())
    if runtime not in info.get("runtimes", {}):
        raise ValueError(
            f"{model_dir} has no {runtime!r} model; it offers: {', '.join(info['runtimes'])}"
        )
    tok = Tokenizer.load(model_dir)
    if runtime == "keras":
        from pipeline.models import load_model
        from pipeline.train import predict_proba

        model = load_model(model_dir / info["runtimes"]["keras"])

        def keras_predict(texts: Sequence[str]) -> np.ndarray:
            return predict_proba(model, tok.ids(texts))

        return keras_predict
    from pipeline.quantize import load_tflm_predictor

    int8_predict = load_tflm_predictor(model_dir, runtime)
    return lambda texts: int8_predict(tok.ids(texts))


def read_input(path: Path, split: str | None = None) -> list[tuple[str, int | None]]:
    """Rows ``(text, label or None)`` from any readable review file/folder."""
    path = Path(path)
    try:
        rows: list[tuple[str, int | None]] = list(data.iter_reviews(path))
    except data.UnknownFormatError:
        rows = _read_unlabeled_jsonl(path)
    if split:
        rows = [r for r in rows if data.split_of(r[0]) == split]
    if not rows:
        raise data.EmptyDatasetError(f"{path}: no reviews to predict" +
                                     (f" in split {split!r}" if split else ""))
    return rows


def _read_unlabeled_jsonl(path: Path) -> list[tuple[str, int | None]]:
    """JSON lines with ``text`` and no label (the data module only reads labelled data)."""
    rows: list[tuple[str, int | None]] = []
    bad = 0
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gz else open)(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj["text"]
                if not isinstance(text, str):
                    raise TypeError
                rows.append((text, None))
            except (json.JSONDecodeError, KeyError, TypeError):
                bad += 1
    if not rows:
        raise data.UnknownFormatError(
            f"{path}: not a review file this tool reads. Expected one of the formats in the "
            "README (Amazon 2023 / McAuley JSON lines, polarity CSV, fastText lines) or JSON "
            "lines with a 'text' field"
        )
    if bad:
        log.warning("%s: %d malformed lines skipped", path, bad)
    return rows


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
        from pipeline.evaluate import compute_metrics

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
