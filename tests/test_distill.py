"""Knowledge distillation: the loss, the logits view, and a GradientTape step inside fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_train import _task  # noqa: E402  (same synthetic task as the training tests)

from pipeline.compress.distill import kd_loss, kd_step
from pipeline.config import DistillConfig, StudentConfig, TrainConfig
from pipeline.nn.models import build_student, logits_model
from pipeline.nn.train import fit, predict_proba, set_determinism


def test_kd_loss_limits() -> None:
    y = tf.constant([1.0, 0.0, 1.0])
    z_s = tf.constant([2.0, -1.0, 0.5])
    z_t = tf.constant([3.0, -2.0, -1.0])
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z_s))
    np.testing.assert_allclose(kd_loss(y, z_s, z_t, DistillConfig(alpha=0.0)), bce, rtol=1e-6)
    assert abs(float(kd_loss(y, z_t, z_t, DistillConfig(alpha=1.0)))) < 1e-6  # KL(p||p) = 0
    assert float(kd_loss(y, z_s, z_t, DistillConfig(alpha=1.0))) > 0
    with tf.GradientTape() as tape:  # the soft term pulls the student's logit toward the teacher's
        z = tf.Variable([0.0])
        loss = kd_loss(tf.constant([1.0]), z, tf.constant([-3.0]), DistillConfig(alpha=1.0))
    assert float(tape.gradient(loss, z)[0]) > 0


def test_logits_model_matches_sigmoid_output() -> None:
    model = build_student(30, StudentConfig(embed_dim=4, units=4))
    x = np.array([[3, 4, 5, 0], [7, 0, 0, 0]], np.int32)
    p = model(x, training=False).numpy()[:, 0]
    z = logits_model(model)(x, training=False).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), p, rtol=1e-5, atol=1e-6)


def test_distilled_student_learns_from_teacher_logits(tmp_path: Path) -> None:
    set_determinism(5)
    x, y = _task(500, 0)
    teacher_z = np.where(y > 0.5, 3.0, -3.0).astype(np.float32)  # a confident, correct teacher
    model = build_student(30, StudentConfig(embed_dim=8, units=8, dropout=0.0, embed_dropout=0.0))
    cfg = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=5)
    state = fit(model, (x, y), _task(200, 1), cfg, tmp_path, make_step=kd_step(teacher_z,
                                                                                 DistillConfig()))
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    xt, yt = _task(200, 2)
    assert np.mean((predict_proba(model, xt) >= 0.5) == (yt >= 0.5)) > 0.8


def test_align_moves_mass_by_bytes() -> None:
    from pipeline.compress.afd import align

    values = np.array([[1.0, 2.0, 3.0]])
    src = np.array([[0, 2], [2, 5], [5, 6]])  # teacher tokens tile bytes 0..6
    dst = np.array([[0, 1], [1, 4], [4, 6]])  # student tokens tile them differently
    out = align(values, src, dst)
    np.testing.assert_allclose(out, [[0.5, 0.5 + 2 * 2 / 3, 2 / 3 + 3.0]], rtol=1e-6)
    assert abs(out.sum() - values.sum()) < 1e-6  # nothing lost when both tile the text
    np.testing.assert_allclose(align(values, src, src), values)  # same tokens: identity


def test_afd_loss_prefers_matching_maps() -> None:
    from pipeline.compress.afd import PairAttention, afd_loss

    ids = tf.constant([[5, 6, 7, 0]])
    emb = tf.constant([[[1.0], [0.1], [0.1], [9.0]]])  # energy on token 0; padding ignored
    h = tf.constant([[[0.1, 0.1], [0.1, 0.1], [2.0, 2.0], [9.0, 9.0]]])  # energy on token 2
    pairs = PairAttention([2, 2, 2], [1, 2], dim=4)
    pooled = [tf.ones((1, 2))] * 3

    def loss_for(target_token: int) -> float:
        m = np.zeros((1, 3, 4), np.float32)
        m[0, :, target_token] = 1.0
        return float(afd_loss(ids, emb, h, tf.constant(m), pooled, pairs)[0])

    _, alpha = afd_loss(ids, emb, h, tf.zeros((1, 3, 4)), pooled, pairs)
    np.testing.assert_allclose(tf.reduce_sum(alpha, -1).numpy(), 1.0, rtol=1e-6)  # softmax over s
    assert loss_for(0) < loss_for(1) and loss_for(2) < loss_for(1)


def test_afd_step_trains_and_features_roundtrip(tmp_path: Path) -> None:
    from pipeline.compress.afd import TEACHER_MAPS, TeacherFeatures

    set_determinism(5)
    x, y = _task(300, 0)
    teacher_z = np.where(y > 0.5, 3.0, -3.0).astype(np.float32)
    rng = np.random.default_rng(0)
    maps = [rng.random((len(TEACHER_MAPS), len(r))).astype(np.float16) for r in x]
    feats = TeacherFeatures(maps, [rng.random((len(x), d)).astype(np.float16) for d in (6, 8, 8)])
    feats.save(tmp_path / "f")
    back = TeacherFeatures.load(tmp_path / "f")  # read from the folder row by row
    assert all(np.array_equal(a, b) for a, b in zip(back.maps, maps, strict=True))
    for disk, mem in zip(back.pooled, feats.pooled, strict=True):
        assert disk.shape == mem.shape
        idx = np.array([5, 0, 299, 5])
        np.testing.assert_array_equal(disk[idx], mem[idx])

    def train(features: TeacherFeatures, work: str) -> tuple[dict, list[np.ndarray]]:
        set_determinism(5)
        model = build_student(30, StudentConfig(embed_dim=8, units=8))
        cfg = TrainConfig(batch_size=32, max_epochs=1, learning_rate=1e-2, seed=5)
        state = fit(model, (x, y), _task(100, 1), cfg, tmp_path / work,
                    make_step=kd_step(teacher_z, DistillConfig(afd_weight=1.0), features))
        return state, model.get_weights()

    state, weights = train(back, "disk")
    assert np.isfinite(state["history"][0]["loss"])
    _, in_memory = train(feats, "memory")  # the same student, bit for bit
    assert all(np.array_equal(a, b) for a, b in zip(weights, in_memory, strict=True))


def _align_loop(values: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The definition of ``align``, one source token at a time."""
    end = int(max(src[:, 1].max(initial=0), dst[:, 1].max(initial=0)))
    density = np.zeros((values.shape[0], end + 1), np.float64)
    for j, (a, b) in enumerate(src):
        if b > a:
            density[:, a:b] += values[:, j : j + 1] / (b - a)
    cum = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(density, axis=1)], axis=1)
    return (cum[:, dst[:, 1]] - cum[:, dst[:, 0]]).astype(np.float32)


def test_align_equals_its_loop_definition_with_gaps_and_empty_tokens() -> None:
    from pipeline.compress.afd import align

    rng = np.random.default_rng(3)
    for _ in range(50):
        cuts = np.sort(rng.choice(np.arange(1, 60), size=12, replace=False))
        src = np.stack([cuts[:-1], cuts[1:]], 1)
        empty = rng.random(len(src)) < 0.2
        src[empty, 1] = src[empty, 0]  # zero-width tokens
        src = src[rng.random(len(src)) < 0.8]  # bytes no token covers
        dst_cuts = np.sort(rng.choice(np.arange(0, 62), size=8, replace=False))
        dst = np.stack([dst_cuts[:-1], dst_cuts[1:]], 1)
        values = rng.random((3, len(src))).astype(np.float32)
        np.testing.assert_array_equal(align(values, src, dst), _align_loop(values, src, dst))


def test_encode_spans_match_ids_and_survive_pickling() -> None:
    import pickle

    from pipeline.config import TokenizerConfig
    from pipeline.text.tokenizer import encode_spans, train_tokenizer

    texts = [f"review {i}: the {w} was {'great' if i % 2 else 'awful'} and cheap" for i, w in
             enumerate(["case", "cable", "screen", "battery"] * 40)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=120, seq_len=6))
    ids, spans = encode_spans(tok, texts)
    assert ids == tok.ids(texts)  # truncated to 6, as the models see them
    assert all(len(s) == len(i) for s, i in zip(spans, ids, strict=True))
    again = pickle.loads(pickle.dumps(tok))  # what a worker process receives
    assert again.ids(texts) == ids


def test_feature_maps_refuse_tokenizers_that_normalize_differently(tmp_path: Path) -> None:
    """AFD moves the teacher's maps onto the student's tokens through one normalized text."""
    from pipeline.compress.afd import teacher_features
    from pipeline.config import TokenizerConfig
    from pipeline.text.tokenizer import train_tokenizer

    texts = [f"it's item {i}, {'great' if i % 2 else 'awful'}!" for i in range(80)]
    train_tokenizer(texts, TokenizerConfig(vocab_size=60, seq_len=6)).save(tmp_path / "teacher")
    student = train_tokenizer(texts, TokenizerConfig(vocab_size=60, seq_len=6, normalization=2))
    with pytest.raises(ValueError, match="normalization"):
        teacher_features(tmp_path / "teacher", student, texts, tmp_path / "f", tmp_path / "w")


def test_target_ids_read_the_targets_own_shards_else_tokenize_the_texts(tmp_path: Path) -> None:
    import json

    from pipeline.compress.distill import TARGET_RECORDS, TARGET_TEXTS, target_ids, target_rows
    from pipeline.config import TokenizerConfig
    from pipeline.nn.train import soft_labelled_ids
    from pipeline.text.records import IdRecords
    from pipeline.text.tokenizer import train_tokenizer

    rows = [(f"the {w} was {'great' if i % 3 else 'awful'}", [1.0, 0.0, 0.8][i % 3])
            for i, w in enumerate(["case", "cable", "screen"] * 30)]
    tok = train_tokenizer([t for t, _ in rows], TokenizerConfig(vocab_size=60, seq_len=5))
    texts_dir, shards_dir = tmp_path / "texts", tmp_path / "shards"
    texts_dir.mkdir()
    with open(texts_dir / TARGET_TEXTS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    soft_labelled_ids(tok, iter(rows), shards_dir / TARGET_RECORDS, records=True)
    assert not isinstance(target_rows(texts_dir), IdRecords)
    assert isinstance(target_rows(shards_dir), IdRecords)
    from_texts = target_ids(texts_dir, tok, tmp_path / "work")
    from_shards = target_ids(shards_dir, tok, tmp_path / "work2", records=True)
    assert isinstance(from_shards[0], IdRecords) and not (tmp_path / "work2").exists()  # read as is
    assert [r.tolist() for r in from_shards[0].head(len(rows))] == [r.tolist() for r in from_texts[0]]
    assert from_shards[1].tolist() == from_texts[1].tolist() == np.float32([y for _, y in rows]).tolist()


def test_crops_publisher_style() -> None:
    from pipeline.compress.distill import crop_texts, publisher_style

    assert publisher_style("I DIDN'T like it, (sadly).") == "i didn t like it , ( sadly ) ."
    texts = [f"word{i} " * 20 + "Don't, ok." for i in range(200)] + ["Short, isn't it?"]
    plain = crop_texts(texts, 5, 0.2, 0.7)
    assert crop_texts(texts, 5, 0.2, 0.7, style=0.0) == plain  # no style: the crops of before
    assert crop_texts(texts, 5, 0.2, 0.7, style=1.0) == [publisher_style(t) for t in plain]
    half = crop_texts(texts, 5, 0.2, 0.7, style=0.5)
    styled = sum(c != p for c, p in zip(half, plain, strict=True))
    assert 0 < styled < len(texts)
    assert half == crop_texts(texts, 5, 0.2, 0.7, style=0.5)  # seeded


def test_sentence_crops() -> None:
    from pipeline.compress.distill import crop_texts, sentences
    from pipeline.config import DistillConfig

    assert sentences("Great case! Fits well.\nBut the clip broke... Sad?  ok") == [
        "Great case!", "Fits well.", "But the clip broke...", "Sad?", "ok"]
    assert sentences("one sentence, no end") == ["one sentence, no end"]
    texts = [f"First {i} is fine. Second one is bad! Third?" for i in range(100)]
    texts += ["only one sentence here but it has many words in it"]
    crops = crop_texts(texts, 3, 0.2, 0.7, sentence_run=2)
    allowed = {"Second one is bad!", "Third?", "Second one is bad! Third?"}
    for t, c in zip(texts[:100], crops[:100], strict=True):  # never the whole text
        assert c in allowed | {t.split(" Second")[0], t.rsplit(" Third?")[0]}
    assert len({c.split(" is")[0] for c in crops[:100]}) > 2  # runs start at every sentence
    assert crops[-1] in texts[-1] and crops[-1] != texts[-1]  # one sentence: a word crop
    assert crop_texts(texts, 3, 0.2, 0.7) != crops  # sentence_run 0: the word crops of before
    assert crops == crop_texts(texts, 3, 0.2, 0.7, sentence_run=2)  # seeded
    with pytest.raises(ValueError, match="sentence_crops"):
        DistillConfig(sentence_crops=-1)


def test_teacher_features_average_the_logits_of_several_teachers(tmp_path: Path) -> None:
    """``distill.teachers``: one pass scores every teacher; the logits are their mean, the maps
    the first teacher's; a teacher of another tokenizer is refused."""
    from pipeline.compress.afd import TeacherFeatures, teacher_features
    from pipeline.compress.ensemble import logit
    from pipeline.config import TeacherConfig, TokenizerConfig
    from pipeline.nn.models import build_teacher, save_model
    from pipeline.nn.train import write_model_info
    from pipeline.report.predictors import load_predictor
    from pipeline.text.tokenizer import train_tokenizer

    texts = [f"review {i}: the {w} was {'great' if i % 2 else 'awful'} and cheap" for i, w in
             enumerate(["case", "cable", "screen", "battery"] * 10)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=120, seq_len=8))
    dirs = []
    for seed in (1, 2):
        set_determinism(seed)
        d = tmp_path / f"teacher{seed}"
        d.mkdir()
        tok.save(d)
        save_model(build_teacher(tok.vocab_size, TeacherConfig(embed_dim=8, units=8, attn_units=4,
                                                               dense_units=8)), d / "model.keras")
        write_model_info(d, {"keras": "model.keras"}, kind="teacher")
        dirs.append(d)
    each = [logit(load_predictor(d)(texts)) for d in dirs]
    assert not np.allclose(each[0], each[1])
    one = teacher_features(dirs[0], tok, texts, tmp_path / "f1", tmp_path / "w1", batch_size=16)
    two = teacher_features(dirs[0], tok, texts, tmp_path / "f2", tmp_path / "w2", batch_size=16,
                           more=[dirs[1]])
    np.testing.assert_allclose(one, each[0], atol=1e-5)
    np.testing.assert_allclose(two, (each[0] + each[1]) / 2, atol=1e-5)
    maps = [TeacherFeatures.load(tmp_path / f).maps for f in ("f1", "f2")]
    assert all(np.array_equal(a, b) for a, b in zip(*maps, strict=True))
    other = tmp_path / "other"
    other.mkdir()
    train_tokenizer(texts[::-1] + ["other words"], TokenizerConfig(vocab_size=100, seq_len=8)).save(other)
    (other / "model.keras").write_bytes((dirs[1] / "model.keras").read_bytes())
    with pytest.raises(ValueError, match="another tokenizer"):
        teacher_features(dirs[0], tok, texts, tmp_path / "f3", tmp_path / "w3", more=[other])
