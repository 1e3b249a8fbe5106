"""int8 activation lookup tables (pipeline.device.lut) and the crash-safe arena probe.

Small synthetic models only: each converts a sigmoid or tanh over every int8 input value and
compares the table rewrite with TFLM's own kernels, in TFLM and in ``tf.lite``.
"""

from __future__ import annotations

import numpy as np
import pytest

import pipeline  # noqa: F401
from pipeline.device import flatbuf, lut
from pipeline.device.arena import _ArenaProber, min_arena
from pipeline.device.flatbuf import float_ops, io_map, op_report, tensor_quant
from pipeline.device.runtime import _Runner

N = 256  # one input element per int8 value


def _activation_model(activation: str, lo: float, hi: float) -> bytes:
    """A full-int8 ``[1, N] -> Dense(identity) -> activation`` model calibrated on [lo, hi]."""
    import tensorflow as tf
    import tf_keras as keras

    x = keras.Input((N,), batch_size=1, name="x")
    dense = keras.layers.Dense(N, use_bias=False)  # a real producer for the activation's input
    y = keras.layers.Activation(activation)(dense(x))
    model = keras.Model(x, y)
    dense.set_weights([np.eye(N, dtype=np.float32)])
    samples = [{"x": np.linspace(lo, hi, N, dtype=np.float32)[None]}] * 4
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter(samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def _rewrite(model: bytes) -> tuple[bytes, int]:
    m = flatbuf.load(model)
    n = lut.lut_activations(m)
    return flatbuf.pack(m), n


def _fits(model: bytes, size: int) -> bool:
    with _ArenaProber(model) as probe:
        return probe.fits(size)


def _run(model: bytes, x: np.ndarray, runtime: str) -> np.ndarray:
    io = io_map(model)
    name_in, name_out = next(iter(io["inputs"])), next(iter(io["outputs"]))
    runner = _Runner(model, io, [name_in], [name_out], runtime, 1 << 16)
    return runner.run(x)[0]


@pytest.mark.parametrize(("activation", "lo", "hi"), [("sigmoid", -8, 8), ("tanh", -3, 3),
                                                      ("sigmoid", -2, 5)])
def test_table_matches_tflm_kernel_on_every_int8_input(activation, lo, hi) -> None:
    model = _activation_model(activation, lo, hi)
    rewritten, n = _rewrite(model)
    assert n == 1 and float_ops(rewritten) == []
    ops = [o["op"] for o in op_report(rewritten)]
    assert "LOGISTIC" not in ops and "TANH" not in ops and ops.count("GATHER") == 1
    x = np.arange(-128, 128, dtype=np.int8)[None]  # every value the activation can see
    want = _run(model, x, "tflm").astype(int)
    got = _run(rewritten, x, "tflm").astype(int)
    assert np.abs(got - want).max() <= 1  # the fixed-point kernel is within a step of the table
    assert np.mean(got == want) >= 0.95
    # tf.lite runs the same bytes to the same values: GATHER is exact in both
    np.testing.assert_array_equal(_run(rewritten, x, "tflite"), got.astype(np.int8))
    io_before, io_after = io_map(model), io_map(rewritten)
    assert io_before == io_after
    assert tensor_quant(model, "outputs", 0) == tensor_quant(rewritten, "outputs", 0)


def test_activation_table_values() -> None:
    t = lut.activation_table("LOGISTIC", 0.0625, 0, 1 / 256, -128)
    assert t.dtype == np.int8 and t.shape == (256,)
    assert t[128] == 0  # sigmoid(0) = 0.5 -> 128/256 - 128
    assert t[0] == -128 and t[255] == 127  # saturated ends (clamped at 127: 1.0 is 256/256)
    assert (np.diff(t.astype(int)) >= 0).all()
    th = lut.activation_table("TANH", 0.05, 10, 1 / 128, 0)
    assert th[128 + 10] == 0 and (np.diff(th.astype(int)) >= 0).all()


def test_nothing_to_replace_changes_nothing() -> None:
    import tensorflow as tf
    import tf_keras as keras

    x = keras.Input((8,), batch_size=1)
    model = keras.Model(x, keras.layers.Dense(4)(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter([[np.ones((1, 8), np.float32)]] * 2)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    blob = bytes(conv.convert())
    m = flatbuf.load(blob)
    assert lut.lut_activations(m) == 0
    assert op_report(flatbuf.pack(m)) == op_report(blob)


def test_rewritten_buffers_stay_16_byte_aligned() -> None:
    rewritten, _ = _rewrite(_activation_model("sigmoid", -4, 4))
    m = flatbuf.schema().Model.GetRootAs(rewritten, 0)
    starts = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            starts.append(b._tab.Vector(b._tab.Offset(4)))
    assert starts and all(s % 16 == 0 for s in starts)


def test_arena_probe_survives_a_crashing_interpreter() -> None:
    """Arenas of 512 B or less crash the TFLM Python wrapper: the probe's child dies, not us."""
    model = _activation_model("tanh", -3, 3)
    with _ArenaProber(model) as probe:
        assert probe.fits(256) is False
        assert probe.fits(1 << 16) is True  # a fresh child after the crash
        assert probe.fits(1024) is False
    assert min_arena(model) % 16 == 0 and _fits(model, min_arena(model))
