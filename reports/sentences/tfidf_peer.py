"""The TF-IDF + LR peer of a run, fitted again as its stage did, scored on labelled files.

    python reports/sentences/tfidf_peer.py RUN FILE [FILE ...]

Fits on ``RUN/data/train.jsonl`` with the pipeline's normalization, the run's peer settings
(``RUN/config.json``) and the C that ``RUN/peer_tfidf`` chose on validation
(``pipeline.report.peers``), then prints one JSON line of metrics per file,
the keys of ``python -m pipeline.predict ... --json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.config import TfidfConfig
from pipeline.data import read_jsonl
from pipeline.data.inputs import read_input
from pipeline.predict import METRIC_KEYS
from pipeline.report.metrics import compute_metrics
from pipeline.report.peers import chosen, predict_proba, train_tfidf_lr
from pipeline.text.tokenizer import normalize


def fit_peer(run: Path):
    """The run's TF-IDF + LR peer fitted again on its training split, as its stage did."""
    peer = TfidfConfig(**json.loads((run / "config.json").read_text())["peer"])
    train = read_jsonl(run / "data" / "train.jsonl")
    return train_tfidf_lr([t for t, _ in train], [int(y) for _, y in train],
                          chosen(run / "peer_tfidf", peer), normalize)


def labelled(path: Path) -> tuple[list[str], list[int]]:
    """``(texts, labels)`` of a labelled file; exits with a message if a row has no label."""
    rows = [(r.text, r.label) for r in read_input(path)]
    if any(y is None for _, y in rows):
        sys.exit(f"{path}: every row needs a label (1 positive, 0 negative) to be scored")
    return [t for t, _ in rows], [y for _, y in rows]


def main(run: Path, files: list[Path]) -> int:
    model = fit_peer(run)
    for path in files:
        texts, y = labelled(path)
        m = compute_metrics(y, predict_proba(model, texts))
        print(json.dumps({"file": str(path), **{k: m[k] for k in METRIC_KEYS if k in m}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
