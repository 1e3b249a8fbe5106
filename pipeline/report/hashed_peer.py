"""The TF-IDF + LR peer at any scale: hashed n-grams and an out-of-core linear model.

The in-memory peer (:mod:`pipeline.report.peers`) fits a vocabulary and a logistic regression on a
matrix of every training review. This one never holds more than one chunk of reviews:

1. **document frequencies**, one pass: ``HashingVectorizer`` (word 1..``ngram_max``-grams of the
   pipeline's normalized text, ``2**hash_bits`` columns, no vocabulary to fit) and a count of the
   chunks' non-zero columns;
2. **TF-IDF** per chunk as scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` computes it:
   ``(1 + log tf) * (log((1 + n) / (1 + df)) + 1)``, rows L2-normalized;
3. **logistic regression by SGD** (``SGDClassifier(loss="log_loss", average=True)``, L2 penalty
   ``alpha``), ``epochs`` passes over the chunks in a seeded order per epoch.

What differs from the in-memory peer: hashing (collisions instead of ``min_df`` and
``max_features``), SGD instead of liblinear's exact optimum, and ``alpha`` (per review) in place of
``C``; the README's streaming section has what it costs on the pool. Reviews come from
:mod:`pipeline.data.stream`'s shards (their ``text`` feature): :func:`run_hashed_peer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import normalize as l2_rows

from pipeline.config import HashedTfidfConfig
from pipeline.progress import Progress
from pipeline.text.tokenizer import normalize

log = logging.getLogger(__name__)

Chunks = Callable[[int], Iterable[tuple[list[str], np.ndarray]]]  # epoch -> (texts, labels) chunks


class HashedTfidfLR:
    """Hashed TF-IDF + SGD logistic regression, fitted from chunks (module docstring)."""

    def __init__(self, cfg: HashedTfidfConfig) -> None:
        self.cfg = cfg
        self.vectorizer = HashingVectorizer(ngram_range=(1, cfg.ngram_max), n_features=2 ** cfg.hash_bits,
                                            alternate_sign=False, norm=None, preprocessor=normalize)
        self.idf: np.ndarray | None = None
        self.clf = SGDClassifier(loss="log_loss", alpha=cfg.alpha, average=True,
                                 random_state=cfg.seed)

    def document_frequencies(self, chunks: Iterable[tuple[list[str], np.ndarray]]) -> np.ndarray:
        """Pass 1: ``idf`` from the reviews' non-zero columns (any chunking gives the same)."""
        df = np.zeros(2 ** self.cfg.hash_bits, np.int64)
        n = 0
        for texts, _ in chunks:
            x = self.vectorizer.transform(texts).tocsr()
            x.sum_duplicates()
            df += np.bincount(x.indices, minlength=df.size)
            n += x.shape[0]
        if n == 0:
            raise ValueError("no training reviews for the hashed TF-IDF peer")
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        return self.idf

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        """Sublinear TF-IDF rows, L2-normalized."""
        x = self.vectorizer.transform(texts).tocsr()
        x.data = 1.0 + np.log(x.data)
        return l2_rows(x @ sparse.diags(self.idf))

    def fit(self, chunks: Chunks, progress: Progress | None = None) -> HashedTfidfLR:
        """Pass 1 over ``chunks(0)``, then ``epochs`` SGD passes over ``chunks(epoch)``."""
        self.document_frequencies(chunks(0))
        for epoch in range(1, self.cfg.epochs + 1):
            for texts, y in chunks(epoch):
                self.clf.partial_fit(self.features(texts), y, classes=[0, 1])
                if progress is not None:
                    progress.update(len(texts))
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.clf.predict_proba(self.features(texts))[:, 1].astype(np.float32)

    def size_bytes(self) -> int:
        """float32 weights and idf (what a deployment would store)."""
        return 4 * (self.clf.coef_.size + 1 + self.idf.size)


def run_hashed_peer(stream_dir: Path, out_dir: Path, cfg: HashedTfidfConfig) -> dict[str, Any]:
    """The hashed peer on a :mod:`pipeline.stream` folder: fit on ``train``, score ``val`` and
    ``test`` chunk by chunk; writes ``out_dir/metrics.json``."""
    from pipeline.data.stream import Shards, split_predictions, text_chunks
    from pipeline.report.metrics import compute_metrics, write_json

    model = HashedTfidfLR(cfg)
    with Progress(Shards.open(stream_dir, "train").reviews * cfg.epochs, "hashed TF-IDF peer",
                  "reviews") as progress:
        model.fit(lambda epoch: text_chunks(stream_dir, "train", cfg.chunk, seed=cfg.seed,
                                            epoch=epoch), progress)
    out: dict[str, Any] = {"config": cfg.__dict__, "size_bytes": model.size_bytes()}
    for split in ("val", "test"):
        p, y = split_predictions(stream_dir, split, cfg.chunk, model.predict_proba)
        out[split] = compute_metrics(y.tolist(), p)
        log.info("hashed TF-IDF peer: %s accuracy %.4f", split, out[split]["accuracy"])
    write_json(Path(out_dir) / "metrics.json", out)
    return {s: out[s]["accuracy"] for s in ("val", "test")}
