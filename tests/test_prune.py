"""Lottery Ticket pruning: global masks (weights and structured groups), masked retraining, rewinding,
tfmot layers, the shrunk student, flash accounting, resume, the stage."""

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
    apply_masks,
    chosen_round,
    global_masks,
    load_masks,
    prunable_weights,
    prune_student,
    rewind,
    size_report,
    sparsity_schedule,
    structure_report,
)
from pipeline.compress.structures import (
    flash_bytes,
    flash_report,
    group_keep,
    group_scores,
    keep_from_masks,
    keep_masks,
    masked_variables,
    removable,
    shrink,
    structured_masks,
)
from pipeline.config import DistillConfig, PruneConfig, StudentConfig, TrainConfig
from pipeline.nn.models import build_student, load_model, save_model
from pipeline.nn.train import set_determinism

VOCAB = 50
TINY = StudentConfig(embed_dim=6, units=4, dropout=0.0, embed_dropout=0.0)
CFG = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=7)
PCFG = PruneConfig(rounds=3, rate=0.3, target_flash_saving=0.5, rewind_epoch=1, retrain_epochs=2)


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
    weights = PruneConfig(mode="unstructured", rounds=5, rate=0.5, target_sparsity=0.8)
    assert sparsity_schedule(weights) == [0.5, 0.75, 0.8]
    np.testing.assert_allclose(sparsity_schedule(PruneConfig(mode="unstructured", rounds=3, rate=0.2,
                                                             target_sparsity=0.9)), [0.2, 0.36, 0.488])
    assert sparsity_schedule(PCFG) == pytest.approx([0.3, 0.5])  # structured: flash bytes saved
    assert sparsity_schedule(PruneConfig(rounds=3, rate=0.4, target_flash_saving=0.7)) == pytest.approx(
        [0.4, 0.64, 0.7])
    with pytest.raises(ValueError):
        sparsity_schedule(PruneConfig(rate=1.0))
    with pytest.raises(ValueError):
        PruneConfig(mode="channels")


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
    # and the result is a plain model that loads with pipeline.nn.models.load_model
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
# Structured groups: scores, the global group threshold, whole-group masks, the shrunk student, flash


def _gaussian(model: keras.Model, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {n: rng.normal(0, scale, v.shape).astype(np.float32) for n, v in masked_variables(model).items()}
    for n, v in masked_variables(model).items():
        v.assign(w[n])
    return w


def test_group_scores_are_rms_so_kinds_of_any_size_compare() -> None:
    set_determinism(0)
    model = build_student(400, StudentConfig(embed_dim=16, units=8, dropout=0.0, embed_dropout=0.0))
    w = _gaussian(model, scale=0.1)
    s = group_scores(model)
    emb, k = w["embedding/embeddings"], w["bigru/forward/kernel"]
    np.testing.assert_allclose(s["row"][7], np.sqrt(np.mean(emb[7] ** 2)), rtol=1e-6)
    dim3 = np.concatenate([emb[1:, 3], k[3], w["bigru/backward/kernel"][3]])
    np.testing.assert_allclose(s["dim"][3], np.sqrt(np.mean(dim3 ** 2)), rtol=1e-6)
    assert np.all(np.isinf(s["row"][:2]))  # padding and <unk> are never pruned
    # Groups of 16 (rows), 448 (dims) and ~2 x 130 (unit pairs) weights drawn alike score alike,
    # where a raw L2 would differ by sqrt(size): 5x between rows and dims.
    means = [np.mean(s["row"][2:]), np.mean(s["dim"]), np.mean(s["unit"])]
    assert max(means) / min(means) < 1.1 and all(abs(m - 0.1) < 0.01 for m in means)


def test_global_group_threshold_picks_the_smallest_groups_across_kinds() -> None:
    model = _student()
    w = _gaussian(model)
    u = TINY.units
    emb = w["embedding/embeddings"]
    emb[[5, 9]] *= 0.01  # two weak vocabulary rows
    emb[:, 2] *= 0.02  # a weak embedding dim ...
    for d in ("forward", "backward"):
        w[f"bigru/{d}/kernel"][2] *= 0.02  # ... with its kernel rows
    for d, j in (("forward", 1), ("backward", 3)):  # the weakest unit of each direction
        gates = [j, u + j, 2 * u + j]
        for n in ("kernel", "recurrent_kernel", "bias"):
            w[f"bigru/{d}/{n}"][:, gates] *= 0.03
        w[f"bigru/{d}/recurrent_kernel"][j] *= 0.03
        w["prob/kernel"][j + (u if d == "backward" else 0)] *= 0.03
    for n, v in masked_variables(model).items():
        v.assign(w[n])
    s = group_scores(model)
    assert list(s["unit_order"][0][:1]) == [1] and list(s["unit_order"][1][:1]) == [3]
    # Exactly these four groups take the flash down to this many bytes: prune to that target.
    dense, after = flash_bytes(VOCAB, 0, 6, u), flash_bytes(VOCAB, 2, 5, u - 1)
    keep, thr = group_keep(model, 1 - (after + 0.5) / dense)
    assert np.flatnonzero(~keep.rows).tolist() == [5, 9] and np.flatnonzero(~keep.dims).tolist() == [2]
    assert np.flatnonzero(~keep.units[0]).tolist() == [1] and np.flatnonzero(~keep.units[1]).tolist() == [3]
    assert thr == pytest.approx(s["unit"][0])  # the last group pruned: the unit pair
    kept = np.concatenate([s["row"][2:][keep.rows[2:]], s["dim"][keep.dims], s["unit"][1:]])
    assert kept.min() >= thr
    # Round 2 keeps round 1's groups pruned and goes on by score; the flash target is reached.
    masks, _ = structured_masks(model, 1 - (after + 0.5) / dense)
    apply_masks(model, masks, masked_variables)
    masks2, thr2 = structured_masks(model, 0.5, masks)
    k2 = keep_from_masks(masks2)
    assert not (k2.rows & ~keep.rows).any() and not (k2.dims & ~keep.dims).any()
    assert not (k2.units[0] & ~keep.units[0]).any() and thr2 >= thr
    c = k2.counts()
    assert flash_bytes(VOCAB, c["dropped_rows"], c["dims"], c["units"]) <= 0.5 * dense
    with pytest.raises(ValueError):
        group_keep(model, 0.99)


def _pruned_tiny(target: float = 0.45) -> tuple[keras.Model, dict]:
    model = _student()
    _gaussian(model)
    masks, _ = structured_masks(model, target)
    apply_masks(model, masks, masked_variables)
    return model, masks


def test_masks_zero_whole_groups() -> None:
    model, masks = _pruned_tiny()
    keep = keep_from_masks(masks)
    assert (~keep.rows).sum() > 0 and keep.dims.sum() < 6 and keep.units[0].sum() < TINY.units
    assert keep.units[0].sum() == keep.units[1].sum()  # pairs
    w = {n: v.numpy() for n, v in masked_variables(model).items()}
    emb = w["embedding/embeddings"]
    assert not emb[~keep.rows].any() and not emb[:, ~keep.dims].any()
    assert emb[keep.rows][:, keep.dims].all()
    for i, d in enumerate(("forward", "backward")):
        dead = np.tile(~keep.units[i], 3)
        assert not w[f"bigru/{d}/kernel"][:, dead].any() and not w[f"bigru/{d}/kernel"][~keep.dims].any()
        assert not w[f"bigru/{d}/recurrent_kernel"][:, dead].any()
        assert not w[f"bigru/{d}/recurrent_kernel"][~keep.units[i]].any()
        assert not w[f"bigru/{d}/bias"][:, dead].any()
    assert not w["prob/kernel"][~np.concatenate(keep.units)].any()
    again = removable(model)  # what the device drops is exactly what the masks pruned
    for a, b in zip((again.rows, again.dims, *again.units), (keep.rows, keep.dims, *keep.units), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(keep_masks(keep, {n: m.shape for n, m in masks.items()})["prob/kernel"],
                                  masks["prob/kernel"])


def test_shrunk_student_predicts_as_the_masked_one_and_loads(tmp_path: Path) -> None:
    model, masks = _pruned_tiny()
    keep = keep_from_masks(masks)
    small = shrink(model)
    dims, units = int(keep.dims.sum()), int(keep.units[0].sum())
    plain = build_student(VOCAB, StudentConfig(embed_dim=dims, units=units, dropout=0.0, embed_dropout=0.0))
    assert [w.shape for w in small.get_weights()] == [w.shape for w in plain.get_weights()]
    rng = np.random.default_rng(5)
    x = rng.integers(1, VOCAB, size=(64, 12)).astype(np.int32)
    x[:, :3] = np.flatnonzero(~keep.rows)[:3]  # pruned vocabulary ids, padding at the end
    x[::2, 9:] = 0
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), atol=1e-6)
    save_model(small, tmp_path / "small.keras")
    again = load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    assert not again.get_layer("embedding").get_weights()[0][~keep.rows].any()  # exactly zero rows


def test_flash_accounting_equals_the_int8_arrays() -> None:
    """flash_bytes = the arrays of the int8 step + head models after compact_rows, byte for byte."""
    from pipeline.device.step import compact_rows

    model, _ = _pruned_tiny()
    for m in (_student(), model, shrink(model)):
        table = m.get_layer("embedding").get_weights()[0]
        rows, id_map = compact_rows(table)
        bigru = m.get_layer("bigru")
        nbytes = rows.astype(np.int8).nbytes + (0 if id_map is None else id_map.astype(np.int16).nbytes)
        for layer in (bigru.forward_layer, bigru.backward_layer):
            kernel, recurrent, bias = layer.cell.get_weights()
            nbytes += kernel.astype(np.int8).nbytes + recurrent.astype(np.int8).nbytes
            nbytes += bias.astype(np.int32).nbytes
        head, head_bias = m.get_layer("prob").get_weights()
        nbytes += head.astype(np.int8).nbytes + head_bias.astype(np.int32).nbytes
        if m is model:  # the masked model: the dims and units it still carries are counted as dropped
            assert flash_report(m)["bytes"] < nbytes
        else:
            assert flash_report(m)["bytes"] == nbytes
    full, small = flash_report(model), flash_report(shrink(model))
    for k in ("bytes", "dropped_rows", "dims", "units"):
        assert full[k] == small[k]  # the masked model's flash is what its shrunk student keeps
    assert flash_report(_student())["saved"] == 0.0 and flash_report(model)["saved"] >= 0.45


@pytest.mark.parametrize("bits", [4, 2])
def test_flash_accounting_counts_the_packed_table_the_device_stores(bits: int) -> None:
    """At a 4- or 2-bit release table, flash_bytes counts the packed codes and row multipliers that
    ``gru.quantize`` writes, instead of int8 rows; a ticket for that table meets its target there."""
    from pipeline.device import gru
    from pipeline.device.step import compact_rows

    model, _ = _pruned_tiny()
    for m in (_student(), shrink(model)):
        rows, _ = compact_rows(m.get_layer("embedding").get_weights()[0])
        bigru = m.get_layer("bigru")
        cells = [layer.cell.get_weights() for layer in (bigru.forward_layer, bigru.backward_layer)]
        p = gru.quantize(rows, cells, embedding_bits=bits)
        packed = p.emb.nbytes + p.emb_mult.nbytes
        assert flash_report(m)["bytes"] - flash_report(m, bits)["bytes"] == rows.size - packed  # int8: 1 B
    model = _student()
    _gaussian(model)
    keep, _ = group_keep(model, 0.3, embedding_bits=bits)
    c = keep.counts()
    dense = flash_bytes(VOCAB, 0, TINY.embed_dim, TINY.units, bits)
    assert flash_bytes(VOCAB, c["dropped_rows"], c["dims"], c["units"], bits) <= 0.7 * dense



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


def _full_model(stage: dict, r: int, best: bool = False) -> keras.Model:
    """The unshrunk student holding round ``r``'s weights (final, or fit's best before re-masking)."""
    model = load_model(stage["root"] / "student" / "model.keras")
    rdir = stage["root"] / "work" / "lt" / f"round-{r}"
    model.load_weights(str(rdir / ("fit/best.weights.h5" if best else "final.weights.h5")))
    return model


def test_stage_writes_a_loadable_shrunk_student(stage: dict) -> None:
    out, info = stage["root"] / "out", stage["info"]
    assert stage["summary"]["rounds"] == 2 and stage["summary"]["rewind"] == "retrained"
    assert info["round"] == stage["summary"]["round"] == chosen_round(info["rounds"])["round"]
    model = load_model(out / "model.keras")
    assert type(model.get_layer("bigru")) is keras.layers.Bidirectional
    fl = info["shrunk"]
    dims, units = model.get_layer("embedding").dim, model.get_layer("bigru").forward_layer.units
    assert (dims, units) == (fl["dims"], fl["units"]) and dims * units < TINY.embed_dim * TINY.units
    assert info["shrunk"]["params"] == model.count_params() < load_model(
        stage["root"] / "student" / "model.keras").count_params()
    masks = load_masks(out / "masks.npz")
    for n, v in masked_variables(model).items():
        assert masks[n].shape == v.shape and not v.numpy()[masks[n] == 0].any()
    table = model.get_layer("embedding").get_weights()[0]
    assert np.flatnonzero(~table.any(axis=1)).tolist() == fl["dropped_row_ids"]
    assert (out / "tokenizer.model").exists() and (out / "history.json").exists()
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "student-pruned" and meta["round"] == info["round"]
    assert set(info["structure"]) == {"embedding", "bigru"}
    # The shrunk student predicts as the masked model of its round, pruned vocabulary ids included.
    masked = _full_model(stage, info["round"])
    rng = np.random.default_rng(2)
    x = rng.integers(1, table.shape[0], size=(48, 10)).astype(np.int32)
    x[:, 0] = rng.choice(fl["dropped_row_ids"], 48)
    x[::3, 7:] = 0
    np.testing.assert_allclose(model(x).numpy(), masked(x).numpy(), atol=1e-6)


@pytest.mark.xfail(strict=True, reason="known regression since dropout draws from per-epoch seeded "
                   "generators (exact resume): the fresh rewind run (clone_model of the saved student) "
                   "no longer replays the student's epoch 1 (val_loss 0.72759 vs 0.72474); open, see "
                   "the session note on issue 14")
def test_rewind_run_replays_the_students_first_epoch(stage: dict) -> None:
    assert stage["info"]["rewind"]["reproduces_student"]


def test_rounds_follow_the_schedule_and_report_flash(stage: dict) -> None:
    rows = stage["info"]["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0]["flash"]["saved_bytes"] == 0 and rows[0]["sparsity"] == 0
    dense = rows[0]["flash"]["bytes"]
    assert dense == flash_bytes(rows[0]["flash"]["vocab"], 0, TINY.embed_dim, TINY.units)
    for row, target in zip(rows[1:], [0.3, 0.5], strict=True):
        fl = row["flash"]
        assert row["target"] == pytest.approx(target) and fl["saved"] >= target - 1e-9
        assert fl["bytes"] == flash_bytes(fl["vocab"], fl["dropped_rows"], fl["dims"], fl["units"])
        assert fl["saved_bytes"] == dense - fl["bytes"]
        assert row["threshold"] > 0
        assert {"val_loss", "val_accuracy", "structure", "best_epoch", "size"} <= set(row)
    assert rows[2]["flash"]["bytes"] < rows[1]["flash"]["bytes"]


def test_masks_survive_retraining(stage: dict) -> None:
    """The weights fit kept (before the stage's final re-masking) are zero on every pruned group."""
    work = stage["root"] / "work"
    rw = _load_arrays(work / "rewind" / "rewind.npz")
    for r in (1, 2):
        masks = load_masks(work / "lt" / f"round-{r}" / "masks.npz")
        keep = keep_from_masks(masks)
        for n, m in keep_masks(keep, {n: m.shape for n, m in masks.items()}).items():
            np.testing.assert_array_equal(masks[n], m)  # whole groups
        model = _full_model(stage, r, best=True)
        trained = {n: v.numpy() for n, v in masked_variables(model).items()}
        for n in masks:
            assert not trained[n][masks[n] == 0].any(), n
        rewind(model, rw, masks, masked_variables)
        start = {n: v.numpy() for n, v in masked_variables(model).items()}
        for n in ("bigru/forward/recurrent_kernel", "bigru/backward/recurrent_kernel", "prob/kernel"):
            keep_n = masks[n] == 1
            assert np.mean(trained[n][keep_n] != start[n][keep_n]) > 0.9  # survivors trained (KD step)


def test_rewinding_restores_surviving_weights(stage: dict) -> None:
    work = stage["root"] / "work"
    rw = _load_arrays(work / "rewind" / "rewind.npz")
    starts = stage["first"].starts  # the rewind run, round 1, round 2
    assert len(starts) == 3
    model = load_model(stage["root"] / "student" / "model.keras")
    for r in (1, 2):
        masks = load_masks(work / "lt" / f"round-{r}" / "masks.npz")
        rewind(model, rw, masks, masked_variables)
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


def test_retraining_continues_the_cosine_schedule_from_the_rewind_point():
    from pipeline.compress.prune import retrain_config
    from pipeline.nn.train import cosine_factor

    cos = TrainConfig(max_epochs=8, learning_rate=2e-3, lr_schedule="cosine")
    got = retrain_config(PruneConfig(rewind_epoch=7, retrain_epochs=1), cos)
    assert got.max_epochs == 1
    assert got.learning_rate == pytest.approx(2e-3 * cosine_factor(7, 8))
    assert got.learning_rate < 1e-4  # the end-of-run rate, not the initial one
    plateau = TrainConfig(max_epochs=8, learning_rate=2e-3)
    assert retrain_config(PruneConfig(rewind_epoch=7, retrain_epochs=2), plateau).learning_rate == 2e-3
