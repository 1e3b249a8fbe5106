"""Teacher training loop on a synthetic task: learning, determinism, EMA, resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TeacherConfig, TokenizerConfig, TrainConfig
from pipeline.nn.models import build_teacher
from pipeline.nn.train import (
    PAD_MULTIPLE,
    _record_batches,
    bucketed_batches,
    fit,
    labelled_ids,
    pad_batch,
    predict_proba,
    set_determinism,
    soft_labelled_ids,
)
from pipeline.text.ragged import Ragged, RaggedFile
from pipeline.text.records import IdRecords
from pipeline.text.tokenizer import Tokenizer, train_tokenizer

TINY = TeacherConfig(embed_dim=8, units=8, attn_units=4, dense_units=8, dropout=0.1,
                     embed_dropout=0.0)
CFG = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=3)


def _task(n: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Label = whether token 2 ("good") occurs more often than token 3 ("bad")."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        row = rng.integers(4, 30, size=rng.integers(3, 40)).tolist()
        y = int(rng.integers(0, 2))
        for _ in range(int(rng.integers(1, 3))):
            row[int(rng.integers(0, len(row)))] = 2 if y else 3
        xs.append(row)
        ys.append(y)
    return xs, np.array(ys, np.float32)


def _train(work: Path, cfg: TrainConfig = CFG, stop_after: int | None = None,
           seen: list[int] | None = None, packed: str = "") -> np.ndarray:
    set_determinism(cfg.seed)
    model = build_teacher(30, TINY)

    def hook(epoch: int) -> None:
        if seen is not None:
            seen.append(epoch)
        if stop_after is not None and epoch >= stop_after:
            raise KeyboardInterrupt

    (x, y), val, test = _task(500, 0), _task(200, 1), _task(200, 2)[0]
    if packed == "memory":
        x, test = Ragged.from_rows(x, np.uint16), Ragged.from_rows(test, np.uint16)
    elif packed == "file":  # in two parts, as Tokenizer.ids_ragged writes them
        parts = [Ragged.from_rows(x[:123], np.uint16), Ragged.from_rows(x[123:], np.uint16)]
        x = RaggedFile.write(parts, work.parent / f"{work.name}.ids")
        test = RaggedFile.write([Ragged.from_rows(test, np.uint16)], work.parent / "test.ids")
    elif packed == "records":  # TFRecord shards read with tf.data (data.stream)
        folder = work.parent / f"{work.name}.records"
        x = folder if folder.exists() else IdRecords.write([(x[:123], y[:123]), (x[123:], y[123:])], folder)
        x = IdRecords(folder)
    fit(model, (x, y), val, cfg, work, on_epoch_end=hook)
    return predict_proba(model, test)


def test_pad_and_buckets() -> None:
    assert pad_batch([[1, 2, 3], [4]]).tolist() == [[1, 2, 3] + [0] * 13, [4] + [0] * 15]
    lengths = list(range(100))
    batches = bucketed_batches(lengths, 10, np.random.default_rng(0), 2)
    assert sorted(np.concatenate(batches).tolist()) == lengths  # every item once
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 65  # random batches of 10 out of 0..99 span about 80


def test_keras_step_and_predict_batch_equal_keras_batch_calls_bit_for_bit() -> None:
    """One trace for every batch shape runs what ``train_on_batch`` / ``predict_on_batch`` run."""
    import tf_keras as keras

    from pipeline.nn.train import epoch_seed, keras_step, predict_batch, seeded_dropout

    x, y = _task(200, 0)
    batches = bucketed_batches([len(r) for r in x], 48, np.random.default_rng(0), 2)
    assert len({(len(b), pad_batch([x[j] for j in b]).shape[1]) for b in batches}) > 2
    runs = []
    for own in (False, True):
        set_determinism(3)
        model = build_teacher(30, TINY)
        model.compile(keras.optimizers.Adam(1e-2, clipnorm=1.0), "binary_crossentropy",
                      metrics=["accuracy"])
        for part, gen in enumerate(seeded_dropout(model)):  # as fit does: masks from variables
            gen.reset_from_seed(epoch_seed(3, 1, part))
        step = keras_step(model)
        logs = []
        for i, idx in enumerate(batches * 2):
            xb, yb, first = pad_batch([x[j] for j in idx]), y[idx], i % len(batches) == 0
            logs.append(step(xb, yb, idx, first) if own else
                        tuple(float(v) for v in model.train_on_batch(xb, yb, reset_metrics=first)))
        xb = pad_batch(x[:50])
        p = predict_batch(model, xb) if own else model.predict_on_batch(xb)
        runs.append((logs, [w.numpy() for w in model.weights], p))
    (logs_a, w_a, p_a), (logs_b, w_b, p_b) = runs
    assert logs_a == logs_b
    for a, b in zip(w_a, w_b, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p_a, p_b)


def test_fit_learns_and_is_deterministic(tmp_path: Path) -> None:
    a = _train(tmp_path / "a")
    b = _train(tmp_path / "b")
    np.testing.assert_array_equal(a, b)
    x, y = _task(200, 2)
    assert np.mean((a >= 0.5) == (y >= 0.5)) > 0.8


def test_packed_ids_train_exactly_as_lists(tmp_path: Path) -> None:
    """Ids packed in memory (``labelled_ids``) or on disk (the distillation set) train exactly as
    lists: the same batches, weights and predictions."""
    ref = _train(tmp_path / "a")
    np.testing.assert_array_equal(ref, _train(tmp_path / "b", packed="memory"))
    np.testing.assert_array_equal(ref, _train(tmp_path / "c", packed="file"))


def test_records_train_deterministically_and_resume(tmp_path: Path) -> None:
    """Ids in TFRecord shards (``data.stream``) learn the task, and a run killed after an epoch
    resumes to the weights of the run never stopped (the epochs are seeded: deterministic)."""
    a = _train(tmp_path / "a", packed="records")
    assert np.mean((a >= 0.5) == (_task(200, 2)[1] >= 0.5)) > 0.8
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "c", replace(CFG, max_epochs=2), stop_after=1, packed="records")
    np.testing.assert_array_equal(a, _train(tmp_path / "c", packed="records"))


def test_records_batches_hold_every_row_once_by_length(tmp_path: Path) -> None:
    x, y = _task(300, 4)
    x[7] = []  # an empty row (an empty review) still trains
    x[8] = list(range(4, 30)) * 2  # 52 ids
    rec = IdRecords.write([(x[:100], y[:100]), (x[100:], y[100:])], tmp_path / "r", shards=3)
    assert len(rec) == 300 and rec.longest == 52 and not list(tmp_path.glob("*.tmp"))
    assert [r.tolist() for r in rec.head(10)] == x[:10]
    assert rec.labels().dtype == np.float32 and rec.labels().tolist() == y.tolist()  # in index order
    import tensorflow as tf  # written in a seeded random order: rows that come in blocks get mixed

    on_disk = [int(tf.train.Example.FromString(r).features.feature["index"].int64_list.value[0])
               for f in rec.files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]
    assert sorted(on_disk) == list(range(300)) and on_disk[:100] != sorted(on_disk[:100])

    def epoch(seed: int) -> list[tuple]:
        return [b[:3] for b in _record_batches(rec, 32, seed, chunk_batches=2, shuffle_buffer=100)]

    batches = epoch(1)
    order = np.concatenate([idx for _, _, idx in batches])
    assert sorted(order.tolist()) == list(range(300))  # every row once
    for ids, labels, idx in batches:
        assert ids.shape[1] % PAD_MULTIPLE == 0 and len(idx) <= 32
        longest = max(len(x[i]) for i in idx)
        assert max(longest, 1) <= ids.shape[1] < max(longest, 1) + PAD_MULTIPLE  # pad_batch's width
        for row, i in zip(ids, idx, strict=True):
            assert row[: len(x[i])].tolist() == x[i] and not row[len(x[i]):].any()
        assert labels.tolist() == y[idx].tolist()
    spread = np.mean([max(len(x[i]) for i in b) - min(len(x[i]) for i in b) for _, _, b in batches])
    assert spread < 25  # sorted chunks of 64: random batches of 32 out of lengths 3..39 span ~33
    again = np.concatenate([idx for _, _, idx in epoch(1)])
    assert again.tolist() == order.tolist()  # seeded: the same epoch
    assert np.concatenate([idx for _, _, idx in epoch(2)]).tolist() != order.tolist()


def test_soft_labelled_ids_read_rows_once(tmp_path: Path) -> None:
    class Tok:  # ids = code points, vocabulary 300
        vocab_size = 300

        def ids(self, texts):
            return [[ord(c) for c in t] for t in texts]

        ids_ragged = Tokenizer.ids_ragged

    rows = [("ab", 1.0), ("", 0.0), ("xyz", 0.25)] * 5
    ids, y = soft_labelled_ids(Tok(), iter(rows), tmp_path / "ids.bin")
    assert isinstance(ids, RaggedFile) and y.dtype == np.float32
    assert [r.tolist() for r in ids] == Tok().ids([t for t, _ in rows])
    assert y.tolist() == [v for _, v in rows] and ids[2].tolist() == [120, 121, 122]
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="size"):
        RaggedFile(tmp_path / "ids.bin", np.array([0, 3]), np.uint16)


def test_labelled_ids_put_the_training_split_on_disk(tmp_path: Path) -> None:
    from pipeline.data import write_jsonl

    def rows(n: int, seed: int) -> list[tuple[str, int]]:
        xs, ys = _task(n, seed)
        return [(" ".join(f"w{i}" for i in x), int(y)) for x, y in zip(xs, ys, strict=True)]

    train = rows(100, 1)
    tok = train_tokenizer([t for t, _ in train], TokenizerConfig(vocab_size=60, seq_len=12))
    for name, data in (("train", train), ("val", rows(30, 2))):
        write_jsonl(tmp_path / f"{name}.jsonl", data)
    splits = labelled_ids(tmp_path, tok, work_dir=tmp_path / "work")
    in_memory = labelled_ids(tmp_path, tok)
    assert isinstance(splits["train"][0], RaggedFile) and (tmp_path / "work/train_ids.bin").exists()
    assert isinstance(splits["val"][0], Ragged)
    for name in ("train", "val"):
        assert [r.tolist() for r in splits[name][0]] == [r.tolist() for r in in_memory[name][0]]
        assert splits[name][1].tolist() == in_memory[name][1].tolist()
    assert splits["train"][1].tolist() == [float(y) for _, y in train]
    records = labelled_ids(tmp_path, tok, work_dir=tmp_path / "work", records=True)
    assert isinstance(records["train"][0], IdRecords) and (tmp_path / "work/train_records").is_dir()
    assert [r.tolist() for r in records["train"][0].head(100)] == [r.tolist() for r in in_memory["train"][0]]
    assert records["train"][1].tolist() == in_memory["train"][1].tolist()
    assert isinstance(records["val"][0], Ragged)


def test_ragged_rows() -> None:
    rows = [[5, 6, 7], [], [9], list(range(300, 340))]
    r = Ragged.from_rows(rows, np.uint16)
    assert len(r) == 4 and r.lengths.tolist() == [3, 0, 1, 40]
    assert [x.tolist() for x in r] == rows and r[-1].tolist() == rows[-1]
    assert [x.tolist() for x in r[1:3]] == rows[1:3]
    both = Ragged.concat([r, Ragged.from_rows([[1, 2]], np.uint16), Ragged.from_rows([], np.uint16)])
    assert [x.tolist() for x in both] == [*rows, [1, 2]]
    assert pad_batch([r[0], r[2]]).tolist() == pad_batch([rows[0], rows[2]]).tolist()
    assert r.nbytes < 100 * 8 + 44 * 2
    with pytest.raises(IndexError):
        r[4]
    with pytest.raises(ValueError):
        r[0][0] = 1  # read-only views
    assert Ragged.dtype_for(8000) is np.uint16 and Ragged.dtype_for(70_000) is np.int32


def test_fit_with_ema(tmp_path: Path) -> None:
    p = _train(tmp_path / "ema", replace(CFG, ema=0.9))
    y = _task(200, 2)[1]
    assert np.mean((p >= 0.5) == (y >= 0.5)) > 0.8


def test_interrupted_fit_resumes_from_last_epoch(tmp_path: Path, caplog) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "w", replace(CFG, max_epochs=3), stop_after=2)
    caplog.set_level("INFO")
    _train(tmp_path / "w", replace(CFG, max_epochs=3))
    assert "resuming training after epoch 1" in caplog.text
    assert "epoch 1/" not in caplog.text.split("resuming")[1]  # epoch 1 was not trained again


def test_a_run_killed_in_the_epoch_hook_redoes_that_epoch(tmp_path: Path) -> None:
    """What ``on_epoch_end`` saves (rewind weights, the AFD branch) belongs to the epoch: a kill
    inside it leaves the epoch undone, so the resumed run trains it again and calls the hook again."""
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "w", stop_after=1)
    assert not (tmp_path / "w" / "state.json").exists()
    seen: list[int] = []
    resumed = _train(tmp_path / "w", seen=seen)
    assert seen == [1, 2]
    np.testing.assert_array_equal(resumed, _train(tmp_path / "ref"))


def test_ppmi_embeddings_group_tokens_that_share_contexts() -> None:
    from pipeline.nn.train import ppmi_embeddings

    rng = np.random.default_rng(0)
    # Tokens 2 and 3 always follow token 10; tokens 4 and 5 always follow token 11.
    rows = [[10, int(rng.choice([2, 3])), 12] if i % 2 else [11, int(rng.choice([4, 5])), 13]
            for i in range(400)]
    emb = ppmi_embeddings(rows, 20, 4, window=1)
    assert emb.shape == (20, 4) and abs(float(emb.std()) - 0.05) < 0.03

    def cos(a: int, b: int) -> float:
        return float(emb[a] @ emb[b] / (np.linalg.norm(emb[a]) * np.linalg.norm(emb[b])))

    assert cos(2, 3) > cos(2, 4) + 0.5


def test_cosine_factor_falls_from_one_to_zero_over_the_run() -> None:
    from pipeline.nn.train import cosine_factor

    f = [cosine_factor(e / 4, 3) for e in range(13)]
    assert f[0] == 1.0 and abs(f[6] - 0.5) < 1e-12 and f[-1] == 0.0
    assert all(a > b for a, b in zip(f[:-1], f[1:], strict=True))
    assert cosine_factor(5.0, 3) == 0.0  # past the end: stays at zero
