"""Classic peer baseline: TF-IDF word n-grams + logistic regression, same split as the models."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline

from pipeline.config import TfidfConfig
from pipeline.parallel import cores, run_parallel

log = logging.getLogger(__name__)


def _vectorizer(cfg: TfidfConfig, preprocess: Callable[[str], str] | None) -> TfidfVectorizer:
    """Build the vectorizer; a given ``preprocess`` replaces sklearn's lowercasing step."""
    return TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        min_df=cfg.min_df,
        max_features=cfg.max_features,
        sublinear_tf=cfg.sublinear_tf,
        lowercase=True,  # ignored by sklearn when preprocessor is set: preprocess must lowercase
        preprocessor=preprocess,
    )


def _classifier(cfg: TfidfConfig) -> LogisticRegression:
    return LogisticRegression(C=cfg.C, solver="liblinear", max_iter=1000, random_state=cfg.seed)


def _check(texts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    y = np.asarray(labels, dtype=np.int64)
    if len(texts) != y.size:
        raise ValueError(f"{len(texts)} texts but {y.size} labels")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("labels must contain both classes 0 and 1 (and nothing else)")
    return y


def train_tfidf_lr(
    train_texts: list[str],
    train_labels: list[int],
    cfg: TfidfConfig,
    preprocess: Callable[[str], str] | None = None,
) -> Pipeline:
    """Fit TfidfVectorizer(1..ngram_max) + LogisticRegression(C) on the training split.

    ``preprocess`` (e.g. the pipeline's text normaliser) becomes the vectorizer's preprocessor,
    replacing its built-in lowercasing; use a module-level function to keep the model picklable.
    """
    y = _check(train_texts, train_labels)
    model = Pipeline([("tfidf", _vectorizer(cfg, preprocess)), ("lr", _classifier(cfg))])
    model.fit(list(train_texts), y)
    return model


def tfidf_size_bytes(model: Pipeline) -> int:
    """Honest model size: length of ``pickle.dumps(model)`` (vocabulary, idf and weights)."""
    return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


def predict_proba(model: Pipeline, texts: list[str]) -> np.ndarray:
    """P(positive) for each text, as a float64 array."""
    proba = model.predict_proba(list(texts))
    pos = list(model.classes_).index(1)
    return np.asarray(proba[:, pos], dtype=np.float64)


def fit_grid(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    grid: Sequence[float],
    cfg: TfidfConfig = TfidfConfig(),  # noqa: B008 - frozen dataclass, immutable default
    preprocess: Callable[[str], str] | None = None,
) -> tuple[TfidfVectorizer, dict[float, LogisticRegression]]:
    """One vectorizer fit and one LR per C of ``grid``: ``Pipeline([("tfidf", vec), ("lr", lr[C])])``
    equals ``train_tfidf_lr`` with that C (the vectorizer does not depend on C)."""
    if not grid:
        raise ValueError("empty C grid")
    y = _check(train_texts, train_labels)
    vec = _vectorizer(cfg, preprocess)
    x = vec.fit_transform(list(train_texts))
    return vec, {float(c): _classifier(replace(cfg, C=float(c))).fit(x, y) for c in grid}


def _val_scores(vec: TfidfVectorizer, clfs: dict[float, LogisticRegression],
                val_texts: Sequence[str], val_labels: Sequence[int]) -> dict[float, float]:
    y_va = np.asarray(val_labels, dtype=np.int64)
    if len(val_texts) != y_va.size or y_va.size == 0:
        raise ValueError("val_texts and val_labels must be non-empty and of equal length")
    x_va = vec.transform(list(val_texts))
    return {c: float(accuracy_score(y_va, clf.predict(x_va))) for c, clf in clfs.items()}


def _best(scores: dict[float, float]) -> float:
    return max(sorted(scores), key=lambda c: scores[c])  # max keeps first -> smallest C on ties


def select_C(
    train_texts: list[str],
    train_labels: list[int],
    val_texts: list[str],
    val_labels: list[int],
    grid: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0),
    cfg: TfidfConfig = TfidfConfig(),  # noqa: B008 - frozen dataclass, immutable default
    preprocess: Callable[[str], str] | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick C by validation accuracy (ties -> smallest C); returns (best_C, {C: val_accuracy}).

    The result equals calling ``train_tfidf_lr`` with each C (:func:`fit_grid`).
    """
    vec, clfs = fit_grid(train_texts, train_labels, grid, cfg, preprocess)
    scores = _val_scores(vec, clfs, val_texts, val_labels)
    return _best(scores), scores


def normalize_without_stopwords(text: str) -> str:
    """The pipeline's normalization followed by stopword removal (module-level: picklable)."""
    from pipeline.text.tokenizer import normalize, remove_stopwords

    return remove_stopwords(normalize(text))


def run_tfidf_peer(
    data_dir: Path, out_dir: Path, cfg: TfidfConfig, heldout: Path | None = None,
    grid: Sequence[float] = (8.0, 16.0, 32.0, 64.0),
) -> dict:
    """Stage: TF-IDF + LR on the pipeline's split and normalization; C picked on validation.

    Also measures the stopword option once (normalization with vs without stopword removal, same C)
    and writes ``metrics.json`` with test/held-out metrics, size and that ablation.
    """
    from pipeline.data import read_jsonl
    from pipeline.report.metrics import eval_sets, evaluate_predictor, write_json
    from pipeline.text.tokenizer import normalize

    rows = {s: read_jsonl(Path(data_dir) / f"{s}.jsonl") for s in ("train", "val")}
    texts = {s: [t for t, _ in r] for s, r in rows.items()}
    labels = {s: [int(y) for _, y in r] for s, r in rows.items()}
    prep = {"stopwords_kept": normalize, "stopwords_removed": normalize_without_stopwords}
    log.info("TF-IDF peer: fitting C in %s on %d training reviews, with and without stopwords "
             "(%d processes)", list(grid), len(labels["train"]), min(len(prep), cores()))
    fits = dict(zip(prep, run_parallel(fit_grid, [(texts["train"], labels["train"], grid, cfg, p)
                                                  for p in prep.values()]), strict=True))
    scores = {name: _val_scores(vec, clfs, texts["val"], labels["val"])
              for name, (vec, clfs) in fits.items()}
    best_c = _best(scores["stopwords_kept"])  # the stopword ablation uses the same C
    log.info("TF-IDF peer: C=%g (validation accuracy by C %s)", best_c, scores["stopwords_kept"])
    sets = eval_sets(data_dir, heldout)
    results: dict = {"C": best_c, "val_accuracy_by_C": scores["stopwords_kept"],
                     "val_accuracy_by_C_stopwords_removed": scores["stopwords_removed"]}
    for name, (vec, clfs) in fits.items():
        model = Pipeline([("tfidf", vec), ("lr", clfs[best_c])])
        metrics = evaluate_predictor(lambda t, m=model: predict_proba(m, list(t)), sets)
        metrics["size_bytes"] = tfidf_size_bytes(model)
        metrics["features"] = len(vec.vocabulary_)
        results[name] = metrics
    write_json(Path(out_dir) / "metrics.json", results)
    test = results["stopwords_kept"]["test"]
    return {"C": best_c, "test_accuracy": test["accuracy"], "test_roc_auc": test["roc_auc"]}


def chosen(out_dir: Path, cfg: TfidfConfig) -> TfidfConfig:
    """``cfg`` with the C that :func:`run_tfidf_peer` chose on validation (its ``metrics.json``)."""
    with open(Path(out_dir) / "metrics.json", encoding="utf-8") as f:
        return replace(cfg, C=float(json.load(f)["C"]))
