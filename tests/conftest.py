"""Shared test helpers: a small slice of the real reviews in ../shared/data (skips when absent)
and tiny made-up reviews."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _head_gz(src: Path, dst: Path, lines: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= lines:
                break
            g.write(line)


@pytest.fixture(scope="session")
def real_slice(tmp_path_factory) -> dict[str, Path]:
    """First rows of each real training file and of two held-out sets, copied to a temp folder."""
    if not (SHARED / "amazon").is_dir():
        pytest.skip(f"real review data not found at {SHARED} (see README: Data)")
    root = tmp_path_factory.mktemp("real")
    (root / "amazon").mkdir()
    (root / "heldout").mkdir()
    for src in sorted((SHARED / "amazon").glob("*.gz")):
        _head_gz(src, root / "amazon" / src.name, 2500)
    for name in ("uci_amazon_cells.jsonl.gz", "li2018_amazon_sent.jsonl.gz"):
        _head_gz(SHARED / "heldout" / name, root / "heldout" / name, 400)
    return {"amazon": root / "amazon", "heldout": root / "heldout"}


POLAR_WORDS = {1: ["great", "love", "works", "perfect"], 0: ["bad", "broken", "awful", "returned"]}
FILLER_WORDS = ["the", "cable", "phone", "was", "it", "and", "this", "case", "very", "my"]


def polar_rows(n: int, seed: int, min_filler: int = 2,
               max_filler: int = 10) -> list[tuple[str, int]]:
    """Tiny labelled reviews: filler words plus two words of the label's polarity, shuffled."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2
        words = rng.choices(FILLER_WORDS, k=rng.randint(min_filler, max_filler))
        words += rng.choices(POLAR_WORDS[y], k=2)
        rng.shuffle(words)
        out.append((" ".join(words), y))
    return out


@pytest.fixture(scope="session")
def trained(real_slice) -> dict:
    """A small student (vocab 1000, embed 32, units 32) trained two short epochs on the real slice,
    its int8 conversion and evaluation ids (tests/test_quantize.py, tests/test_gru.py)."""
    import numpy as np
    import tf_keras as keras

    from pipeline import data
    from pipeline.config import StudentConfig, TokenizerConfig
    from pipeline.nn.models import build_student
    from pipeline.nn.train import bucketed_batches, pad_batch, predict_proba
    from pipeline.text.tokenizer import train_tokenizer

    rows = list(data.iter_reviews(real_slice["amazon"]))
    order = np.random.default_rng(0).permutation(len(rows))
    train, test = [rows[i] for i in order[:4000]], [rows[i] for i in order[4000:4600]]
    heldout = list(data.iter_reviews(real_slice["heldout"]))
    tok = train_tokenizer([t for t, _ in train], TokenizerConfig(vocab_size=1000, seq_len=128))
    keras.utils.set_random_seed(0)
    x = tok.ids([t for t, _ in train])
    y = np.array([lab for _, lab in train], np.float32)
    student = build_student(tok.vocab_size, StudentConfig(embed_dim=32, units=32))
    student.compile(keras.optimizers.Adam(5e-3, clipnorm=1.0), "binary_crossentropy")
    for epoch in range(2):
        for idx in bucketed_batches([len(r) for r in x], 64, np.random.default_rng(epoch), 8):
            student.train_on_batch(pad_batch([x[j] for j in idx]), y[idx])
    from pipeline.device.convert import convert_int8

    converted = convert_int8(student, x[:200])
    eval_rows = test + heldout
    eval_ids = tok.ids([t for t, _ in eval_rows])
    long_ids = [r for r in tok.encode_batch([t for t, _ in test]) if len(r) >= 256][:2]
    return {"student": student, "tok": tok, "converted": converted, "eval_ids": eval_ids,
            "eval_rows": eval_rows,
            "long_ids": long_ids,
            "eval_y": np.array([lab for _, lab in eval_rows]),
            "p_float": predict_proba(student, eval_ids)}


# The longest modules, longest first (by the tests of each in the `--durations` list of a serial
# CI run on a 2-core machine: the smoke run's module alone took over 13 minutes). With
# `-n 2 --dist loadfile --no-loadscope-reorder` (README) xdist hands out whole modules in
# collection order, so starting with these keeps both workers busy to the end instead of leaving
# the smoke run's module for last. Only the order of modules changes.
LONGEST_FIRST = ("test_pipeline.py", "test_resume.py", "test_train.py", "test_native_firmware.py",
                 "test_console.py", "test_prune.py", "test_quantize.py", "test_distill.py",
                 "test_distribute.py", "test_gru.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest modules first; tests keep their order within a module."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable sort
