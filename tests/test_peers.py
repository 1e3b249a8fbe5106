"""Tests for pipeline.peers on a tiny synthetic corpus."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from pipeline.config import TfidfConfig
from pipeline.report.peers import predict_proba, select_C, tfidf_size_bytes, train_tfidf_lr

POS = ["great", "love", "excellent", "wonderful", "perfect"]
NEG = ["bad", "awful", "broken", "terrible", "useless"]
NOISE = ["the", "product", "it", "was", "this", "item", "arrived", "box", "and", "really",
         "phone", "cable", "with", "my", "very", "quite", "color", "size", "day", "works"]


def make_corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of noise words plus 1-2 polar words; label from the polar words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.choices(NOISE, k=rng.randint(4, 10))
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
        texts.append(" ".join(words).capitalize())
        labels.append(label)
    return texts, labels


def swap_tokens(text: str) -> str:
    """Module-level preprocess: lowercase and map the made-up token 'zork' to 'great'."""
    return text.lower().replace("zork", "great")


SMALL = TfidfConfig(min_df=1, max_features=None)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[int], list[str], list[int]]:
    tr_x, tr_y = make_corpus(200, seed=1)
    te_x, te_y = make_corpus(100, seed=2)
    return tr_x, tr_y, te_x, te_y


def test_peer_learns_and_has_size(corpus) -> None:
    tr_x, tr_y, te_x, te_y = corpus
    model = train_tfidf_lr(tr_x, tr_y, TfidfConfig(min_df=2))
    p = predict_proba(model, te_x)
    assert p.shape == (len(te_x),) and p.dtype == np.float64
    assert ((p >= 0) & (p <= 1)).all()
    acc = float(((p >= 0.5).astype(int) == np.asarray(te_y)).mean())
    assert acc >= 0.9
    assert predict_proba(model, ["I love it, excellent"])[0] > 0.5
    assert predict_proba(model, ["awful, it arrived broken"])[0] < 0.5
    size = tfidf_size_bytes(model)
    assert size > 0 and size == len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


def test_lowercase_without_preprocess(corpus) -> None:
    tr_x, tr_y, _, _ = corpus
    model = train_tfidf_lr(tr_x, tr_y, SMALL)
    assert predict_proba(model, ["GREAT LOVE"])[0] == pytest.approx(
        predict_proba(model, ["great love"])[0]
    )


def test_select_c_returns_grid_value(corpus) -> None:
    tr_x, tr_y, te_x, te_y = corpus
    grid = (0.5, 4.0, 16.0)
    best, scores = select_C(tr_x, tr_y, te_x, te_y, grid=grid, cfg=SMALL)
    assert best in grid and set(scores) == set(grid)
    assert scores[best] == max(scores.values())
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    # equals fitting the full pipeline with that C
    model = train_tfidf_lr(tr_x, tr_y, TfidfConfig(min_df=1, max_features=None, C=best))
    acc = float(((predict_proba(model, te_x) >= 0.5) == np.asarray(te_y)).mean())
    assert acc == pytest.approx(scores[best])


def test_preprocess_is_honoured_and_picklable(corpus) -> None:
    tr_x, tr_y, _, _ = corpus
    plain = train_tfidf_lr(tr_x, tr_y, SMALL)
    mapped = train_tfidf_lr(tr_x, tr_y, SMALL, preprocess=swap_tokens)
    # 'zork' is unknown to the plain model (p ~ prior) but means 'great' to the mapped one
    assert predict_proba(mapped, ["zork zork"])[0] > 0.7
    assert predict_proba(mapped, ["zork zork"])[0] == pytest.approx(
        predict_proba(mapped, ["great great"])[0]
    )
    assert abs(predict_proba(plain, ["zork zork"])[0] - 0.5) < 0.2
    restored = pickle.loads(pickle.dumps(mapped))
    np.testing.assert_allclose(
        predict_proba(restored, tr_x[:10]), predict_proba(mapped, tr_x[:10])
    )


def test_rejects_single_class() -> None:
    with pytest.raises(ValueError):
        train_tfidf_lr(["good", "fine"], [1, 1], SMALL)
