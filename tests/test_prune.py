"""Lottery Ticket pruning: global masks, masked retraining, rewinding, tfmot layers, resume, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pipeline.compress.distill import kd_step
from pipeline.compress.prunable import PrunableBidirectional, tfmot_wrap, to_plain, to_prunable
from pipeline.compress.prune import (
    _load_arrays,
    global_masks,
    load_masks,
    prunable_weights,
    prune_student,
    rewind,
    size_report,
    sparsity_schedule,
    structure_report,
)
from pipeline.config import DistillConfig, PruneConfig, StudentConfig, TrainConfig
from pipeline.nn.models import build_student, load_model, save_model
from pipeline.nn.train import set_determinism

VOCAB = 50
TINY = StudentConfig(embed_dim=6, units=4, dropout=0.0, embed_dropout=0.0)
CFG = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=7)
PCFG = PruneConfig(rounds=3, rate=0.5, target_sparsity=0.7, rewind_epoch=1, retrain_epochs=2)


def _task(n: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Label = whether token 2 occurs more often than token 3; up to 12 tokens."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        row = rng.integers(4, VOCAB, size=rng.integers(3, 13)).tolist()
        y = int(rng.integers(0, 2))
        row[int(rng.integers(0, len(row)))] = 2 if y else 3
        xs.append(row)
        ys.append(y)
    return xs, np.array(ys, np.float32)


TRAIN, VAL = _task(160, 0), _task(64, 1)


def _student(seed: int = 7) -> keras.Model:
    set_determinism(seed)
    return build_student(VOCAB, TINY)


def _spread_weights(model: keras.Model, seed: int = 0, same_scale: bool = False) -> None:
    """Random weights with a different scale per prunable tensor, so per-layer sparsities differ."""
    rng = np.random.default_rng(seed)
    for i, v in enumerate(prunable_weights(model).values()):
        v.assign(rng.normal(0, 0.1 if same_scale else 0.05 * (i + 1), v.shape).astype(np.float32))


def _flat(masks_or_weights: dict) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in masks_or_weights.values()])


# --------------------------------------------------------------------------------------------------


def test_mask_is_global_with_one_threshold_and_exact_sparsity() -> None:
    model = _student()
    _spread_weights(model)
    names = list(prunable_weights(model))
    assert names == ["embedding/embeddings", "bigru/forward/kernel", "bigru/forward/recurrent_kernel",
                     "bigru/backward/kernel", "bigru/backward/recurrent_kernel", "prob/kernel"]
    w = {n: v.numpy() for n, v in prunable_weights(model).items()}
    masks, thr = global_masks(model, 0.6)
    m, a = _flat(masks), np.abs(_flat(w))
    assert int((m == 0).sum()) == round(0.6 * m.size)  # exact overall sparsity
    assert a[m == 1].min() >= thr >= a[m == 0].max()  # one threshold across all layers
    per_layer = [1 - masks[n].mean() for n in names]
    assert max(per_layer) - min(per_layer) > 0.3  # global, not per layer
    # A second round: earlier pruned stay pruned, the count is exact again, one threshold among survivors.
    for n, v in prunable_weights(model).items():
        v.assign(v.numpy() * masks[n])
    masks2, thr2 = global_masks(model, 0.8, masks)
    m2 = _flat(masks2)
    assert int((m2 == 0).sum()) == round(0.8 * m2.size)
    assert np.all(m2[m == 0] == 0)
    newly = (m == 1) & (m2 == 0)
    assert a[m2 == 1].min() >= thr2 >= a[newly].max() >= thr
    with pytest.raises(ValueError):
        global_masks(model, 0.5, masks2)


def test_ties_are_broken_deterministically_in_model_order() -> None:
    model = _student()
    for v in prunable_weights(model).values():
        v.assign(np.full(v.shape, 0.1, np.float32))
    masks, thr = global_masks(model, 0.5)
    m = _flat(masks)
    k = round(0.5 * m.size)
    assert thr == pytest.approx(0.1) and int((m == 0).sum()) == k
    assert np.all(m[:k] == 0) and np.all(m[k:] == 1)  # earliest in model order pruned first
    again, _ = global_masks(model, 0.5)
    np.testing.assert_array_equal(_flat(again), m)


def test_sparsity_schedule() -> None:
    assert sparsity_schedule(PruneConfig(rounds=5, rate=0.5, target_sparsity=0.8)) == [0.5, 0.75, 0.8]
    np.testing.assert_allclose(sparsity_schedule(PruneConfig(rounds=3, rate=0.2, target_sparsity=0.9)),
                               [0.2, 0.36, 0.488])
    assert sparsity_schedule(PCFG) == [0.5, 0.7]
    with pytest.raises(ValueError):
        sparsity_schedule(PruneConfig(rate=1.0))


# --------------------------------------------------------------------------------------------------
# tfmot layers, conversion, structure


def test_prune_low_magnitude_accepts_prunable_bidirectional(tmp_path: Path) -> None:
    model = _student()
    _spread_weights(model)
    x = np.array([[5, 2, 9, 0, 0, 0], [3, 3, 7, 8, 11, 4]], np.int32)
    p = to_prunable(model)
    assert isinstance(p.get_layer("bigru"), PrunableBidirectional)
    assert len(p.get_layer("bigru").get_prunable_weights()) == 4
    np.testing.assert_allclose(p(x).numpy(), model(x).numpy(), rtol=1e-6)
    # serializable: round trip through a .keras file
    p.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras", compile=False)
    assert isinstance(loaded.get_layer("bigru"), PrunableBidirectional)
    # tfmot accepts the layer, and a model where every layer with weights is wrapped
    wrapped_layer = tfmot.sparsity.keras.prune_low_magnitude(p.get_layer("bigru"))
    assert type(wrapped_layer).__name__ == "PruneLowMagnitude"
    masks, _ = global_masks(model, 0.6)
    wrapped = tfmot_wrap(model, masks)
    kinds = {la.name: type(la).__name__ for la in wrapped.layers}
    assert kinds["prune_low_magnitude_bigru"] == "PruneLowMagnitude"
    assert kinds["prune_low_magnitude_embedding"] == "PruneLowMagnitude"
    wrapped.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    xs = np.zeros((len(TRAIN[0]), 12), np.int32)
    for i, r in enumerate(TRAIN[0]):
        xs[i, : len(r)] = r
    wrapped.fit(xs, TRAIN[1], batch_size=32, epochs=1, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    plain = to_plain(wrapped)  # tfmot kept the global masks (FixedMask schedule)
    assert type(plain.get_layer("bigru")) is keras.layers.Bidirectional
    w = _flat({n: v.numpy() for n, v in prunable_weights(plain).items()})
    m = _flat(masks)
    assert np.all(w[m == 0] == 0) and np.count_nonzero(w) == np.count_nonzero(m)
    # and the result is a plain model that loads with pipeline.models.load_model
    save_model(plain, tmp_path / "plain.keras")
    again = load_model(tmp_path / "plain.keras")
    np.testing.assert_allclose(again(x).numpy(), plain(x).numpy(), rtol=1e-6)


def test_structure_and_sizes_report_what_pruning_freed() -> None:
    model = _student()
    w = prunable_weights(model)
    emb = w["embedding/embeddings"].numpy()
    emb[[5, 9]] = 0
    w["embedding/embeddings"].assign(emb)
    u = TINY.units
    k, rk = w["bigru/forward/kernel"].numpy(), w["bigru/forward/recurrent_kernel"].numpy()
    k[:, [1, u + 1, 2 * u + 1]] = 0  # unit 1: no input ...
    rk[:, [1, u + 1, 2 * u + 1]] = 0
    rk[1] = 0  # ... and no recurrent output ...
    w["bigru/forward/kernel"].assign(k)
    w["bigru/forward/recurrent_kernel"].assign(rk)
    head = w["prob/kernel"].numpy()
    head[1] = 0  # ... and the head ignores it
    w["prob/kernel"].assign(head)
    s = structure_report(model)
    assert s["embedding"]["zero_row_ids"] == [5, 9]
    assert s["bigru"]["forward"]["dead_units"] == [1] and s["bigru"]["backward"]["dead_units"] == []
    assert s["bigru"]["head_checked"]
    size = size_report(model)
    assert size["int8_dense_bytes"] == size["weights"] == model.count_params()
    assert size["nonzero_weights"] < size["weights"]



# --------------------------------------------------------------------------------------------------
# One run of the stage, shared by the tests below: a tiny tokenizer and data folder, a student trained
# with KD, then two Lottery Ticket rounds retrained with the same KD step (through a spy), interrupted
# in round 2 after its first epoch and resumed. Training dominates the cost, so it happens once.


class _Spy:
    """Wraps a step factory: records the weights each fit starts from, counts epochs, can interrupt."""

    def __init__(self, make_step, stop_at: tuple[int, int] | None = None) -> None:
        self.make_step, self.stop_at = make_step, stop_at
        self.starts: list[list[np.ndarray]] = []
        self.epochs: list[int] = []  # epochs begun per fit

    def __call__(self, model, optimizer):
        self.starts.append([w.copy() for w in model.get_weights()])
        self.epochs.append(0)
        inner, call = self.make_step(model, optimizer), len(self.starts) - 1

        def run(x, y, idx, first):
            if first:
                self.epochs[call] += 1
                if (call, self.epochs[call]) == self.stop_at:
                    raise KeyboardInterrupt
            return inner(x, y, idx, first)

        return run


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> dict:
    import logging

    from pipeline.config import TokenizerConfig
    from pipeline.data import read_jsonl, write_jsonl
    from pipeline.nn.train import fit_and_save, labelled_ids
    from pipeline.text.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("stage")
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(30)]

    def rows(n: int) -> list[tuple[str, int]]:
        out = []
        for _ in range(n):
            y = int(rng.integers(0, 2))
            t = list(rng.choice(words, size=int(rng.integers(3, 10))))
            t.insert(int(rng.integers(0, len(t))), "great" if y else "awful")
            out.append((" ".join(t), y))
        return out

    data = root / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", rows(160))
    write_jsonl(data / "val.jsonl", rows(64))
    tok = train_tokenizer([t for t, _ in rows(300)], TokenizerConfig(vocab_size=VOCAB, seq_len=12))
    # Like the distillation targets: the training reviews plus crops with soft labels.
    train_rows = [(t, float(y)) for t, y in read_jsonl(data / "train.jsonl")]
    train_rows += [(" ".join(t.split()[:3]), 0.5) for t, _ in train_rows[:32]]
    splits = labelled_ids(data, tok, names=("val",))
    splits["train"] = (tok.ids([t for t, _ in train_rows]), np.array([y for _, y in train_rows]))
    kd = kd_step(np.where(splits["train"][1] > 0.5, 3.0, -3.0), DistillConfig())
    set_determinism(CFG.seed)
    student = build_student(tok.vocab_size, TINY)
    fit_and_save(student, tok, splits, CFG, root / "sw", root / "student", "student-kd", make_step=kd)
    args = (root / "student", data, root / "out", root / "work", PCFG, CFG)
    first = _Spy(kd, stop_at=(2, 2))  # fits: 0 rewind run, 1 round 1, 2 round 2
    with pytest.raises(KeyboardInterrupt):
        prune_student(*args, make_step=first, train_rows=train_rows)
    interrupted = json.loads((root / "work" / "lt" / "lottery.json").read_text())
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: records.append(rec.getMessage())
    logger, level = logging.getLogger("pipeline"), logging.getLogger("pipeline").level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        second = _Spy(kd)
        summary = prune_student(*args, make_step=second, train_rows=train_rows)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return {"root": root, "first": first, "second": second, "summary": summary, "log": records,
            "interrupted": interrupted, "info": json.loads((root / "out" / "pruning.json").read_text())}


def test_stage_writes_a_loadable_plain_model_dir(stage: dict) -> None:
    out = stage["root"] / "out"
    assert stage["summary"]["rounds"] == 2 and stage["summary"]["rewind"] == "retrained"
    assert stage["info"]["rewind"]["reproduces_student"]  # the fresh run replays the student's epoch 1
    model = load_model(out / "model.keras")
    assert type(model.get_layer("bigru")) is keras.layers.Bidirectional
    masks = load_masks(out / "masks.npz")
    w = _flat({n: v.numpy() for n, v in prunable_weights(model).items()})
    assert np.all(w[_flat(masks) == 0] == 0)
    assert (out / "tokenizer.model").exists() and (out / "history.json").exists()
    info = json.loads((out / "model.json").read_text())
    assert info["kind"] == "student-pruned" and info["sparsity"] == stage["summary"]["sparsity"]
    assert set(stage["info"]["structure"]) == {"embedding", "bigru"}


def test_rounds_follow_the_schedule_and_report_sizes(stage: dict) -> None:
    rows = stage["info"]["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    n = rows[0]["size"]["weights"]
    total = sum(v["total"] for v in rows[0]["layers"].values())
    for row, target in zip(rows[1:], [0.5, 0.7], strict=True):
        assert row["target"] == target
        assert row["sparsity"] == round(target * total) / total  # exact
        assert sum(v["zeros"] for v in row["layers"].values()) >= round(target * total)
        assert row["size"]["nonzero_weights"] <= n - round(target * total)
        assert row["size"]["int8_dense_bytes"] == n  # TFLM stores the zeros densely
        assert row["threshold"] > 0
        assert {"val_loss", "val_accuracy", "structure", "best_epoch"} <= set(row)
    assert rows[0]["sparsity"] == 0
    assert rows[2]["size"]["int8_gzip_bytes"] < rows[0]["size"]["int8_gzip_bytes"]


def test_masks_survive_retraining(stage: dict) -> None:
    """The weights fit kept (before the stage's final re-masking) are zero wherever the mask is."""
    work = stage["root"] / "work"
    rw = _load_arrays(work / "rewind" / "rewind.npz")
    model = load_model(stage["root"] / "out" / "model.keras")
    for r in (1, 2):
        masks = load_masks(work / "lt" / f"round-{r}" / "masks.npz")
        model.load_weights(str(work / "lt" / f"round-{r}" / "fit" / "best.weights.h5"))
        trained = {n: v.numpy() for n, v in prunable_weights(model).items()}
        assert np.all(_flat(trained)[_flat(masks) == 0] == 0)
        rewind(model, rw, masks)
        start = {n: v.numpy() for n, v in prunable_weights(model).items()}
        for n in ("bigru/forward/recurrent_kernel", "bigru/backward/recurrent_kernel", "prob/kernel"):
            keep = masks[n] == 1  # (kernel rows of all-zero embedding dims get no gradient)
            assert np.mean(trained[n][keep] != start[n][keep]) > 0.9  # survivors trained (KD step)


def test_rewinding_restores_surviving_weights(stage: dict) -> None:
    work = stage["root"] / "work"
    rw = _load_arrays(work / "rewind" / "rewind.npz")
    starts = stage["first"].starts  # the rewind run, round 1, round 2
    assert len(starts) == 3
    model = load_model(stage["root"] / "out" / "model.keras")
    for r in (1, 2):
        masks = load_masks(work / "lt" / f"round-{r}" / "masks.npz")
        rewind(model, rw, masks)
        for a, b in zip(starts[r], model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # each round starts from rewind values * mask
        emb, keep = model.get_weights()[0], masks["embedding/embeddings"] == 1
        np.testing.assert_array_equal(emb[keep], rw[0][keep])
        assert np.all(emb[~keep] == 0)
    assert any(not np.array_equal(a, b) for a, b in zip(starts[0], rw, strict=True))  # rewind != init


def test_an_interrupted_round_resumes_where_it_stopped(stage: dict) -> None:
    assert [r["round"] for r in stage["interrupted"]["rounds"]] == [0, 1]
    assert stage["first"].epochs == [1, 2, 2]  # round 2 was stopped as its epoch 2 began
    assert stage["second"].epochs == [0, 1]  # then: rewind run done, round 2 epoch 2 only
    assert "lottery ticket: resuming after round 1" in stage["log"]
    assert "resuming training after epoch 1 (best epoch 1)" in stage["log"]
    hist = json.loads((stage["root"] / "work" / "lt" / "round-2" / "fit" / "state.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1, 2]
