"""Is a held-out miss the model or its threshold? The release and its peers at two thresholds.

    python reports/sentences/operating_point.py RUN FILE [FILE ...]

Scores the int8 release on the device path (``RUN/int8``, TFLM interpreter), the TF-IDF + LR peer
fitted again as its stage did (``tfidf_peer.py``) and the fastText peer (``RUN/peer_fasttext/
model.bin``) on each labelled FILE, and prints one JSON line per model and file: accuracy and
balanced accuracy at the threshold 0.5 every report uses and at the threshold that maximizes the
model's own balanced accuracy on the validation split (``RUN/data/val.jsonl``; 0.05 to 0.95 in
steps of 0.01, ties to the one nearest 0.5), and ROC-AUC, which no threshold changes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tfidf_peer import fit_peer, labelled

from pipeline.report.fasttext_peer import ft_text, predict_lines
from pipeline.report.metrics import compute_metrics
from pipeline.report.peers import predict_proba
from pipeline.report.predictors import load_predictor

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def validation_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The grid threshold of the highest validation balanced accuracy (ties: nearest 0.5)."""
    scores = np.array([compute_metrics(y, p, float(t))["balanced_accuracy"] for t in GRID])
    best = np.flatnonzero(scores == scores.max())
    return float(GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]])


def models(run: Path) -> dict[str, Callable[[Sequence[str]], np.ndarray]]:
    import fasttext

    tfidf, ft = fit_peer(run), fasttext.load_model(str(run / "peer_fasttext" / "model.bin"))
    return {"int8": load_predictor(run / "int8", "tflm"),
            "tfidf": lambda texts: predict_proba(tfidf, list(texts)),
            "fasttext": lambda texts: predict_lines(ft, [ft_text(t) for t in texts])}


def main(run: Path, files: list[Path]) -> int:
    val_texts, val_y = labelled(run / "data" / "val.jsonl")
    sets = {path: labelled(path) for path in files}
    for name, predict in models(run).items():
        t = validation_threshold(np.asarray(val_y), np.asarray(predict(val_texts), np.float64))
        for path, (texts, labels) in sets.items():
            p = np.asarray(predict(texts), np.float64)
            at = {str(th): compute_metrics(labels, p, th) for th in (0.5, t)}
            print(json.dumps({
                "model": name, "file": str(path), "validation_threshold": t,
                **{k: {th: m[k] for th, m in at.items()} for k in ("accuracy", "balanced_accuracy")},
                "roc_auc": at["0.5"]["roc_auc"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
