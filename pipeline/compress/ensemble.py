"""A stronger teacher signal for distillation: the BiGRU teacher mixed with a TF-IDF + LR model.

The two are diverse (word n-grams over the whole review vs a recurrent reader of 128 tokens), so
their mixed logit ``z = (1 - w) * z_bigru + w * z_tfidf`` is a better teacher than either. The TF-IDF
model memorises its training reviews, so a training review and its crops get the logit of a model
fitted on the *other* folds (cross-fitting); validation and test reviews get the mean of the fold
models. The weight ``w`` is the one with the best validation accuracy (ties: the smaller ``w``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config import TfidfConfig

log = logging.getLogger(__name__)

WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)


@dataclass
class CrossFit:
    """Out-of-fold TF-IDF logits of the training texts and fold-mean logits of other sets."""

    train: np.ndarray  # [n_texts] logit of the model that did not see the text's review
    sets: dict[str, np.ndarray]  # name -> [n] mean logit of the fold models


def crossfit_tfidf(
    reviews: Sequence[str], labels: Sequence[int], texts: Sequence[str], owner: np.ndarray,
    sets: dict[str, Sequence[str]], cfg: TfidfConfig, folds: int = 2, seed: int = 13,
) -> CrossFit:
    """Fit ``folds`` TF-IDF + LR models, each on the reviews outside its fold.

    ``texts[j]`` derives from training review ``owner[j]`` (the review itself or one of its crops)
    and is scored by the model fitted without that review.
    """
    from pipeline.parallel import run_parallel
    from pipeline.progress import Progress

    if folds < 2:
        raise ValueError(f"ensemble folds must be >= 2, got {folds}")
    fold = np.random.default_rng(seed).permutation(len(reviews)) % folds
    y = np.asarray(labels, np.int64)
    text_fold = fold[np.asarray(owner)]
    calls, mine = [], []
    for k in range(folds):
        keep = np.flatnonzero(fold != k)
        mine.append(np.flatnonzero(text_fold == k))
        calls.append(([reviews[i] for i in keep], y[keep].tolist(), cfg,
                      [texts[j] for j in mine[k]], {name: list(t) for name, t in sets.items()}))
    with Progress(folds, "TF-IDF cross-fit", "folds") as progress:
        results = run_parallel(_fold_logits, calls, on_done=lambda: progress.update(1))
    out = np.zeros(len(texts), np.float64)
    mean = {name: np.zeros(len(t), np.float64) for name, t in sets.items()}
    for k, (z_mine, z_sets) in enumerate(results):
        out[mine[k]] = z_mine
        for name in sets:
            mean[name] += z_sets[name] / folds
    return CrossFit(out, mean)


def _fold_logits(reviews: list[str], labels: list[int], cfg: TfidfConfig, texts: list[str],
                 sets: dict[str, list[str]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One fold's TF-IDF + LR: its logits of ``texts`` and of each set (a worker process's call)."""
    from pipeline.report.peers import train_tfidf_lr
    from pipeline.text.tokenizer import normalize

    model = train_tfidf_lr(reviews, labels, cfg, preprocess=normalize)
    return model.decision_function(texts), {n: model.decision_function(t) for n, t in sets.items()}


def choose_weight(z_teacher: np.ndarray, z_tfidf: np.ndarray, y: np.ndarray,
                  weights: Sequence[float] = WEIGHTS) -> tuple[float, dict[str, float]]:
    """The mix weight with the best accuracy on ``y`` (ties: smaller weight) and every score."""
    scores = {f"{w:g}": float(np.mean((mix(z_teacher, z_tfidf, w) >= 0) == (y == 1)))
              for w in weights}
    best = max(weights, key=lambda w: (scores[f"{w:g}"], -w))
    return float(best), scores


def mix(z_teacher: np.ndarray, z_tfidf: np.ndarray, w: float) -> np.ndarray:
    """The ensemble logit."""
    return (1.0 - w) * np.asarray(z_teacher, np.float64) + w * np.asarray(z_tfidf, np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, ``p`` clipped to ``[1e-6, 1 - 1e-6]``."""
    q = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """P(positive) of a logit, in float64."""
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))
