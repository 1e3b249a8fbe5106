"""Tests for pipeline.stream: the streaming path gives the in-memory path's reviews and splits,
its TFRecords hold the tokenizer's ids, and the tf.data reader feeds training (tiny fixtures)."""

from __future__ import annotations

import collections
import csv
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from pipeline import data
from pipeline.config import DataConfig, StreamConfig, TokenizerConfig
from pipeline.data.stream import bounded_sample, build_stream, make_dataset
from pipeline.text.tokenizer import Tokenizer

WORDS = {1: ["great", "love", "works", "perfect", "happy"], 0: ["bad", "broken", "awful", "junk"]}
NOISE = ["the", "cable", "phone", "was", "it", "and", "this", "case", "very", "my", "Très", "naïve"]
TOK = TokenizerConfig(vocab_size=80, seq_len=12)
CFG = StreamConfig(spill_buckets=4, shards=3, tokenizer_sample=150, encode_batch=7)


def _text(rng: random.Random, y: int) -> str:
    words = rng.choices(NOISE, k=rng.randint(2, 18)) + rng.choices(WORDS[y], k=2)
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A folder with a gzipped Amazon-2023 JSON-lines file (3★, duplicates, a malformed row)
    and a polarity CSV that repeats some of its reviews."""
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("raw")
    rows = []
    with gzip.open(root / "rated.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(260):
            stars = rng.choice([1, 2, 3, 4, 5])
            t = _text(rng, int(stars > 3))
            rows.append((t, stars))
            f.write(json.dumps({"rating": stars, "title": "", "text": t}) + "\n")
            if i % 25 == 0:
                f.write(json.dumps({"rating": stars, "title": "", "text": t}) + "\n")  # duplicate
        f.write("{not json\n")
    with open(root / "polarity.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        for t, stars in rows[:30]:
            if stars != 3:
                w.writerow(["2" if stars > 3 else "1", "", t])
        for _ in range(80):
            y = rng.randint(0, 1)
            w.writerow([str(y + 1), "title", _text(rng, y)])
    return root


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("stream")
    return out, build_stream(raw, out, CFG, TOK)


def _records(root: Path, split: str) -> list[tuple[tuple[int, ...], int]]:
    ds = make_dataset(root, split, batch_size=5, shuffle_buffer=0)
    out = []
    for ids, y in ds.as_numpy_iterator():
        for row, lab in zip(ids, y, strict=True):
            out.append((tuple(int(v) for v in row if v != 0), int(lab)))
    return out


def test_same_reviews_and_splits_as_the_in_memory_path(raw, built) -> None:
    out, stats = built
    splits, ref = data.load_splits(raw, DataConfig())
    assert stats["totals"]["unique"] == ref["totals"]["unique"]
    assert stats["totals"]["duplicates"] == ref["totals"]["duplicates"]
    assert stats["totals"]["malformed"] == ref["totals"]["malformed"] == 1
    assert stats["totals"]["neutral_dropped"] == ref["totals"]["neutral_dropped"] > 0
    tok = Tokenizer.load(out / "tokenizer")
    for split in data.SPLITS:
        assert stats["splits"][split]["n"] == len(splits[split])
        assert sum(stats["splits"][split]["shards"]) == len(splits[split])
        want = collections.Counter((tuple(ids), y) for ids, y in zip(
            tok.ids([s for s, _ in splits[split]]), [y for _, y in splits[split]], strict=True))
        assert collections.Counter(_records(out, split)) == want
    assert all(len(ids) <= TOK.seq_len for ids, _ in _records(out, "train"))
    files = sorted(p.name for p in (out / "train").iterdir())
    assert files == [f"shard-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert not (out / ".work").exists()
    assert json.loads((out / "stats.json").read_text())["peak_rss_mb"] > 0


def test_tokenizer_trained_on_bounded_sample(built) -> None:
    _, stats = built
    assert stats["totals"]["tokenizer_sample"] == min(150, stats["splits"]["train"]["n"])


def test_bounded_sample_is_order_independent() -> None:
    texts = [f"review {i}" for i in range(500)]
    a = bounded_sample(texts, 40, seed=1)
    b = bounded_sample(list(reversed(texts)), 40, seed=1)
    assert a == b and len(a) == 40 and len(set(a)) == 40
    assert bounded_sample(texts, 40, seed=2) != a
    assert sorted(bounded_sample(texts[:10], 40, seed=1)) == sorted(texts[:10])


def test_repeat_marks_copies(raw, tmp_path) -> None:
    from dataclasses import replace

    one = build_stream(raw, tmp_path / "one", CFG, TOK)
    two = build_stream(raw, tmp_path / "two", replace(CFG, repeat=2), TOK)
    assert two["totals"]["unique"] == 2 * one["totals"]["unique"]
    assert two["totals"]["used"] == 2 * one["totals"]["used"]


def test_reader_shuffles_reproducibly_and_feeds_training(built) -> None:
    import tf_keras as keras

    from pipeline.config import StudentConfig
    from pipeline.nn.models import build_student

    out, stats = built
    def labels(seed: int) -> list[list[float]]:
        ds = make_dataset(out, "train", 8, shuffle_buffer=64, seed=seed)
        return [y.tolist() for _, y in ds.as_numpy_iterator()]

    a, b = labels(5), labels(5)
    assert a == b and sum(map(len, a)) == stats["splits"]["train"]["n"]
    ds = make_dataset(out, "train", 16, shuffle_buffer=64, bucket_boundaries=[6, 10])
    for ids, _ in ds.take(3):
        assert ids.dtype.name == "int32" and ids.shape[1] <= TOK.seq_len
    keras.utils.set_random_seed(1)
    model = build_student(Tokenizer.load(out / "tokenizer").vocab_size,
                          StudentConfig(embed_dim=4, units=4))
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(make_dataset(out, "train", 16, repeat=True), steps_per_epoch=4, epochs=1,
                     verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_input_pipelines_read_disjoint_files(built) -> None:
    """Sharding by file: pipeline i of n takes every n-th file; too few files is a clear error."""
    from pipeline.data.stream import shard_files

    out, stats = built
    every = shard_files(out, "train")
    parts = [shard_files(out, "train", (i, 2)) for i in range(2)]
    assert len(every) == CFG.shards and sorted(parts[0] + parts[1]) == every
    assert not set(parts[0]) & set(parts[1])
    n = sum(sum(1 for _ in make_dataset(out, "train", 1, shuffle_buffer=0, pipeline=(i, 2)))
            for i in range(2))
    assert n == stats["splits"]["train"]["n"]
    with pytest.raises(ValueError, match=f"--shards {CFG.shards + 1} or more"):
        shard_files(out, "train", (0, CFG.shards + 1))


def test_shards_keep_the_review_text_for_the_peers(raw, built) -> None:
    """text_chunks gives each split's review strings and labels, as the in-memory split has them."""
    from pipeline.data.stream import text_chunks

    out, _ = built
    splits, _ = data.load_splits(raw, DataConfig())
    for split in data.SPLITS:
        got = [(t, int(y)) for texts, ys in text_chunks(out, split, 7) for t, y in
               zip(texts, ys, strict=True)]
        assert collections.Counter(got) == collections.Counter(splits[split])
    a = [t for texts, _ in text_chunks(out, "train", 7, seed=1, epoch=1) for t in texts]
    b = [t for texts, _ in text_chunks(out, "train", 7, seed=1, epoch=1) for t in texts]
    c = [t for texts, _ in text_chunks(out, "train", 7, seed=1, epoch=2) for t in texts]
    assert a == b and a != c and sorted(a) == sorted(c)  # seeded per epoch


def test_hashed_peer_streams_its_chunks(built, tmp_path) -> None:
    """Document frequencies do not depend on the chunking; the peer learns the toy sentiment."""
    from pipeline.config import HashedTfidfConfig
    from pipeline.data.stream import text_chunks
    from pipeline.report.hashed_peer import HashedTfidfLR, run_hashed_peer

    out, stats = built
    cfg = HashedTfidfConfig(hash_bits=12, epochs=5, chunk=16, alpha=1e-4)
    idf = [HashedTfidfLR(cfg).document_frequencies(text_chunks(out, "train", k)) for k in (5, 1000)]
    np.testing.assert_array_equal(*idf)
    acc = run_hashed_peer(out, tmp_path, cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["n"] == stats["splits"]["test"]["n"]
    assert acc["val"] > 0.8 and acc["test"] > 0.8, acc


def test_fasttext_peer_trains_from_a_file_written_chunk_by_chunk(built, tmp_path) -> None:
    from pipeline.config import FastTextConfig
    from pipeline.report.fasttext_peer import run_fasttext_stream

    out, stats = built
    acc = run_fasttext_stream(out, tmp_path, FastTextConfig(epochs=(10,), lrs=(0.5, 1.0)), chunk=9)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_reviews"] == stats["splits"]["train"]["n"]
    assert set(metrics["val_accuracy_by_setting"]) == {"epoch=10 lr=0.5", "epoch=10 lr=1"}
    assert metrics["test"]["n"] == stats["splits"]["test"]["n"]
    assert acc["val"] > 0.7 and acc["test"] > 0.7, acc
    assert not (tmp_path / ".train.txt").exists()


def test_count_cache_holds_the_vectorizer_counts_and_shuffles_every_row_once(tmp_path) -> None:
    """The hashed peer of ``data.stream`` hashes each review once; later passes read the counts."""
    from conftest import polar_rows

    from pipeline.config import HashedTfidfConfig
    from pipeline.report.hashed_peer import CountCache, HashedTfidfLR

    rows = polar_rows(300, seed=5)
    model = HashedTfidfLR(HashedTfidfConfig(hash_bits=12, epochs=4, chunk=32, alpha=1e-4))
    cache = CountCache.write(iter(rows), model.vectorizer, tmp_path / "c", 32)
    whole = model.vectorizer.transform([t for t, _ in rows]).tocsr()
    got = [cache.chunk(i) for i in range(len(cache.starts) - 1)]
    assert len(cache) == 300 and len(got) == 10  # 9 chunks of 32, one of 12
    for x, y, idx in got:
        assert (x != whole[idx]).nnz == 0
        np.testing.assert_array_equal(y, [rows[i][1] for i in idx])
    np.testing.assert_array_equal(cache.df, np.bincount(whole.indices, minlength=2 ** 12))
    epoch = [np.concatenate([idx for _, _, idx in cache.shuffled(13, e)]) for e in (1, 1, 2)]
    assert sorted(epoch[0]) == list(range(300))
    np.testing.assert_array_equal(epoch[0], epoch[1])
    assert not np.array_equal(epoch[0], epoch[2])  # seeded per epoch
    model.fit_cache(cache)
    test = polar_rows(100, seed=6)
    p = model.predict_proba([t for t, _ in test])
    assert np.mean((p >= 0.5) == (np.array([y for _, y in test]) == 1)) > 0.95
