"""The distillation teacher's TF-IDF half is cross-fitted: a training text never gets the logit of a
model that saw its review (else the mix would copy the training labels)."""

from __future__ import annotations

import numpy as np
from conftest import polar_rows

from pipeline.compress import ensemble as ens
from pipeline.config import TfidfConfig


def test_crossfit_logits_come_from_models_that_did_not_see_the_review() -> None:
    # Each review is a word of its own with a random label: memorised by a model that saw it,
    # a coin flip for one that did not.
    rng = np.random.default_rng(0)
    n = 400
    reviews = [f"item{i:04d} unique{i:04d}" for i in range(n)]
    labels = rng.integers(0, 2, n).tolist()
    texts = reviews + [f"unique{i:04d}" for i in range(n)]  # each review, then a "crop" of it
    owner = np.arange(len(texts)) % n
    fit = ens.crossfit_tfidf(reviews, labels, texts, owner, {"val": reviews[:50]},
                             TfidfConfig(min_df=1, C=100.0), folds=2, seed=1)
    y = np.array(labels * 2)
    oof_acc = float(np.mean((fit.train >= 0) == (y == 1)))
    assert 0.4 < oof_acc < 0.6, oof_acc  # an in-fold model would be ~1.0
    assert fit.train.shape == (2 * n,) and fit.sets["val"].shape == (50,)


def test_crossfit_learns_a_real_signal_and_the_weight_is_chosen_on_accuracy() -> None:
    rows = polar_rows(600, seed=3)
    reviews, labels = [t for t, _ in rows], [y for _, y in rows]
    val = polar_rows(200, seed=4)
    fit = ens.crossfit_tfidf(reviews, labels, reviews, np.arange(len(reviews)),
                             {"val": [t for t, _ in val]}, TfidfConfig(min_df=1), folds=3)
    y_val = np.array([y for _, y in val])
    assert np.mean((fit.train >= 0) == (np.array(labels) == 1)) > 0.95
    noise = np.random.default_rng(5).normal(size=len(val))  # a teacher that knows nothing
    w, scores = ens.choose_weight(noise, fit.sets["val"], y_val)
    assert w >= 0.5 and scores[f"{w:g}"] == max(scores.values()) > scores["0"] + 0.3
    w, _ = ens.choose_weight(fit.sets["val"], noise, y_val)  # now the teacher is the good one
    assert w == 0.0


def test_hashed_crossfit_streams_and_never_scores_a_text_with_a_model_that_saw_its_review(
        tmp_path) -> None:
    """The bounded-memory cross-fit (``data.stream``): the same guarantee as the in-memory one."""
    from pipeline.config import HashedTfidfConfig

    rng = np.random.default_rng(0)
    n = 400
    reviews = [f"item{i:04d} unique{i:04d}" for i in range(n)]
    labels = rng.integers(0, 2, n).tolist()
    crops = [f"unique{i:04d}" for i in range(n)]
    cfg = HashedTfidfConfig(hash_bits=16, epochs=20, chunk=37, alpha=1e-5)
    fit = ens.crossfit_hashed(iter(zip(reviews, labels, strict=True)), iter(crops),
                              {"val": iter(reviews[:50])}, cfg, tmp_path, folds=2, seed=1)
    y = np.array(labels * 2)
    assert fit.train.shape == (2 * n,) and fit.sets["val"].shape == (50,)
    oof_acc = float(np.mean((fit.train >= 0) == (y == 1)))
    assert 0.4 < oof_acc < 0.6, oof_acc  # an in-fold model would be ~1.0
    # ... while the fold-mean of the validation set (seen by one model of two) knows it better
    assert np.mean((fit.sets["val"] >= 0) == (y[:50] == 1)) > 0.7

    rows = polar_rows(600, seed=3)
    val = polar_rows(200, seed=4)
    fit = ens.crossfit_hashed(iter(rows), iter([]), {"val": (t for t, _ in val)},
                              HashedTfidfConfig(hash_bits=14, epochs=5, chunk=64, alpha=1e-4),
                              tmp_path / "polar", folds=3)
    assert np.mean((fit.train >= 0) == (np.array([y for _, y in rows]) == 1)) > 0.95
    assert np.mean((fit.sets["val"] >= 0) == (np.array([y for _, y in val]) == 1)) > 0.95
