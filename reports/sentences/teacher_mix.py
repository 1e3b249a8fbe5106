"""What the students are taught on short texts: a run's BiGRU teacher mixed with its TF-IDF peer.

    python reports/sentences/teacher_mix.py RUN FILE [FILE ...]

The mix is ``teacher_targets``' (``pipeline.compress.ensemble.mix`` of the two logits, TF-IDF weight
``w``), except that the TF-IDF half here is the peer fitted on every training review
(``tfidf_peer.py``) where the stage uses a cross-fitted one. Prints one JSON line per file and
weight: balanced accuracy and ROC-AUC; ``chosen`` marks the weight the run's stage chose on
validation (``RUN/teacher_targets/ensemble.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tfidf_peer import fit_peer, labelled

from pipeline.compress import ensemble
from pipeline.compress.distill import ENSEMBLE_JSON
from pipeline.report.metrics import compute_metrics
from pipeline.report.peers import predict_proba
from pipeline.report.predictors import load_predictor

WEIGHTS = (0.0, 0.35, 0.5, 0.65, 1.0)


def main(run: Path, files: list[Path]) -> int:
    chosen = json.loads((run / "teacher_targets" / ENSEMBLE_JSON).read_text())["weight"]
    peer, teacher = fit_peer(run), load_predictor(run / "teacher", "keras")
    for path in files:
        texts, y = labelled(path)
        z_t = ensemble.logit(np.asarray(teacher(texts)))
        z_f = ensemble.logit(predict_proba(peer, texts))
        for w in sorted({*WEIGHTS, chosen}):
            m = compute_metrics(y, ensemble.sigmoid(ensemble.mix(z_t, z_f, w)))
            print(json.dumps({"file": str(path), "tfidf_weight": w, "chosen": w == chosen,
                              "balanced_accuracy": m["balanced_accuracy"], "roc_auc": m["roc_auc"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
