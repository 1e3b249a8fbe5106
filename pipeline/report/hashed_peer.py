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
:mod:`pipeline.data.stream`'s shards (their ``text`` feature): :func:`run_hashed_peer`; or from a
split file of :func:`pipeline.data.build_dataset`, for ``pipeline.all --set data.stream=true``:
:func:`run_split_peer`, which hashes each review once into a :class:`CountCache` on disk and reads
the counts back for every SGD pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        return self.tfidf(self.vectorizer.transform(texts).tocsr())

    def tfidf(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Sublinear TF-IDF rows, L2-normalized, of hashed n-gram ``counts``."""
        x = counts.astype(np.float64)  # a copy: the counts stay as they were
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

    def fit_cache(self, cache: CountCache, progress: Progress | None = None) -> HashedTfidfLR:
        """:meth:`fit` from hashed counts on disk (:func:`fit_models` with this model alone)."""
        fit_models([self], cache, progress=progress)
        return self

    def decision_function(self, x: sparse.csr_matrix) -> np.ndarray:
        """Logits of TF-IDF rows (:meth:`features` or :meth:`tfidf`)."""
        return self.clf.decision_function(x)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.clf.predict_proba(self.features(texts))[:, 1].astype(np.float32)

    def size_bytes(self) -> int:
        """float32 weights and idf (what a deployment would store)."""
        return 4 * (self.clf.coef_.size + 1 + self.idf.size)


class CountCache:
    """Hashed n-gram counts of labelled reviews, written once, one ``.npz`` file per chunk, with
    their document frequencies: every later pass reads counts instead of hashing the text again
    (hashing is most of the peer's time). Disk: about 8 bytes per distinct n-gram of a review."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = np.load(self.folder / "meta.npz")
        self.df, self.n, self.starts = meta["df"], int(meta["n"]), meta["starts"]

    @classmethod
    def write(cls, rows: Iterable[tuple[str, int]], vectorizer: HashingVectorizer, folder: Path,
              chunk: int, progress: Progress | None = None) -> CountCache:
        """Hash ``rows`` (text, label) ``chunk`` at a time into ``folder`` (made afresh)."""
        from pipeline.text.tokenizer import chunks

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        df = np.zeros(vectorizer.n_features, np.int64)
        starts = [0]
        for i, part in enumerate(chunks(rows, chunk)):
            x = vectorizer.transform([t for t, _ in part]).tocsr()
            x.sum_duplicates()
            df += np.bincount(x.indices, minlength=df.size)
            np.savez(folder / f"{i:06d}.npz", indptr=x.indptr, indices=x.indices,
                     data=x.data.astype(np.float32), shape=np.array(x.shape),
                     y=np.array([int(y) for _, y in part], np.int8))
            starts.append(starts[-1] + len(part))
            if progress is not None:
                progress.update(len(part))
        np.savez(folder / "meta.npz", df=df, n=starts[-1], starts=np.array(starts, np.int64))
        return cls(folder)

    def __len__(self) -> int:
        return self.n

    def idf(self) -> np.ndarray:
        """Smoothed idf, as ``TfidfVectorizer(smooth_idf=True)``."""
        if self.n == 0:
            raise ValueError("no training reviews for the hashed TF-IDF peer")
        return np.log((1.0 + self.n) / (1.0 + self.df)) + 1.0

    def chunk(self, i: int) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        """Chunk ``i``: counts, labels and the rows' indices in the stream."""
        with np.load(self.folder / f"{i:06d}.npz") as z:
            x = sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            return x, z["y"].astype(np.int64), np.arange(self.starts[i], self.starts[i + 1])

    def in_order(self) -> Iterator[tuple[sparse.csr_matrix, np.ndarray, np.ndarray]]:
        """Every chunk in stream order."""
        return (self.chunk(i) for i in range(len(self.starts) - 1))

    def shuffled(self, seed: int, epoch: int) -> Iterator[tuple[sparse.csr_matrix, np.ndarray,
                                                                np.ndarray]]:
        """Every chunk, the chunks and the rows within each in an order seeded by ``(seed, epoch)``."""
        rng = np.random.default_rng([seed, epoch])
        for i in rng.permutation(len(self.starts) - 1):
            x, y, idx = self.chunk(int(i))
            p = rng.permutation(len(y))
            yield x[p], y[p], idx[p]


def fit_models(models: Sequence[HashedTfidfLR], cache: CountCache,
               keep: Callable[[int, np.ndarray], np.ndarray] | None = None,
               progress: Progress | None = None) -> None:
    """Fit ``models`` (one configuration) from ``cache`` together: ``idf`` from its document
    frequencies, then ``epochs`` SGD passes over the chunks and their rows in a seeded order. Each
    chunk's TF-IDF is computed once; model ``k`` steps on the rows ``keep(k, row_indices)`` selects
    (every row without ``keep``: the cross-fit's folds use it)."""
    cfg = models[0].cfg
    for m in models:
        m.idf = cache.idf()
    for epoch in range(1, cfg.epochs + 1):
        for counts, y, idx in cache.shuffled(cfg.seed, epoch):
            x = models[0].tfidf(counts)
            for k, m in enumerate(models):
                rows = keep(k, idx) if keep is not None else slice(None)
                if keep is None or rows.any():
                    m.clf.partial_fit(x[rows], y[rows], classes=[0, 1])
            if progress is not None:
                progress.update(len(y))


def run_split_peer(data_dir: Path, out_dir: Path, work_dir: Path, cfg: HashedTfidfConfig,
                   heldout: Path | None = None) -> dict[str, Any]:
    """Stage ``peer_tfidf`` of ``pipeline.all --set data.stream=true``: the hashed peer fitted on
    ``train.jsonl`` through a :class:`CountCache` in ``work_dir``, evaluated like every model
    (:func:`pipeline.report.metrics.evaluate_predictor`); ``metrics.json`` as the in-memory peer's,
    without its stopword ablation (``alpha`` where that one has ``C``)."""
    from pipeline.data import iter_jsonl
    from pipeline.report.metrics import eval_sets, evaluate_predictor, write_json

    model = HashedTfidfLR(cfg)
    train = Path(data_dir) / "train.jsonl"
    with Progress(None, "hashed TF-IDF peer: hashing the training split", "reviews") as progress:
        cache = CountCache.write(iter_jsonl(train), model.vectorizer, Path(work_dir) / "counts",
                                 cfg.chunk, progress)
    log.info("hashed TF-IDF peer: %d training reviews, %d SGD passes (alpha %g)", len(cache),
             cfg.epochs, cfg.alpha)
    with Progress(len(cache) * cfg.epochs, "hashed TF-IDF peer: SGD", "reviews") as progress:
        model.fit_cache(cache, progress)
    metrics = evaluate_predictor(model.predict_proba, eval_sets(data_dir, heldout))
    metrics["size_bytes"] = model.size_bytes()
    metrics["features"] = 2 ** cfg.hash_bits
    results = {"hashed": True, "alpha": cfg.alpha, "config": cfg.__dict__,
               "name": f"TF-IDF 1-{cfg.ngram_max}gram hashed (2^{cfg.hash_bits}) + SGD LR "
                       f"(alpha={cfg.alpha:g})",
               "stopwords_kept": metrics}
    write_json(Path(out_dir) / "metrics.json", results)
    test = metrics["test"]
    return {"alpha": cfg.alpha, "test_accuracy": test["accuracy"], "test_roc_auc": test["roc_auc"]}


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
