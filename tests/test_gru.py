"""The fused int8 BiGRU step (custom operator TINYSENT_BIGRU): C kernel == NumPy SPEC bit for bit,
the step flatbuffer, conversion of a tiny student, the firmware's op resolver.

The tiny trained student (fixture ``trained``, tests/conftest.py) is converted to the custom step.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.device import flatbuf, gru

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "src"
VENDOR = ROOT.parent / "shared" / "vendor" / "esp-tflite-micro-1.3.7"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")

_SHIM = r"""
#include "gru_step.h"
void run_batch(int32_t E, int32_t U, int32_t shift, const int8_t *emb, const int8_t *wx,
               const int8_t *wh, const int32_t *gates, const uint8_t *sig, const int8_t *tanh,
               const void *mult, int32_t mult16, int32_t bits, int32_t n, const int32_t *tok,
               const int8_t *h, int8_t *out)
{
    gru_model_t m;
    int32_t i;
    gru_model_init(&m, E, U, shift, emb, wx, wh, gates, sig, tanh);
    if (mult && mult16) gru_model_set_emb4_v2(&m, (const uint8_t *)emb, (const int16_t *)mult);
    else if (mult) gru_model_set_packed(&m, bits, (const uint8_t *)emb, (const uint8_t *)mult);
    for (i = 0; i < n; i++) {
        const int8_t *hi = h + i * 2 * U;
        int8_t *ho = out + i * 2 * U;
        gru_step(&m, tok + 2 * i, hi, hi + U, ho, ho + U);
    }
}
"""


def _build(tmp: Path, flags: list[str]) -> ctypes.CDLL:
    (tmp / "shim.c").write_text(_SHIM)
    lib = tmp / f"gru{abs(hash(tuple(flags)))}.so"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fPIC", "-shared",
                    *flags, f"-I{SRC}", str(SRC / "gru_step.c"), str(tmp / "shim.c"), "-o", str(lib)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def _c_step(lib: ctypes.CDLL, p: gru.GruParams, ru: int, tok: np.ndarray, h: np.ndarray) -> np.ndarray:
    c = gru.pack(p, ru)
    arrays = [np.ascontiguousarray(c[k]) for k in gru.CONST_NAMES]
    tok = np.ascontiguousarray(tok, np.int32)
    h = np.ascontiguousarray(h, np.int8)
    out = np.zeros_like(h)
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in (*arrays, tok, h, out)]
    mult = None if p.emb_mult is None else np.ascontiguousarray(c["mult"])
    lib.run_batch(ctypes.c_int32(p.embed_dim), ctypes.c_int32(p.units), ctypes.c_int32(p.shift),
                  *ptr[:6], None if mult is None else mult.ctypes.data_as(ctypes.c_void_p),
                  ctypes.c_int32(mult is not None and mult.dtype == np.int16),
                  ctypes.c_int32(p.embedding_bits), ctypes.c_int32(len(tok)), *ptr[6:])
    return out


def random_params(E: int, U: int, V: int = 300, seed: int = 0, w_std: float = 0.5,
                  bits: int = 8) -> gru.GruParams:
    rng = np.random.default_rng(seed)
    cells = [(rng.normal(0, w_std, (E, 3 * U)), rng.normal(0, w_std, (U, 3 * U)),
              rng.normal(0, 1.0, (2, 3 * U))) for _ in range(2)]
    table = rng.normal(0, 0.5, (V, E)) * rng.uniform(0.05, 1.0, (V, 1))  # rows of unequal norm
    table[5 % V] = 0.0
    return gru.quantize(table, cells, embedding_bits=bits)


def _uneven_table() -> np.ndarray:
    """200 x 16 float rows of very unequal norm; row 7 all zero."""
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.3, (200, 16)) * rng.uniform(0.02, 1.0, (200, 1))
    table[7] = 0.0
    return table


def _random_steps(p: gru.GruParams, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, len(p.emb), (n, 2))
    h = rng.integers(-128, 128, (n, 2, p.units)).astype(np.int8)
    h[: n // 5] = rng.choice(np.int8([-128, 127]), (n // 5, 2, p.units))  # saturated states
    return tok, h


@needs_gcc
@pytest.mark.parametrize("bits", gru.EMBEDDING_BITS)
@pytest.mark.parametrize(("E", "U", "ru", "flags"), [
    (32, 32, 2, ["-O2", "-fno-schedule-insns"]),
    (16, 24, 2, ["-Os"]),
    (64, 40, 2, ["-O2"]),  # the longer unrolled dot products (K = 40 ... 64)
    (12, 7, 2, ["-O2"]),  # neither E nor U a multiple of 8, U odd: a padded unit
    (8, 6, 4, ["-O1", "-DGRU_RU=4", "-DGRU_DOT=0"]),
])
def test_c_kernel_is_the_spec_bit_for_bit(tmp_path, E, U, ru, flags, bits) -> None:
    lib = _build(tmp_path, flags)
    # large weights: saturated gates and tables; for 4 (2) bits any multiplier the spec allows (the
    # extremes of e), of v3 (uint8) and of v2 (int16, 4 bits only)
    big = 1.8 if bits == 2 else 2.0  # 2 bits: a coarser s_e, the gate multipliers' limit sooner
    packed = {4: [(1, big, np.uint8), (2, big, np.int16)], 2: [(1, big, np.uint8)]}
    cases = [(0, 0.5, None), (1, big, None)] + packed.get(bits, [])
    for seed, w_std, mult_type in cases:
        p = random_params(E, U, seed=seed, w_std=w_std, bits=bits)
        if mult_type is not None:
            top = gru.EMB_MULT_LIMIT if mult_type == np.uint8 else gru.EMB_MULT_LIMIT_V2
            p.emb_mult = np.random.default_rng(seed).integers(0, top, p.rows).astype(mult_type)
            p.emb_mult[:3] = [0, top - 1, top // 2]
        tok, h = _random_steps(p, 3000, seed)
        want = gru.step(p, tok, h)
        np.testing.assert_array_equal(_c_step(lib, p, ru, tok, h), want)
        # and along sequences: each step's output is the next step's state
        hh, ref = np.zeros((1, 2, U), np.int8), np.zeros((1, 2, U), np.int8)
        for t in np.random.default_rng(seed).integers(0, len(p.emb), (200, 2)):
            hh = _c_step(lib, p, ru, t[None], hh)
            ref = gru.step(p, t[None], ref)
        np.testing.assert_array_equal(hh, ref)


def test_spec_tables_and_rounding() -> None:
    sig, tanh = gru.sig_table(), gru.tanh_table()
    assert sig.dtype == np.uint8 and sig[0] == 0 and sig[128] == 128 and sig[255] == 255
    assert tanh.dtype == np.int8 and tanh[128] == 0 and tanh[0] == -128 and tanh[255] == 127
    a, m = np.array([-(2 ** 31), -5, 0, 7, 2 ** 31 - 1], np.int64), np.array([2 ** 31 - 1] * 5)
    for s in (0, 1, 7, 31):
        half = 0.5 if s else 0.0  # S = 0 truncates
        want = [int(np.floor(np.floor(x * y / 2 ** 32) / 2 ** s + half))
                for x, y in zip(a.tolist(), m.tolist(), strict=True)]
        assert gru.requant(a, m, s).tolist() == want


def test_int_matmul_is_exact() -> None:
    """The spec's float64 matmul equals integer arithmetic, at the int8 extremes too."""
    rng = np.random.default_rng(3)
    for k in (1, 40, 64, 4096):
        a = rng.integers(-128, 128, (17, k))
        w = rng.integers(-128, 128, (5, k)).astype(np.int8)
        a[0], w[0] = -128, -128  # the largest sums: k * 2^14
        want = [[sum(int(x) * int(y) for x, y in zip(r, c, strict=True)) for c in w] for r in a]
        assert gru.int_matmul(a, w).tolist() == want
    with pytest.raises(ValueError, match="exact"):
        big = np.broadcast_to(np.int8(0), (1, 2 ** 40))  # a view: nothing allocated
        gru.int_matmul(big, big)


def test_4bit_embedding_spec() -> None:
    """Nibble order, the code's offset, the row rescale's rounding and range, the conversion's accuracy."""
    q = np.array([[-8, 7, -1, 0, 3, -7]])
    packed = gru.pack_nibbles(q)
    assert packed.tolist() == [[0xF0, 0x87, 0x1B]] and gru.nibbles(packed).tolist() == q.tolist()
    p = random_params(6, 4, V=4, bits=4)
    p.emb = np.repeat(packed, 4, axis=0)
    p.emb_mult = np.array([16, 8, 255, 0], np.uint8)  # v3: ES = 4
    gru.check(p)
    e = gru.embedding_rows(p, np.arange(4))
    assert e[0].tolist() == [-8, 7, -1, 0, 3, -7]
    assert e[1].tolist() == [-4, 4, 0, 0, 2, -3]  # (q*8 + 8) >> 4: halves round up
    assert e[2].tolist() == [-127, 112, -16, 0, 48, -112] and e[3].tolist() == [0] * 6
    assert gru.spec_version(p) == 3
    p.emb_mult = np.array([1024, 512, 2 ** 14 - 1, 0], np.int16)  # v2: ES = 10
    gru.check(p)
    e = gru.embedding_rows(p, np.arange(4))
    assert e[1].tolist() == [-4, 4, 0, 0, 2, -3]  # (q*512 + 512) >> 10
    assert e[2].tolist() == [-128, 112, -16, 0, 48, -112] and gru.spec_version(p) == 2
    p.emb_mult[2] = 2 ** 14
    with pytest.raises(ValueError, match="2\\^14"):
        gru.check(p)
    p.emb_mult = np.array([16, 8, 255, 0], np.int32)
    with pytest.raises(ValueError, match="uint8"):
        gru.check(p)
    table = _uneven_table()
    emb4, mult, s_e = gru.quantize_embedding4(table)
    assert emb4.shape == (200, 8) and mult.dtype == np.uint8 and mult.max() == 254  # 111 / 7 * 16
    p4 = gru.GruParams(emb=emb4, wx=np.zeros((2, 3, 16), np.int8), wh=np.zeros((2, 3, 1), np.int8),
                       bx=np.zeros((2, 3), np.int32), bh=np.zeros((2, 3), np.int32),
                       mx=np.zeros((2, 3), np.int32), mh=np.zeros((2, 3), np.int32), shift=0,
                       sig=gru.sig_table(), tanh=gru.tanh_table(), emb_mult=mult)
    real = gru.embedding_rows(p4, np.arange(200)) * s_e
    assert (real[7] == 0).all()
    # 4-bit per row (error <= r_v / 2), the multiplier's rounding (|q| <= 7 times half a step of
    # 2^-ES) and one int8 rounding (s_e / 2)
    r = np.abs(table).max(1, keepdims=True) / 7
    bound = r / 2 + s_e * (7 * 0.5 / 2 ** gru.EMB_SHIFT + 0.5)
    assert (np.abs(real - table) <= bound + 1e-9).all()
    with pytest.raises(ValueError, match="even"):
        gru.quantize_embedding4(table[:, :5])
    # an odd width (a pruned student) is padded with a zero dimension: the same steps
    p5, odd = random_params(5, 6, V=40, bits=4), random_params(5, 6, V=40, bits=8)
    assert p5.embed_dim == 6 and (p5.wx[:, :, 5] == 0).all()
    assert (gru.embedding_rows(p5, np.arange(40))[:, 5] == 0).all()
    tok, h = _random_steps(odd, 200, 0)
    diff = gru.step(p5, tok, h).astype(int) - gru.step(odd, tok, h)
    print(f"odd E, 4-bit vs 8-bit table: mean |dh| {np.abs(diff).mean():.2f} / 128")
    assert np.abs(diff).mean() < 8


def test_2bit_embedding_spec() -> None:
    """Crumb order, the code's levels, the row rescale's rounding and range, the conversion's steps."""
    q = np.array([[-3, -1, 1, 3, 3, 1, -1, -3]])
    packed = gru.pack_crumbs(q)
    assert packed.tolist() == [[0b11100100, 0b00011011]] and gru.crumbs(packed).tolist() == q.tolist()
    with pytest.raises(ValueError, match="-3, -1, 1 or 3"):
        gru.pack_crumbs(np.array([[0, 1, 1, 1]]))
    p = random_params(8, 4, V=4, bits=2)
    assert p.embedding_bits == 2 and p.emb.shape == (4, 2) and gru.spec_version(p) == 3
    p.emb = np.repeat(packed, 4, axis=0)
    p.emb_mult = np.array([8, 16, 255, 0], np.uint8)
    gru.check(p)
    e = gru.embedding_rows(p, np.arange(4))
    assert e[0].tolist() == [-3, -1, 1, 3, 3, 1, -1, -3]  # (q*8 + 4) >> 3
    assert e[1].tolist() == [-6, -2, 2, 6, 6, 2, -2, -6]
    p.emb_mult = np.array([8, 3, 255, 0], np.uint8)
    e = gru.embedding_rows(p, np.arange(4))
    assert e[1].tolist() == [-1, 0, 0, 1, 1, 0, 0, -1]  # (q*3 + 4) >> 3: floor shift
    assert e[2].tolist() == [-96, -32, 32, 96, 96, 32, -32, -96] and e[3].tolist() == [0] * 8
    p.emb_mult = p.emb_mult.astype(np.int16)
    with pytest.raises(ValueError, match="uint8 row multipliers only"):
        gru.check(p)
    table = _uneven_table()
    emb2, mult, s_e = gru.quantize_embedding2(table)
    assert emb2.shape == (200, 4) and mult.dtype == np.uint8 and mult.max() == 251  # 94 / 3 * 8
    p.emb, p.emb_mult, p.wx = emb2, mult, np.zeros((2, 3, 16), np.int8)
    real = gru.embedding_rows(p, np.arange(200)) * s_e
    assert (real[7] == 0).all()
    # each value is the midpoint of its step D_v (or the outer level), up to the multiplier's
    # rounding (|q| <= 3 times half a step of 2^-ES) and one int8 rounding (s_e / 2)
    d = np.sqrt(np.mean(table ** 2, axis=1, keepdims=True))
    ideal = (np.clip(np.floor(table / np.where(d > 0, d, 1)), -2, 1) + 0.5) * d
    assert (np.abs(real - ideal) <= s_e * (3 * 0.5 / 2 ** gru.EMB2_SHIFT + 0.5) + 1e-9).all()
    err = np.sqrt(np.mean((real - table) ** 2) / np.mean(table ** 2))
    print(f"2-bit table: relative RMS error {err:.3f}")
    assert err < 0.45  # four levels of a Gaussian: about 0.34
    with pytest.raises(ValueError, match="divisible by 4"):
        gru.quantize_embedding2(table[:, :6])
    # a width not divisible by 4 (a pruned student) is padded with zero dimensions that the RMS
    # leaves out: the real dimensions are quantized as without padding
    p6 = random_params(6, 5, V=40, bits=2)
    assert p6.embed_dim == 8 and (p6.wx[:, :, 6:] == 0).all()  # (2-bit codes have no 0 level:
    # the padded dimensions hold +-D_v / 2, which their zero Wx columns ignore)
    t6 = np.random.default_rng(1).normal(0, 1, (40, 6))
    codes = gru.crumbs(gru.quantize_embedding2(np.pad(t6, ((0, 0), (0, 2))), width=6)[0])
    d6 = np.sqrt(np.mean(t6 ** 2, axis=1, keepdims=True))
    np.testing.assert_array_equal(codes[:, :6], np.clip(2 * np.floor(t6 / d6) + 1, -3, 3))


def test_spec_follows_the_float_gru() -> None:
    """The int8 spec tracks the float Keras GRU cell it was quantized from."""
    E, U = 16, 12
    rng = np.random.default_rng(3)
    cells = [(rng.normal(0, 0.4, (E, 3 * U)), rng.normal(0, 0.4, (U, 3 * U)),
              rng.normal(0, 0.3, (2, 3 * U))) for _ in range(2)]
    table = rng.normal(0, 0.5, (50, E))
    p = gru.quantize(table, cells)
    sg = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    hq, hf = np.zeros((1, 2, U), np.int8), np.zeros((2, U))
    for tok in rng.integers(0, 50, (40, 2)):
        hq = gru.step(p, tok[None], hq)
        for d, (k, r, b) in enumerate(cells):
            gx, gh = table[tok[d]] @ k + b[0], hf[d] @ r + b[1]
            z, rr = sg(gx[:U] + gh[:U]), sg(gx[U:2 * U] + gh[U:2 * U])
            c = np.tanh(gx[2 * U:] + rr * gh[2 * U:])
            hf[d] = c + z * (hf[d] - c)
    assert np.abs(hq[0] / 128.0 - hf).max() < 0.08


def test_spec_v2_tables_still_read_and_run() -> None:
    """A v2 step file (int16 row multipliers, ES = 10) reads back as v2 and runs as v2."""
    p = random_params(12, 7, V=50, bits=4)
    p.emb_mult = (p.emb_mult.astype(np.int16) << 6) + np.int16(5)  # finer multipliers, < 2^14
    blob = gru.build_step_flatbuffer(p)
    opts = np.asarray(flatbuf.load(blob).subgraphs[0].operators[0].customOptions, np.uint8).tobytes()
    assert struct.unpack("<6i", opts)[0] == 2
    back = gru.read_step_flatbuffer(blob)
    assert back.emb_mult.dtype == np.int16 and gru.spec_version(back) == 2
    np.testing.assert_array_equal(back.emb_mult, p.emb_mult)
    tok, h = _random_steps(p, 100, 0)
    np.testing.assert_array_equal(gru.step(back, tok, h), gru.step(p, tok, h))


@pytest.mark.parametrize("bits", gru.EMBEDDING_BITS)
def test_step_flatbuffer_round_trips(bits) -> None:
    p = random_params(12, 7, bits=bits)
    blob = gru.build_step_flatbuffer(p)
    assert len(blob) % 4 == 0 and blob[4:8] == b"TFL3"
    assert flatbuf.pack(flatbuf.load(blob)) == blob  # the toolkit reads and rewrites it unchanged
    back = gru.read_step_flatbuffer(blob)
    for k in ("emb", "wx", "wh", "bx", "bh", "mx", "mh", "sig", "tanh", "emb_mult"):
        np.testing.assert_array_equal(getattr(back, k), getattr(p, k), err_msg=k)
    assert back.embedding_bits == bits and back.emb.dtype == (np.uint8 if bits != 8 else np.int8)
    assert (back.shift, back.emb_scale, back.emb_zero_point) == (p.shift, p.emb_scale,
                                                                  p.emb_zero_point)
    assert flatbuf.op_set(blob) == [gru.OP_NAME] and flatbuf.is_custom(blob, gru.OP_NAME)
    assert flatbuf.float_ops(blob) == []
    assert flatbuf.io_map(blob) == {"inputs": {"tokens": 0, "h_fwd": 1, "h_bwd": 2},
                                    "outputs": {"h_fwd": 0, "h_bwd": 1}}
    m = flatbuf.load(blob)
    op = m.subgraphs[0].operators[0]
    opts = np.asarray(op.customOptions, np.uint8).tobytes()
    assert struct.unpack("<6i", opts) == (gru.GRU_SPEC_VERSION, 12, 7, gru.PACK_RU, p.shift, bits)
    for t in m.subgraphs[0].tensors:  # constants 16-byte aligned in the file
        data = m.buffers[t.buffer].data
        if data is not None and len(data):
            raw = np.asarray(data, np.uint8).tobytes()
            assert blob.index(raw) % 16 == 0 or blob.count(raw) > 1
    if bits == 8:  # a spec v1 file (5 int32, no EB) reads as EB = 8
        op.customOptions = list(struct.pack("<5i", 1, 12, 7, gru.PACK_RU, p.shift))
        np.testing.assert_array_equal(gru.read_step_flatbuffer(flatbuf.pack(m)).emb, p.emb)
    op.customOptions = list(struct.pack("<6i", 99, 12, 7, gru.PACK_RU, p.shift, bits))
    with pytest.raises(ValueError, match="spec version 99"):
        gru.read_step_flatbuffer(flatbuf.pack(m))


def test_conversion_limits() -> None:
    with pytest.raises(ValueError, match="needs S < 0"):
        gru.quantize(np.ones((4, 4)) * 100, [(np.full((4, 6), 50.0), np.ones((2, 6)),
                                               np.zeros((2, 6)))] * 2)
    p = random_params(8, 4)
    with pytest.raises(ValueError, match="token row"):
        gru.step(p, np.array([[0, len(p.emb)]]), np.zeros((1, 2, 4), np.int8))


# ---------------------------------------------------------------- the tiny trained student


def test_custom_release_agrees_with_the_float_student(trained, tmp_path) -> None:
    from pipeline.device.release import load_release, write_release
    from pipeline.device.runtime import TflmModel

    c = trained["converted"]
    meta = c["meta"]
    assert meta["format"] == 2 and meta["step"]["ops"] == [gru.OP_NAME]
    assert meta["step"]["custom_op"]["name"] == gru.OP_NAME
    assert meta["step"]["custom_op"]["spec_version"] == gru.GRU_SPEC_VERSION
    assert meta["quant"]["h_fwd"] == {"dtype": "INT8", "scale": 1 / 128, "zero_point": 0}
    write_release(tmp_path, c)
    back = load_release(tmp_path)
    p, y = trained["p_float"], trained["eval_y"]
    q = TflmModel(back).predict(trained["eval_ids"])
    agree = float(np.mean((q >= 0.5) == (p >= 0.5)))
    print(f"custom step: label agreement {agree:.4f} on {len(p)} reviews, max |dP| "
          f"{np.abs(q - p).max():.4f}, accuracy int8 {np.mean((q >= 0.5) == y):.4f} "
          f"float {np.mean((p >= 0.5) == y):.4f}")
    assert agree >= 0.97


@needs_gcc
def test_export_registers_the_custom_op(trained, tmp_path) -> None:
    from pipeline.device import firmware as E
    from pipeline.device.release import write_release

    rel = tmp_path / "rel"
    write_release(rel, trained["converted"])
    trained["tok"].save(rel)
    sizes = E.export_firmware(rel, tmp_path / "fw")
    src = tmp_path / "fw" / "src"
    cc, h = (src / E.OP_RESOLVER_CC).read_text(), (src / E.OP_RESOLVER_H).read_text()
    assert f'resolver.AddCustom("{gru.OP_NAME}", tinysent_register_bigru())' in cc
    assert '#include "gru_op.h"' in cc and "kSentOpCount = 3;" in h  # + FULLY_CONNECTED, LOGISTIC
    config = (src / E.MODEL_CONFIG_H).read_text()
    assert f"#define SENT_GRU_SPEC_VERSION {gru.GRU_SPEC_VERSION}" in config
    assert sizes["step_model"] == len(trained["converted"]["step"])
    if not VENDOR.is_dir():
        pytest.skip(f"vendored TFLM not found at {VENDOR}")
    for name in ("gru_op.cc", "gru_op.h", "gru_step.h"):
        shutil.copyfile(SRC / name, src / name)
    inc = [f"-I{src}", "-isystem", str(VENDOR)]
    for sub in ("flatbuffers/include", "gemmlowp", "ruy"):
        inc += ["-isystem", f"{VENDOR}/third_party/{sub}"]
    for f in (src / "gru_op.cc", src / E.OP_RESOLVER_CC):
        subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-pedantic",
                        "-DTF_LITE_STATIC_MEMORY", *inc, str(f)], check=True, capture_output=True)
