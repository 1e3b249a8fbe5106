"""int8 TFLite Micro export of the student: step + head models, the device loop, release files.

One module fixture trains a small student (vocab 1000, embed 32, units 32) for two short epochs on
the real slice, so label agreement between the float student and the int8 loop means something.
"""

from __future__ import annotations

import numpy as np
import pytest

import pipeline  # noqa: F401
from pipeline.compress.qat import build_qat_model, student_from_qat
from pipeline.device.arena import _ArenaProber, min_arena
from pipeline.device.convert import CUSTOM_STEP_ARENA_BYTES, convert_int8, macs_per_review
from pipeline.device.flatbuf import float_ops, op_report, tensor_quant
from pipeline.device.loop import requantize_pooled, step_loop
from pipeline.device.release import (
    HEAD_FILE,
    QUANT_FILE,
    STEP_FILE,
    STEP_OUTPUTS,
    load_release,
    write_release,
)
from pipeline.device.runtime import TflmModel, load_tflm_predictor, ms_per_review
from pipeline.device.step import compact_rows

EMBED, UNITS = 32, 32
# the builtin step's sigmoid / tanh are lookup tables (CAST + ADD + GATHER, pipeline.device.lut); the
# default step is one custom operator (pipeline.device.gru, tests/test_gru.py)
ALLOWED_OPS = {"builtin": {"GATHER", "UNPACK", "FULLY_CONNECTED", "SPLIT", "ADD", "SUB", "MUL", "CAST"},
               "step": {"TINYSENT_BIGRU"}, "head": {"FULLY_CONNECTED", "LOGISTIC"}}


def _fits(model: bytes, size: int) -> bool:
    """Whether the TFLM interpreter builds and invokes ``model`` in ``size`` bytes."""
    with _ArenaProber(model) as probe:
        return probe.fits(size)


@pytest.fixture(scope="module")
def builtin(trained) -> dict:
    """The same student converted with the builtin-operator step (the first releases' format)."""
    return convert_int8(trained["student"], trained["eval_ids"][:200], step_format="builtin")


def test_full_integer_ops_only(trained, builtin) -> None:
    for name, blob in (("step", trained["converted"]["step"]), ("builtin", builtin["step"]),
                       ("head", trained["converted"]["head"])):
        assert float_ops(blob) == []
        report = op_report(blob)
        assert {o["op"] for o in report} <= ALLOWED_OPS[name]
        for o in report:
            allowed = {"INT8", "INT32", "UINT8"} if name == "step" else {"INT8", "INT32"}
            assert set(o["inputs"] + o["outputs"]) <= allowed, o  # UINT8: the custom op's sigmoid table
            if o["op"] == "FULLY_CONNECTED":
                assert o["inputs"][:2] == ["INT8", "INT8"]  # int8 activations and weights
    step_ops = [o["op"] for o in op_report(builtin["step"])]
    assert step_ops.count("FULLY_CONNECTED") == 4
    # the embedding lookup, then one table lookup per direction for each of z, r (sigmoid), c (tanh)
    assert step_ops.count("GATHER") == 1 + 6 and step_ops.count("CAST") == 6


def test_state_quantization_in_equals_out(builtin) -> None:
    from tflite_micro.python.tflite_micro import runtime

    c = builtin
    meta, step = c["meta"], c["step"]
    interp = runtime.Interpreter.from_bytes(step, arena_size=meta["step"]["arena_bytes"])
    for name in STEP_OUTPUTS:
        i, o = meta["step"]["inputs"][name], meta["step"]["outputs"][name]
        q_in, q_out = tensor_quant(step, "inputs", i), tensor_quant(step, "outputs", o)
        assert q_in == q_out and q_in["dtype"] == "INT8" and q_in["scale"] > 0
        assert q_in == {"dtype": "INT8", **{k: meta["quant"][name][k] for k in ("scale", "zero_point")}}
        d_in = interp.get_input_details(i)["quantization_parameters"]
        d_out = interp.get_output_details(o)["quantization_parameters"]
        assert np.array_equal(d_in["scales"], d_out["scales"])
        assert np.array_equal(d_in["zero_points"], d_out["zero_points"])
    assert tensor_quant(step, "inputs", meta["step"]["inputs"]["tokens"])["dtype"] == "INT32"


def test_loads_in_tflm_with_minimum_arena(trained, builtin) -> None:
    c = builtin
    meta = c["meta"]
    # the custom step cannot load in the TFLM Python interpreter: its arena is a stated estimate
    custom = trained["converted"]["meta"]
    assert custom["step"]["arena_bytes"] == CUSTOM_STEP_ARENA_BYTES and not custom["step"]["arena_measured"]
    assert custom["head"]["arena_bytes"] == meta["head"]["arena_bytes"]
    for name in ("step", "head"):
        arena = meta[name]["arena_bytes"]
        assert min_arena(c[name]) == arena and arena % 16 == 0
        assert not _fits(c[name], arena - 16)
    assert meta["step"]["arena_bytes"] + meta["head"]["arena_bytes"] <= 16 * 1024
    assert len(c["step"]) + len(c["head"]) <= 200_000
    model = TflmModel(c)  # exactly the minimum arenas
    p = model.predict(trained["eval_ids"][:5])
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert ms_per_review(model, 128, repeats=1) > 0


def _float_runners(student):
    """``(step_fn, head_fn)`` for :func:`step_loop` from the float step and head Keras models."""
    import tensorflow as tf

    from pipeline.device.step import build_head_model, build_step_model

    step_model, head_model = build_step_model(student), build_head_model(student)
    step_call = tf.function(lambda a, b, c: step_model([a, b, c], training=False))
    head_call = tf.function(lambda p: head_model(p, training=False))

    def step_fn(tokens, hf, hb):
        f, b = step_call(tf.constant(tokens), tf.constant(hf), tf.constant(hb))
        return f.numpy(), b.numpy()

    return step_fn, lambda pooled: float(head_call(tf.constant(pooled)).numpy().reshape(-1)[0])


def test_float_step_loop_matches_student(trained) -> None:
    from pipeline.nn.train import predict_proba

    student, tok = trained["student"], trained["tok"]
    step_fn, head_fn = _float_runners(student)
    rng = np.random.default_rng(1)
    rows = [rng.integers(1, tok.vocab_size, n).tolist() for n in (256, 300)]
    rows += trained["long_ids"] + [[7], []]
    want = predict_proba(student, rows)
    got = np.array([step_loop(step_fn, head_fn, r, UNITS) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_int8_loop_agrees_with_float_student(trained, builtin) -> None:
    p, y = trained["p_float"], trained["eval_y"]
    acc = float(np.mean((p >= 0.5) == y))
    assert acc > max(np.mean(y), 1 - np.mean(y)) + 0.03, acc  # trained above the majority class
    for runtime, c in (("tflm", trained["converted"]), ("tflite", trained["converted"]),
                       ("tflm", builtin), ("tflite", builtin)):
        q = TflmModel(c, runtime=runtime).predict(trained["eval_ids"])
        agree = float(np.mean((q >= 0.5) == (p >= 0.5)))
        print(f"{runtime}: label agreement {agree:.4f} on {len(p)} reviews, "
              f"max |dP| {np.abs(q - p).max():.4f}, float acc {acc:.4f}")
        assert agree >= 0.97
        assert np.abs(q - p).max() < 0.1


def test_release_round_trip(trained, tmp_path) -> None:
    c = trained["converted"]
    write_release(tmp_path, c)
    assert {p.name for p in tmp_path.iterdir()} == {STEP_FILE, HEAD_FILE, QUANT_FILE}
    back = load_release(tmp_path)
    assert back["step"] == c["step"] and back["head"] == c["head"] and back["meta"] == c["meta"]
    ids = trained["eval_ids"][:20]
    predict = load_tflm_predictor(tmp_path)
    np.testing.assert_array_equal(predict(ids), TflmModel(c).predict(ids))


def test_predict_cli_runs_int8_release(trained, tmp_path, capsys) -> None:
    """`python -m pipeline.predict DIR FILE --runtime tflm|tflite` on a release folder."""
    import json

    from pipeline import predict
    from pipeline.nn.train import write_model_info

    write_release(tmp_path, trained["converted"])
    trained["tok"].save(tmp_path)
    write_model_info(tmp_path, {"tflm": QUANT_FILE, "tflite": QUANT_FILE}, kind="student")
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                               for t, y in trained["eval_rows"][:30]))
    for runtime in ("tflm", "tflite"):
        assert predict.main([str(tmp_path), str(reviews), "--runtime", runtime, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["n"] == 30 and 0.0 <= got["accuracy"] <= 1.0
    assert predict.main([str(tmp_path), str(reviews), "--runtime", "keras"]) == 2
    assert "no 'keras' model" in capsys.readouterr().err


def test_macs_per_review(trained) -> None:
    meta = trained["converted"]["meta"]
    per_token = 2 * 3 * UNITS * (EMBED + UNITS)  # two directions, input + recurrent kernels
    assert meta["step"]["macs"] == per_token and meta["head"]["macs"] == 2 * UNITS
    assert macs_per_review(meta, 128) == 128 * per_token + 2 * UNITS


def test_requantize_pooled() -> None:
    zps, mult = np.array([3, -2]), np.float32([0.5, 2.0])
    sums = np.array([[3 * 10 + 3 * 3, 3 * -2]], np.int32)  # means 13 and -2 (zp -> real 0)
    np.testing.assert_array_equal(requantize_pooled(sums, 3, zps, mult, 5), [[10, 5]])
    np.testing.assert_array_equal(requantize_pooled(sums, 0, zps, mult, 5), [[5, 5]])
    big = np.array([[1000 * 127, -1000 * 128]], np.int32)
    np.testing.assert_array_equal(requantize_pooled(big, 1000, np.zeros(2), np.float32([4, 4]), 0),
                                  [[127, -128]])


def test_qat_model_keeps_weights_masks_padding_and_converts(trained, tmp_path) -> None:
    """tfmot QAT: the wrapped student trains, ignores padding, and maps back to a plain student."""
    from pipeline.config import TrainConfig
    from pipeline.nn.train import fit, predict_proba

    student = trained["student"]
    qat = build_qat_model(student)
    back = student_from_qat(qat, student)
    for a, b in zip(back.get_weights(), student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    ids = trained["eval_ids"][:300]
    y = trained["eval_y"][:300].astype(np.float32)
    fit(qat, (ids, y), (ids[:64], y[:64]), TrainConfig(max_epochs=1, batch_size=32,
                                                       learning_rate=1e-4), tmp_path)
    short = np.array([ids[0][:5]], np.int32)
    padded = np.pad(short, ((0, 0), (0, 11)))
    np.testing.assert_allclose(qat.predict_on_batch(padded), qat.predict_on_batch(short), atol=1e-6)
    tuned = student_from_qat(qat, student)
    p_qat, p_tuned = predict_proba(qat, ids), predict_proba(tuned, ids)
    assert np.mean((p_qat >= 0.5) == (p_tuned >= 0.5)) > 0.95  # fake quant is close to float
    converted = convert_int8(tuned, ids[:50])
    assert float_ops(converted["step"]) == [] and float_ops(converted["head"]) == []


def test_compact_rows_maps_every_id_to_its_row() -> None:
    table = np.arange(24, dtype=np.float32).reshape(6, 4) + 1
    assert compact_rows(table)[1] is None  # only the padding row may go: nothing to gain
    table[[2, 4]] = 0.0
    rows, id_map = compact_rows(table)
    assert rows.shape == (4, 4)  # rows 1, 3, 5 and one shared zero row
    np.testing.assert_array_equal(rows[id_map], np.where(np.arange(6)[:, None] == 0, 0, table))


def test_pruned_rows_are_dropped_and_the_loop_still_agrees(trained) -> None:
    """Zeroed embedding rows leave the int8 table; the id map keeps the loop's answers."""
    import tf_keras as keras

    student = keras.models.clone_model(trained["student"])
    student.set_weights(trained["student"].get_weights())
    emb = student.get_layer("embedding")
    table = emb.get_weights()[0]
    table[1::2] = 0.0  # every odd id pruned
    emb.set_weights([table])
    converted = convert_int8(student, trained["eval_ids"][:100])
    meta = converted["meta"]
    kept = int(np.count_nonzero(table[1:].any(axis=1)))  # the even ids but padding row 0
    assert meta["table_rows"] == kept + 1  # plus the one shared zero row
    assert converted["meta"]["step"]["bytes"] < trained["converted"]["meta"]["step"]["bytes"]
    from pipeline.nn.train import predict_proba

    ids = trained["eval_ids"][:150]
    model = TflmModel(converted)
    p_int8 = model.predict(ids, batch=32)  # batched through the id map as one at a time
    np.testing.assert_array_equal(p_int8, [model.predict_one(r) for r in ids])
    assert np.mean((p_int8 >= 0.5) == (predict_proba(student, ids) >= 0.5)) >= 0.97


def test_batched_spec_loop_equals_one_review_at_a_time(trained) -> None:
    """``predict`` runs the SPEC over many reviews at once: exactly the per-review loop's answers."""
    model = TflmModel(trained["converted"])
    ids = [list(r) for r in trained["eval_ids"][:120]] + [[]]  # mixed lengths and an empty review
    assert len({len(r) for r in ids}) > 10
    np.testing.assert_array_equal(model.predict(ids, batch=16),
                                  np.array([model.predict_one(r) for r in ids], np.float32))


def test_qat_fake_quantization_follows_the_spec(trained) -> None:
    """The QAT embedding is the table the conversion stores (2, 4 and 8 bits); states sit on 1/128."""
    import tensorflow as tf
    import tf_keras as keras

    from pipeline.compress.qat import fake_embedding
    from pipeline.device import gru

    student = trained["student"]
    table = student.get_layer("embedding").get_weights()[0]
    emb4, mult, s_e = gru.quantize_embedding4(table)
    p4 = gru.GruParams(emb=emb4, emb_mult=mult, wx=np.zeros((2, 3, 32), np.int8), wh=None, bx=None,
                       bh=None, mx=None, mh=None, shift=0, sig=None, tanh=None)
    want = gru.embedding_rows(p4, np.arange(len(table))) * s_e
    np.testing.assert_allclose(fake_embedding(tf.constant(table), 4).numpy(), want, atol=1e-6)
    emb2, mult2, s_2 = gru.quantize_embedding2(table)
    p2 = gru.GruParams(emb=emb2, emb_mult=mult2, wx=np.zeros((2, 3, table.shape[1]), np.int8), wh=None,
                       bx=None, bh=None, mx=None, mh=None, shift=0, sig=None, tanh=None)
    want = gru.embedding_rows(p2, np.arange(len(table))) * s_2
    np.testing.assert_allclose(fake_embedding(tf.constant(table), 2).numpy(), want, atol=1e-6)
    q8, s8, zp8 = gru.quantize_embedding(table)
    np.testing.assert_allclose(fake_embedding(tf.constant(table), 8).numpy(),
                               (q8.astype(np.float64) - zp8) * s8, atol=1e-6)
    qat = build_qat_model(student, embedding_bits=4)
    states = keras.Model(qat.input, qat.get_layer("bigru").output).predict_on_batch(
        np.array([trained["eval_ids"][0][:20]], np.int32))
    np.testing.assert_allclose(states * 128, np.round(states * 128), atol=1e-4)
    assert states.min() >= -1 and states.max() <= 127 / 128
    # the straight-through embedding passes gradients to the float table
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(qat(np.array([[3, 4, 5]], np.int32)))
    grad = tape.gradient(loss, qat.get_layer("embedding").embeddings)
    assert np.abs(tf.convert_to_tensor(grad).numpy()[[3, 4, 5]]).sum() > 0


def test_compare_precisions_through_the_device_path(trained) -> None:
    """PTQ at 8 and 4 bits and QAT at 4 bits, scored by the --runtime tflm loop (tiny run)."""
    from pipeline.device.convert import compare_precisions
    from pipeline.device.release import load_release, write_release

    student = trained["student"]
    ids, y = trained["eval_ids"], trained["eval_y"].astype(np.float32)
    out = compare_precisions(student, student, {"val": (ids, y)}, ids[:50], 4, max_reviews=300)
    rows = out["splits"]["val"]
    assert rows["reviews"] == 300 and out["embedding_bits"] == 4
    assert set(rows) == {"reviews", "float", "qat_float", "ptq_8", "ptq_4", "qat_4"}
    assert rows["qat_4"] == rows["ptq_4"]  # the same weights: the same device predictions
    # the packed table: V*E/2 + 2V bytes instead of V*E
    V, E = student.get_layer("embedding").get_weights()[0].shape
    assert rows["ptq_8"]["embedding_bytes"] == V * E
    assert rows["ptq_4"]["embedding_bytes"] == V * E // 2 + V  # packed codes + uint8 multipliers
    assert rows["ptq_8"]["model_bytes"] - rows["ptq_4"]["model_bytes"] >= V * E // 2 - 2 * V - 256
    for k in ("float", "ptq_8", "ptq_4"):
        print(f"{k}: accuracy {rows[k]['accuracy']:.4f} loss {rows[k]['loss']:.4f}")
        assert rows[k]["accuracy"] > max(np.mean(y[:300]), 1 - np.mean(y[:300]))
    assert abs(rows["ptq_4"]["accuracy"] - rows["float"]["accuracy"]) < 0.05
    # a 4-bit release round-trips through its files and quant.json
    c = convert_int8(student, ids[:50], embedding_bits=4)
    assert c["meta"]["step"]["custom_op"]["embedding_bits"] == 4
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_release(Path(d), c)
        np.testing.assert_array_equal(TflmModel(load_release(Path(d))).predict(ids[:20]),
                                      TflmModel(c).predict(ids[:20]))


def test_head_fc_scales_give_every_tflm_the_same_multiplier(builtin) -> None:
    """esp-tflite-micro 1.3.7 forms the FULLY_CONNECTED multiplier from float32(s_in * s_w), newer
    TFLM from the double product: with the head's scales their product is exact in float32."""
    from pipeline.device import flatbuf

    m = flatbuf.load(builtin["head"])
    sg = m.subgraphs[0]
    fcs = [op for op in sg.operators if flatbuf.builtin(m, op) == "FULLY_CONNECTED"]
    assert fcs
    for op in fcs:
        s_in = float(sg.tensors[op.inputs[0]].quantization.scale[0])
        for k, s_w in enumerate(sg.tensors[op.inputs[1]].quantization.scale):
            exact = s_in * float(s_w)  # double
            assert float(np.float32(s_in) * np.float32(s_w)) == exact
            assert float(sg.tensors[op.inputs[2]].quantization.scale[k]) == exact
    # a scale with a long mantissa is what the converter writes; the rounding moves it < 2**-12
    assert abs(flatbuf._short_mantissa(0.007432751357555389, 12) / 0.007432751357555389 - 1) < 2**-12


def test_spec_cell_rounds_as_the_device_step_and_passes_float_gradients() -> None:
    """SpecGRUCell's forward is the SPEC's tables and state rounding; its gradients the float GRU's."""
    import tensorflow as tf
    import tf_keras as keras

    from pipeline.compress.qat import SpecGRUCell
    from pipeline.device import gru

    units, rng = 8, np.random.default_rng(5)
    spec, plain = SpecGRUCell(units, reset_after=True), keras.layers.GRUCell(units, reset_after=True)
    for c in (spec, plain):
        c.build((None, 4))
    # zero kernels: the pre-activations are the biases, put on the spec's Q9 grid
    bias = np.round(rng.uniform(-9, 9, (2, 3 * units)) * 512) / 512
    weights = [np.zeros((4, 3 * units)), np.zeros((units, 3 * units)), bias]
    spec.set_weights(weights)
    plain.set_weights(weights)
    h = tf.constant(rng.integers(-128, 128, (3, units)) / 128.0, tf.float32)
    x = tf.zeros((3, 4))
    with tf.GradientTape(persistent=True) as tape:
        out = spec(x, [h])[0]
        ref = plain(x, [h])[0]
        loss_s, loss_p = tf.reduce_sum(out * out), tf.reduce_sum(ref * ref)
    sig, tanh = gru.sig_table().astype(np.int64), gru.tanh_table().astype(np.int64)
    q9 = np.round(bias * 512).astype(np.int64)
    pz, pr = q9[0, :units] + q9[1, :units], q9[0, units:2 * units] + q9[1, units:2 * units]
    xh, hh = q9[0, 2 * units:], q9[1, 2 * units:]
    z = sig[np.clip((pz + 16) >> 5, -128, 127) + 128]
    r = sig[np.clip((pr + 16) >> 5, -128, 127) + 128]
    c = tanh[np.clip((xh + ((r * hh + 128) >> 8) + 8) >> 4, -128, 127) + 128]
    hq = np.round(h.numpy() * 128).astype(np.int64)
    want = c + ((z * (hq - c) + 128) >> 8)
    # r * hh is exact in the spec (Q9 times 1/256) and rounded there: the float cell's pc is off by
    # less than one Q9 step, which may move a tanh index by one; everything else is exact
    got = np.round(out.numpy() * 128).astype(np.int64)
    np.testing.assert_allclose(out.numpy() * 128, got, atol=1e-4)  # on the state grid
    assert np.mean(got == want) > 0.95 and np.abs(got - want).max() <= 1
    # straight-through: the gradient flows as through the float cell (same sign, nonzero)
    gs = tape.gradient(loss_s, spec.bias).numpy()
    gp = tape.gradient(loss_p, plain.bias).numpy()
    assert np.abs(gs).sum() > 0 and np.corrcoef(gs.ravel(), gp.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("qat_wins", [False, True])
def test_qat_stage_saves_the_device_table_whichever_weights_it_keeps(trained, tmp_path, qat_wins) -> None:
    """Kept start (QAT's device-path loss above PTQ's) or kept QAT: ``model.keras`` looks its embedding
    up as the device stores it, the float table lies beside it, and converting the stage's output
    makes the codes of that float table (kept start: exactly PTQ's step of the start)."""
    import tensorflow as tf

    from pipeline.compress.qat import fake_embedding, qat_student
    from pipeline.config import TrainConfig
    from pipeline.data.splits import write_jsonl
    from pipeline.device.convert import LATENT_TABLE, quantize_student
    from pipeline.nn.models import load_model, save_model

    student_dir, data_dir = tmp_path / "student", tmp_path / "data"
    student_dir.mkdir()
    trained["tok"].save(student_dir)
    save_model(trained["student"], student_dir / "model.keras")
    rows = [(t, int(y)) for t, y in trained["eval_rows"][:300]]
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", rows[:200])
    write_jsonl(data_dir / "val.jsonl", rows[200:])

    def compare(start, tuned, splits, calibration, bits):  # the stage's decision, forced
        qat_loss = 0.2 if qat_wins else 0.4
        return {"splits": {"val": {f"ptq_{bits}": {"loss": 0.3, "accuracy": 0.9},
                                   f"qat_{bits}": {"loss": qat_loss, "accuracy": 0.9}}}}

    out = tmp_path / "qat"
    summary = qat_student(student_dir, data_dir, out, tmp_path / "work", TrainConfig(max_epochs=1),
                          embedding_bits=2, compare=compare, calibration_reviews=100)
    assert summary["kept"] == ("qat" if qat_wins else "start")
    latent = np.load(out / LATENT_TABLE)
    start_table = trained["student"].get_layer("embedding").get_weights()[0]
    assert np.array_equal(latent, start_table) != qat_wins
    saved = load_model(out / "model.keras").get_layer("embedding").get_weights()[0]
    np.testing.assert_array_equal(saved, fake_embedding(tf.constant(latent), 2).numpy())
    assert summary["saved_with_device_table"]["val_accuracy"] > 0.5
    quantize_student(out, data_dir, tmp_path / "int8", 100, 2)
    if not qat_wins:
        ptq = tmp_path / "ptq"
        quantize_student(student_dir, data_dir, ptq, 100, 2)
        assert (ptq / "step.tflite").read_bytes() == (tmp_path / "int8" / "step.tflite").read_bytes()
