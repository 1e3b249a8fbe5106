"""A stronger teacher signal for distillation: the BiGRU teacher mixed with a TF-IDF + LR model.

The two are diverse (word n-grams over the whole review vs a recurrent reader of 128 tokens), so
their mixed logit ``z = (1 - w) * z_bigru + w * z_tfidf`` is a better teacher than either. The TF-IDF
model memorises its training reviews, so a training review and its crops get the logit of a model
fitted on the *other* folds (cross-fitting); validation and test reviews get the mean of the fold
models. The weight ``w`` is the one with the best validation accuracy (ties: the smaller ``w``).
With ``pipeline.all --set data.stream=true`` the TF-IDF half is the hashed peer's model
(:func:`crossfit_hashed`), fitted and applied in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import HashedTfidfConfig, TfidfConfig

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


def crossfit_hashed(
    train: Iterable[tuple[str, int]], crops: Iterable[str], sets: dict[str, Iterable[str]],
    cfg: HashedTfidfConfig, work_dir: Path, folds: int = 2, seed: int = 13,
) -> CrossFit:
    """:func:`crossfit_tfidf` in bounded memory, with the hashed peer's model
    (:mod:`pipeline.report.hashed_peer`).

    The training texts are the ``train`` reviews in order, then ``crops``; crop ``j`` derives from
    review ``j % n``, as in :func:`pipeline.compress.distill.distillation_texts`. The reviews are
    hashed once into a :class:`~pipeline.report.hashed_peer.CountCache` in ``work_dir``; each SGD
    pass over it feeds every fold's model the rows outside its fold. The folds are those of
    :func:`crossfit_tfidf`; the idf is the whole training split's (it sees no labels).
    """
    from pipeline.progress import Progress
    from pipeline.report.hashed_peer import CountCache, HashedTfidfLR, fit_models
    from pipeline.text.tokenizer import chunks

    if folds < 2:
        raise ValueError(f"ensemble folds must be >= 2, got {folds}")
    models = [HashedTfidfLR(cfg) for _ in range(folds)]
    with Progress(None, "TF-IDF cross-fit: hashing the training split", "reviews") as progress:
        cache = CountCache.write(train, models[0].vectorizer, Path(work_dir) / "counts", cfg.chunk,
                                 progress)
    n = len(cache)
    fold = np.random.default_rng(seed).permutation(n) % folds
    first = models[0]
    with Progress(n * cfg.epochs, f"TF-IDF cross-fit: SGD, {folds} folds", "reviews") as progress:
        fit_models(models, cache, lambda k, idx: fold[idx] != k, progress)

    def own(x, owners: np.ndarray) -> np.ndarray:  # each row scored by the model without its review
        z = np.zeros(x.shape[0], np.float64)
        for k, m in enumerate(models):
            rows = np.flatnonzero(fold[owners] == k)
            if rows.size:
                z[rows] = m.decision_function(x[rows])
        return z

    def mean(texts: list[str]) -> np.ndarray:
        x = first.features(texts)
        return np.mean([m.decision_function(x) for m in models], axis=0)

    out = [own(first.tfidf(counts), idx) for counts, _, idx in cache.in_order()]
    done = n
    with Progress(None, "TF-IDF cross-fit: crops", "texts") as progress:
        for part in chunks(crops, cfg.chunk):
            out.append(own(first.features(part), np.arange(done, done + len(part)) % n))
            done += len(part)
            progress.update(len(part))
    z_sets = {name: np.concatenate([mean(p) for p in chunks(t, cfg.chunk)] or [np.zeros(0)])
              for name, t in sets.items()}
    return CrossFit(np.concatenate(out), z_sets)


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
