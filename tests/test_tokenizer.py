"""Normalization spec, stopwords, and the BPE tokenizer on a tiny corpus."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import TokenizerConfig
from pipeline.text.tokenizer import (
    APART,
    CHAR_MAP,
    NEGATIONS,
    PAD_ID,
    Tokenizer,
    normalize,
    remove_stopwords,
    train_tokenizer,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello  WORLD", "hello world"),
        ("  \t tabs\nand\r\nnewlines  ", "tabs and newlines"),
        ("ÉCOLE Ünïcode ×", "école ünïcode ×"),  # Latin-1 capitals fold, the sign × stays
        ("It\u2019s \u201cgreat\u201d \u2014 really\u2026", "it's \"great\" - really..."),
        ("a\u200bb\ufeffc", "abc"),  # zero-width characters vanish without splitting
        ("ctrl\x00\x07chars\x7f", "ctrlchars"),
        ("nbsp\u00a0and\u3000ideographic", "nbsp and ideographic"),
        ("ΣΊΣΥΦΟΣ", "ΣΊΣΥΦΟΣ"),  # no case folding outside ASCII and Latin-1
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@given(st.text())
def test_normalize_properties(text: str) -> None:
    out = normalize(text)
    assert normalize(out) == out  # idempotent
    assert "  " not in out and out == out.strip(" ")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in out)
    assert not any("A" <= c <= "Z" for c in out)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Didn't WORK, sadly...", "didn t work , sadly . . ."),
        ("(great!) \u201cok\u201d; fine: 3.5?", "( great ! ) \" ok \" ; fine : 3 . 5 ?"),
        ("it\u2019s \u2026 'quoted'", "it s . . . quoted"),
        ("...", ". . ."),
        ("'''", ""),
        ("a-b/c", "a-b/c"),  # only the listed characters stand apart
    ],
)
def test_normalize_v2_examples(raw: str, expected: str) -> None:
    assert normalize(raw, 2) == expected


@given(st.text())
def test_normalize_v2_properties(text: str) -> None:
    out = normalize(text, 2)
    assert normalize(out, 2) == out == normalize(normalize(text), 2)  # idempotent; v1 then v2
    assert "'" not in out and "  " not in out and out == out.strip(" ")
    assert all(w in APART or not set(w) & set(APART) for w in out.split(" "))


def test_normalize_v2_reads_publishers_style_as_the_original() -> None:
    """The reason for v2: a review and its publisher-styled copy (lowercased, apostrophes split,
    punctuation set apart: li2018, cr and huliu sentences) normalize to the same text."""
    from pipeline.compress.distill import publisher_style

    reviews = ["I didn't like it. The strap broke; two days (really!) \"great\" job...",
               "Works great, my son's favorite: 5 stars? Yes!", *_corpus(50)]
    for r in reviews:
        assert normalize(publisher_style(r), 2) == normalize(r, 2)
    assert normalize(publisher_style(reviews[0])) != normalize(reviews[0])  # v1 keeps them apart


def test_normalize_rejects_unknown_version() -> None:
    with pytest.raises(ValueError, match="v3"):
        normalize("x", 3)


def test_v2_refuses_stopwords_that_would_drop_negations() -> None:
    assert remove_stopwords(normalize("it can't work", 2)) == "can work"  # why: "t" is a stopword
    with pytest.raises(ValueError, match="negation"):
        train_tokenizer(_corpus(), TokenizerConfig(vocab_size=120, stopwords=True, normalization=2))


def test_char_map_is_small_and_single_codepoint_keys() -> None:
    # The table is what a C port embeds: keep it small and keyed by code points.
    assert all(isinstance(k, int) for k in CHAR_MAP)
    assert len(CHAR_MAP) < 200


def test_stopwords_keep_negations() -> None:
    text = normalize("This is NOT the product that I would never buy, and it isn't good")
    out = remove_stopwords(text).split()
    for w in ("not", "never", "isn't", "good", "product"):
        assert w in out
    for w in ("this", "is", "the", "that"):
        assert w not in out
    for n in NEGATIONS:
        assert remove_stopwords(f"the {n} it") == n


def _corpus(n: int = 400) -> list[str]:
    rng = random.Random(0)
    good = "great love excellent perfect happy works wonderful".split()
    bad = "awful broken terrible refund waste poor disappointed".split()
    filler = "the product arrived on time and the box was fine for my kitchen".split()
    return [" ".join(rng.choices(filler, k=8) + rng.choices(good if i % 2 else bad, k=3))
            for i in range(n)]


def test_tokenizer_train_encode_pad_truncate(tmp_path) -> None:
    cfg = TokenizerConfig(vocab_size=120, seq_len=6, truncate="head")
    tok = train_tokenizer(_corpus(), cfg)
    ids = tok.encode("The product WORKS great")
    assert ids and all(i > PAD_ID for i in ids)
    arr = tok.to_array(["great", "the product arrived on time and the box was fine"])
    assert arr.shape == (2, 6)
    assert arr[0, len(tok.encode("great")):].tolist() == [0] * (6 - len(tok.encode("great")))
    long_ids = tok.encode("the product arrived on time and the box was fine")
    assert arr[1].tolist() == long_ids[:6]
    tail = Tokenizer(tok.model_proto, TokenizerConfig(vocab_size=120, seq_len=6, truncate="tail"))
    assert tail.ids(["the product arrived on time and the box was fine"])[0] == long_ids[-6:]
    # Case and typographic variants normalize to the same ids.
    assert tok.encode("It\u2019s GREAT") == tok.encode("it's great")
    texts = _corpus()[:50] + ["", "great"]
    packed = tok.ids_ragged(iter(texts), chunk=7)  # chunks of 7: several, the last one short
    assert [r.tolist() for r in packed] == tok.ids(texts) and packed.flat.dtype == np.uint16
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.encode("great love") == tok.encode("great love")
    assert again.cfg == tok.cfg


def test_tokenizer_training_is_deterministic() -> None:
    cfg = TokenizerConfig(vocab_size=100, seq_len=16)
    a, b = train_tokenizer(_corpus(), cfg), train_tokenizer(_corpus(), cfg)
    assert a.model_proto == b.model_proto


def test_tokenizer_stage_streams_the_file_or_trains_on_a_bounded_sample(tmp_path) -> None:
    from pipeline.data import bounded_sample, write_jsonl
    from pipeline.text.tokenizer import build_tokenizer

    texts = _corpus(300)
    write_jsonl(tmp_path / "train.jsonl", [(t, i % 2) for i, t in enumerate(texts)])
    write_jsonl(tmp_path / "val.jsonl", [(t, 1) for t in _corpus(20)] + [("zzz qqq", 0)])
    cfg = TokenizerConfig(vocab_size=100, seq_len=16, sample_reviews=300)
    stats = build_tokenizer(tmp_path, tmp_path / "all", cfg)
    whole = Tokenizer.load(tmp_path / "all")
    assert whole.model_proto == train_tokenizer(texts, cfg).model_proto  # every review, in order
    val = whole.encode_batch([*_corpus(20), "zzz qqq"])
    assert stats["val_mean_tokens"] == pytest.approx(np.mean([len(r) for r in val]))
    assert stats["val_unk_rate"] == sum(r.count(1) for r in val) / sum(map(len, val)) > 0
    small = TokenizerConfig(vocab_size=100, seq_len=16, sample_reviews=120)
    build_tokenizer(tmp_path, tmp_path / "sample", small)
    want = train_tokenizer(bounded_sample(texts, 120, small.seed), small)
    assert Tokenizer.load(tmp_path / "sample").model_proto == want.model_proto
    assert want.model_proto != train_tokenizer(texts, small).model_proto


def test_tokenizer_rejects_empty_corpus() -> None:
    with pytest.raises(ValueError, match="no non-empty"):
        train_tokenizer(["", "   "], TokenizerConfig(vocab_size=50))


def test_normalization_version_is_saved_loaded_and_keyed(tmp_path) -> None:
    """tokenizer.json records the spec as it always did (``normalization_version``: files of v1
    tokenizers unchanged); the stage key names the field only when it is not 1, so that runs from
    before it keep their keys."""
    import json

    for version in (1, 2):
        cfg = TokenizerConfig(vocab_size=120, seq_len=6, normalization=version)
        tok = train_tokenizer(_corpus(), cfg)
        tok.save(tmp_path / f"v{version}")
        meta = json.loads((tmp_path / f"v{version}" / Tokenizer.CONFIG_FILE).read_text())
        assert meta["normalization_version"] == version and "normalization" not in meta
        back = Tokenizer.load(tmp_path / f"v{version}")
        assert back.cfg == cfg
        assert back.preprocess("Isn't it, ok?") == normalize("Isn't it, ok?", version)
        assert ("normalization" in cfg.key()) == (version == 2)
    v1, v2 = (Tokenizer.load(tmp_path / f"v{v}") for v in (1, 2))
    assert v1.preprocess("it's ok.") != v2.preprocess("it's ok.")
    meta["normalization_version"] = 9
    (tmp_path / "v2" / Tokenizer.CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="v9"):
        Tokenizer.load(tmp_path / "v2")
