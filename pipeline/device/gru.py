"""The fused int8 BiGRU step (custom operator ``TINYSENT_BIGRU``): SPEC v3, NumPy reference, packing.

SPEC, version 3 (one token step, both directions; Keras ``GRU(reset_after=True)``, gate order z, r, h)
-------------------------------------------------------------------------------------------------
All arithmetic is exact integer. ``a >> n`` is the floor shift ``floor(a / 2^n)`` (arithmetic shift);
``clamp(v, lo, hi)``; row ``j = g*U + u`` for gate ``g`` in {0: z, 1: r, 2: h} and unit ``u``.

Constants of a model:
  ``E``, ``U``; the embedding table in one of three widths ``EB`` (embedding bits):
    EB = 8: ``emb`` int8 ``[V][E]`` (real = ``s_e * (q - zp_e)``; the zero point is folded into bx)
    EB = 4: ``E`` even; ``emb4`` uint8 ``[V][E/2]``, two 4-bit codes per byte (element ``2i`` in the
            low nibble of byte ``i``, ``2i+1`` in the high nibble; code ``n`` means ``q = n - 8``),
            ``mult`` uint8 ``[V]`` (0 <= M_v < 2^8), one multiplier per row; ``ES = 4``
            (real = ``s_e * e``, zp_e = 0). Version 2 is version 3 with ``mult`` int16
            (0 <= M_v < 2^14) and ``ES = 10`` (8 KB more for 8,000 rows, the same answers
            within one int8 step of ``e``: ``|7 * dM| / 2^ES`` <= 0.22)
    EB = 2: ``E`` a multiple of 4; ``emb2`` uint8 ``[V][E/4]``, four 2-bit codes per byte (element
            ``4i + j`` in bits ``2j, 2j+1`` of byte ``i``; code ``n`` means ``q = 2n - 3``, one of
            -3, -1, 1, 3: the midpoints of four equal steps), ``mult`` uint8 ``[V]``, ``ES = 3``
  ``S``: one requantization shift, integer 0..31; ``R_S = 2^(S-1)`` for S >= 1, ``R_0 = 0``
  ``F = 9``: gate pre-activations are int32 in Q9 (real = q / 512)
  ``SIG[256]`` uint8: ``SIG[i] = clamp(floor(256 * sigmoid((i - 128) / 16) + 0.5), 0, 255)`` (z, r = q/256)
  ``TANH[256]`` int8: ``TANH[i] = clamp(floor(128 * tanh((i - 128) / 32) + 0.5), -128, 127)`` (c = q/128)
  per direction d in {fwd, bwd}: ``Wx`` int8 ``[3U][E]``, ``bx``, ``Mx`` int32 ``[3U]``;
  ``Wh`` int8 ``[3U][U]``, ``bh``, ``Mh`` int32 ``[3U]`` (0 <= M < 2^31)
State: ``h_d`` int8 ``[U]``, real = q / 128, zero point 0; the initial state is 0.
Inputs of a step: token rows ``t_fwd = ids[t]``, ``t_bwd = ids[T-1-t]`` (``0 <= t < V``);
the int8 embedding rows ``e_d``, ``k < E``:
  EB = 8: ``e_d[k] = emb[t_d][k]`` (raw int8)
  EB = 4: ``n = (emb4[t_d][k >> 1] >> (4 * (k & 1))) & 15``
          ``e_d[k] = ((n - 8) * M_{t_d} + 2^(ES-1)) >> ES``  (in [-128, 112] for every M)
  EB = 2: ``n = (emb2[t_d][k >> 2] >> (2 * (k & 3))) & 3``
          ``e_d[k] = ((2n - 3) * M_{t_d} + 2^(ES-1)) >> ES``  (in [-96, 96] for every M)

  RQ(a, M) = ((a * M) >> 32) + R_S) >> S              # = floor(a*M / 2^(32+S) + 1/2) for S >= 1
  for each direction d and row j (all from the OLD h_d):
      ax[j] = bx[j] + sum_k Wx[j][k] * e_d[k]          (fits int32)
      ah[j] = bh[j] + sum_k Wh[j][k] * h_d[k]          (fits int32)
  for each unit u (gz = u, gr = U + u, gh = 2U + u):
      pz = RQ(ax[gz], Mx[gz]) + RQ(ah[gz], Mh[gz])                  (Q9)
      pr = RQ(ax[gr], Mx[gr]) + RQ(ah[gr], Mh[gr])                  (Q9)
      xh = RQ(ax[gh], Mx[gh]);  hh = RQ(ah[gh], Mh[gh])             (Q9)
      z  = SIG[clamp((pz + 16) >> 5, -128, 127) + 128]
      r  = SIG[clamp((pr + 16) >> 5, -128, 127) + 128]
      pc = xh + ((r * hh + 128) >> 8)                               (Q9)
      c  = TANH[clamp((pc + 8) >> 4, -128, 127) + 128]
      h'_d[u] = c + ((z * (h_d[u] - c) + 128) >> 8)                 (int8: never leaves [-128, 127])

Conversion from float weights (:func:`quantize`, not part of the runtime spec): EB = 8: ``emb``
per-tensor asymmetric over the whole table (a per-row scale in the projections would make Mx depend
on the token); EB = 4: per-row symmetric 4 bits, ``r_v = max|row_v| / 7``, ``q = clip(round(row / r_v),
-7, 7)``, rescaled to one int8 scale ``s_e = max|table| / 111`` (zp_e = 0) by ``M_v = round(r_v / s_e *
2^ES)`` (<= 254 < 2^8); an odd ``E`` (a pruned student) gets one zero dimension (and zero Wx
column). EB = 2: per-row steps ``D_v = RMS(row_v)`` (for Gaussian rows within 1% of the step of
four equal levels with the least squared error), ``q = clip(2 * floor(row / D_v) + 1, -3, 3)``
(real ``q * D_v / 2``), ``s_e = max_v(3 * D_v / 2) / 94``, ``M_v = round(D_v / 2 / s_e * 2^ES)``
(<= 251); an all-zero row gets ``M_v = 0``; ``E`` is padded to a multiple of 4 with dimensions
that are not counted in the RMS and whose Wx columns are zero. Weights per-row symmetric,
``sw = max(max|W_row| / 127, |b| / (s_in * 2^24))`` (so biases stay below 2^24);
``bx = round(b_in / (s_e*sw_x)) - zp_e * sum_k Wx[j][k]``;
``bh = round(b_rec / (sw_h/128))``; ``Mx = round(s_e*sw_x * 2^F * 2^(32+S))``,
``Mh = round(sw_h/128 * 2^F * 2^(32+S))``, ``S`` = the largest value <= 31 with every M < 2^31
(so every real multiplier ``s_in * sw * 2^F`` must be below 1/2: ``max|Wx| * s_e < 1/8``,
``max|Wh| < 16``; :func:`quantize` raises otherwise).

The operator in a ``.tflite`` file (:func:`build_step_flatbuffer`; ``firmware/src/gru_op.cc``):
  inputs  0 ``tokens`` int32 [1, 2], 1 ``h_fwd`` int8 [1, U], 2 ``h_bwd`` int8 [1, U] (scale 1/128,
          zero point 0), then constants 3 ``emb`` (EB = 8: int8 [V, E]; EB = 4: ``emb4`` uint8
          [V, E/2]; EB = 2: ``emb2`` uint8 [V, E/4]), 4 ``wx`` int8 [2, NB, E, 3*RU], 5 ``wh`` int8
          [2, NB, U, 3*RU], 6 ``gates`` int32 [2, 4, 3*NB*RU], 7 ``sig`` uint8 [256], 8 ``tanh`` int8
          [256], and for EB = 4 and 2 9 ``mult`` uint8 [V] (spec v2: int16);
  outputs 0 ``h_fwd``, 1 ``h_bwd`` int8 [1, U] (scale 1/128, zero point 0).
Packing (``RU`` units per block, ``NB = ceil(U / RU)`` blocks, units past U are zero padding):
``wx[d][b][k][3*i + g] = Wx_d[g*U + b*RU + i][k]`` (likewise ``wh`` with k < U) and
``gates[d][n][3*u + g]`` for n = 0: bx, 1: bh, 2: Mx, 3: Mh. ``custom_options``: 6 little-endian
int32 ``(spec version 3, E, U, RU, S, EB)`` (:data:`OPTIONS_FORMAT`, raw bytes, not a FlexBuffer;
version 2 the same); version 1 (5 int32, no EB) is read as EB = 8: the arithmetic of v1 is v3's with
EB = 8. Flash of the table: EB = 8: ``V*E`` bytes; EB = 4: ``V*E/2 + V`` (v2: ``+ 2*V``); EB = 2:
``V*E/4 + V``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from pipeline.device import flatbuf as fb

GRU_SPEC_VERSION = 3
OP_NAME = "TINYSENT_BIGRU"
F, SIG_SHIFT, TANH_SHIFT = 9, 5, 4
PACK_RU = 2  # units per block of the packed layout (firmware/src/gru_step.h GRU_RU)
OPTIONS_FORMAT = "<6i"  # spec version, E, U, RU, S, EB
OPTIONS_FORMAT_V1 = "<5i"  # spec version 1: no EB (= 8)
EMB_SHIFT = 4  # ES of the 4-bit embedding's uint8 row multipliers
EMB_MULT_LIMIT = 1 << 8  # M_v < 2^8: e = ((n - 8) * M + 2^(ES-1)) >> ES needs no clamp
EMB_SHIFT_V2, EMB_MULT_LIMIT_V2 = 10, 1 << 14  # spec v2: int16 multipliers
# a 4-bit table's row multipliers, by dtype: (spec version, ES, M_v limit)
EMB_MULT_FORMATS = {np.dtype(np.uint8): (3, EMB_SHIFT, EMB_MULT_LIMIT),
                    np.dtype(np.int16): (2, EMB_SHIFT_V2, EMB_MULT_LIMIT_V2)}
EMB4_INT8_MAX = 111  # s_e = max|table| / 111: 7 * M_v / 2^ES stays below 112
EMB2_SHIFT = 3  # ES of the 2-bit embedding's uint8 row multipliers
EMB2_INT8_MAX = 94  # s_e = max level / 94: M_v <= 94 / 3 * 2^ES = 251 < 2^8
EMBEDDING_BITS = (8, 4, 2)
STATE_SCALE = 1.0 / 128
BIAS_LIMIT = 1 << 24
CONST_NAMES = ("emb", "wx", "wh", "gates", "sig", "tanh")


def sig_table() -> np.ndarray:
    """``SIG``: uint8 ``[256]``, ``256 * sigmoid((i - 128) / 16)`` rounded half up, clamped."""
    x = (np.arange(256) - 128) / 16.0
    return np.clip(np.floor(256.0 / (1.0 + np.exp(-x)) + 0.5), 0, 255).astype(np.uint8)


def tanh_table() -> np.ndarray:
    """``TANH``: int8 ``[256]``, ``128 * tanh((i - 128) / 32)`` rounded half up, clamped."""
    x = (np.arange(256) - 128) / 32.0
    return np.clip(np.floor(128.0 * np.tanh(x) + 0.5), -128, 127).astype(np.int8)


@dataclass
class GruParams:
    """The spec's constants in plain (Keras gate-major) layout; index 0 of each array is fwd, 1 bwd."""

    emb: np.ndarray  # EB = 8: int8 [V, E]; EB = 4: uint8 [V, E/2] (two int4 per byte); 2: [V, E/4]
    wx: np.ndarray  # int8 [2, 3U, E]
    wh: np.ndarray  # int8 [2, 3U, U]
    bx: np.ndarray  # int32 [2, 3U]
    bh: np.ndarray
    mx: np.ndarray
    mh: np.ndarray
    shift: int
    sig: np.ndarray  # uint8 [256]
    tanh: np.ndarray  # int8 [256]
    emb_scale: float = 1.0  # s_e, zp_e: documentation only (folded into bx)
    emb_zero_point: int = 0
    emb_mult: np.ndarray | None = None  # EB = 4, 2: uint8 [V] row multipliers (v2: int16); 8: None

    @property
    def units(self) -> int:
        return int(self.wh.shape[2])

    @property
    def embed_dim(self) -> int:
        return int(self.wx.shape[2])

    @property
    def embedding_bits(self) -> int:
        if self.emb_mult is None:
            return 8
        return 4 if 2 * self.emb.shape[1] == self.embed_dim else 2

    @property
    def rows(self) -> int:
        return int(self.emb.shape[0])


# ----------------------------------------------------------------------------- the spec


def _shift_round(a: np.ndarray, n: int) -> np.ndarray:
    """``(a + 2^(n-1)) >> n`` (floor shift)."""
    return (a + (1 << (n - 1))) >> n


def int_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w.T`` of integer arrays, exact, as int64: float64 BLAS, exact because every product and
    partial sum of int8 operands over at most a few thousand terms is an integer below 2^53 (NumPy's
    int64 matmul has no BLAS and is ~14x slower)."""
    if a.shape[-1] * 128 * 128 >= 2 ** 53:
        raise ValueError("int_matmul: too many terms for exact float64 sums")
    return (np.asarray(a, np.float64) @ np.asarray(w, np.float64).T).astype(np.int64)


def requant(a: np.ndarray, m: np.ndarray, shift: int) -> np.ndarray:
    """``RQ(a, M) = (((a * M) >> 32) + R_S) >> S`` in int64."""
    return (((a.astype(np.int64) * m.astype(np.int64)) >> 32) + ((1 << shift) >> 1)) >> shift


def nibbles(packed: np.ndarray) -> np.ndarray:
    """The values ``q = n - 8`` of the codes of packed rows ``uint8 [..., E/2]`` -> int64 ``[..., E]``."""
    b = packed.astype(np.int64)
    return np.stack([b & 15, b >> 4], axis=-1).reshape(*b.shape[:-1], 2 * b.shape[-1]) - 8


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nibbles`: values ``[..., E]`` (E even, -8..7) -> uint8 ``[..., E/2]``."""
    n = np.asarray(q, np.int64) + 8
    if n.min(initial=0) < 0 or n.max(initial=0) > 15:
        raise ValueError("4-bit values must lie in -8..7")
    return (n[..., 0::2] | (n[..., 1::2] << 4)).astype(np.uint8)


def crumbs(packed: np.ndarray) -> np.ndarray:
    """The values ``q = 2n - 3`` of the 2-bit codes of packed rows ``uint8 [..., E/4]`` -> int64
    ``[..., E]`` (element ``4i + j`` in bits ``2j, 2j+1`` of byte ``i``)."""
    b = packed.astype(np.int64)
    n = np.stack([(b >> (2 * j)) & 3 for j in range(4)], axis=-1)
    return 2 * n.reshape(*b.shape[:-1], 4 * b.shape[-1]) - 3


def pack_crumbs(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`crumbs`: values ``[..., E]`` (E a multiple of 4, in -3, -1, 1, 3) -> uint8
    ``[..., E/4]``."""
    q = np.asarray(q, np.int64)
    if not np.isin(q, (-3, -1, 1, 3)).all():
        raise ValueError("2-bit values must be -3, -1, 1 or 3")
    n = (q + 3) >> 1
    return (n[..., 0::4] | (n[..., 1::4] << 2) | (n[..., 2::4] << 4) | (n[..., 3::4] << 6)).astype(np.uint8)


def embedding_rows(p: GruParams, rows: np.ndarray) -> np.ndarray:
    """The spec's int8 embedding rows ``e`` (int64 ``[..., E]``) of token rows ``rows``."""
    if p.emb_mult is None:
        return p.emb[rows].astype(np.int64)
    m = p.emb_mult.astype(np.int64)[rows][..., None]
    if p.embedding_bits == 2:
        return (crumbs(p.emb[rows]) * m + (1 << (EMB2_SHIFT - 1))) >> EMB2_SHIFT
    es = EMB_MULT_FORMATS[p.emb_mult.dtype][1]
    return (nibbles(p.emb[rows]) * m + (1 << (es - 1))) >> es


def step(p: GruParams, tokens: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One spec step for a batch: ``tokens`` int ``[B, 2]`` (fwd, bwd row), ``h`` int8 ``[B, 2, U]``."""
    U = p.units
    tokens = np.asarray(tokens, np.int64).reshape(-1, 2)
    if tokens.min() < 0 or tokens.max() >= p.rows:
        raise ValueError(f"token row out of range [0, {p.rows})")
    sig, tanh = p.sig.astype(np.int64), p.tanh.astype(np.int64)
    out = np.empty(h.shape, np.int8)
    for d in range(2):
        e = embedding_rows(p, tokens[:, d])  # [B, E]
        hd = h[:, d].astype(np.int64)  # [B, U]
        ax = int_matmul(e, p.wx[d]) + p.bx[d]  # [B, 3U]
        ah = int_matmul(hd, p.wh[d]) + p.bh[d]
        qx, qh = requant(ax, p.mx[d], p.shift), requant(ah, p.mh[d], p.shift)
        pz, pr = qx[:, :U] + qh[:, :U], qx[:, U:2 * U] + qh[:, U:2 * U]
        xh, hh = qx[:, 2 * U:], qh[:, 2 * U:]
        z = sig[np.clip(_shift_round(pz, SIG_SHIFT), -128, 127) + 128]
        r = sig[np.clip(_shift_round(pr, SIG_SHIFT), -128, 127) + 128]
        pc = xh + ((r * hh + 128) >> 8)
        c = tanh[np.clip(_shift_round(pc, TANH_SHIFT), -128, 127) + 128]
        out[:, d] = c + ((z * (hd - c) + 128) >> 8)
    return out


def step_fn(p: GruParams):
    """The device loop's ``step_fn(tokens [1,2], h_fwd [1,U], h_bwd [1,U]) -> (h_fwd, h_bwd)``."""
    def run(tokens: np.ndarray, hf: np.ndarray, hb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = step(p, tokens, np.stack([hf.reshape(-1), hb.reshape(-1)])[None])
        return h[:, 0], h[:, 1]
    return run


def macs(embed_dim: int, units: int) -> int:
    """Multiply-accumulates of one step (both directions, input and recurrent projections)."""
    return 2 * 3 * units * (embed_dim + units)


# ----------------------------------------------------------------------------- conversion


def choose_shift(reals: np.ndarray) -> int:
    """Largest ``S <= 31`` with ``round(r * 2^(32+S)) < 2^31`` for every real multiplier ``r``."""
    for s in range(31, -1, -1):
        if np.all(np.round(reals * 2.0 ** (32 + s)) < 2 ** 31):
            return s
    raise ValueError(f"a gate multiplier of {reals.max():.3g} needs S < 0: weights too large for "
                     f"Q{F} pre-activations")


def quantize_embedding(table: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Per-tensor asymmetric int8 over the whole table (its range includes 0): ``(q, s_e, zp_e)``."""
    lo, hi = min(float(table.min()), 0.0), max(float(table.max()), 0.0)
    scale = float(np.float32((hi - lo) / 255.0)) or 1.0  # as the .tflite file stores it
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    q = np.clip(np.round(table / scale) + zp, -128, 127).astype(np.int8)
    return q, scale, zp


def quantize_embedding4(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-row symmetric 4 bits rescaled to one int8 scale: ``(emb4 uint8 [V, E/2], mult uint8 [V], s_e)``."""
    table = np.asarray(table, np.float64)
    if table.shape[1] % 2:
        raise ValueError(f"a 4-bit embedding needs an even embedding width, not {table.shape[1]}")
    scale = float(np.float32(np.abs(table).max() / EMB4_INT8_MAX)) or 1.0
    r = np.abs(table).max(axis=1) / 7.0
    q = np.clip(np.round(table / np.where(r > 0, r, 1.0)[:, None]), -7, 7)
    mult = np.round(r / scale * 2.0 ** EMB_SHIFT)
    return pack_nibbles(q), np.minimum(mult, EMB_MULT_LIMIT - 1).astype(np.uint8), scale


def emb2_steps(table: np.ndarray, width: int | None = None) -> np.ndarray:
    """EB = 2's per-row step ``D_v = RMS(row_v)`` over the first ``width`` (default: all) columns, the
    rest being padding zeros, float64 ``[V]`` (0 for an all-zero row: its multiplier is 0)."""
    table = np.asarray(table, np.float64)
    return np.sqrt(np.sum(np.square(table), axis=1) / (width or table.shape[1]))


def quantize_embedding2(table: np.ndarray, width: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-row 2 bits (four equal steps of ``D_v``, midpoints) rescaled to one int8 scale:
    ``(emb2 uint8 [V, E/4], mult uint8 [V], s_e)``; ``width``: :func:`emb2_steps`."""
    table = np.asarray(table, np.float64)
    if table.shape[1] % 4:
        raise ValueError(f"a 2-bit embedding needs a width divisible by 4, not {table.shape[1]}")
    d = emb2_steps(table, width)
    q = np.clip(2 * np.floor(table / np.where(d > 0, d, 1.0)[:, None]) + 1, -3, 3)
    scale = float(np.float32(1.5 * d.max() / EMB2_INT8_MAX)) or 1.0
    mult = np.round(d / 2 / scale * 2.0 ** EMB2_SHIFT)
    return pack_crumbs(q), np.minimum(mult, EMB_MULT_LIMIT - 1).astype(np.uint8), scale


def _per_row(w: np.ndarray, b: np.ndarray, s_in: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 of ``w [rows, K]`` with the bias kept below 2^24: ``(q, scales)``."""
    scale = np.maximum(np.abs(w).max(axis=1) / 127.0, np.abs(b) / (s_in * BIAS_LIMIT))
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale


def quantize(table: np.ndarray, cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
             embedding_bits: int = 8) -> GruParams:
    """Spec constants from float weights: the embedding ``table [V, E]`` (``embedding_bits`` 8, 4, 2)
    and, per direction, a Keras ``GRUCell(reset_after=True)``'s ``(kernel [E, 3U], recurrent_kernel
    [U, 3U], bias [2, 3U])``."""
    mult = None
    if embedding_bits == 8:
        emb, s_e, zp_e = quantize_embedding(np.asarray(table, np.float64))
    elif embedding_bits in (4, 2):
        table = np.asarray(table, np.float64)
        width, pad = table.shape[1], -table.shape[1] % (8 // embedding_bits)
        if pad:  # zero dimensions: they add nothing to any projection
            table = np.pad(table, ((0, 0), (0, pad)))
            cells = [(np.pad(np.asarray(k, np.float64), ((0, pad), (0, 0))), r, b) for k, r, b in cells]
        emb, mult, s_e = (quantize_embedding4(table) if embedding_bits == 4
                          else quantize_embedding2(table, width))
        zp_e = 0
    else:
        raise ValueError(f"embedding_bits must be one of {EMBEDDING_BITS}, not {embedding_bits}")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("wx", "wh", "bx", "bh", "rx", "rh")}
    for kernel, recurrent, bias in cells:
        bias = np.asarray(bias, np.float64)
        wx, sx = _per_row(np.asarray(kernel, np.float64).T, bias[0], s_e)
        wh, sh = _per_row(np.asarray(recurrent, np.float64).T, bias[1], STATE_SCALE)
        parts["wx"].append(wx)
        parts["wh"].append(wh)
        parts["bx"].append(np.round(bias[0] / (s_e * sx)) - zp_e * wx.astype(np.int64).sum(1))
        parts["bh"].append(np.round(bias[1] / (sh * STATE_SCALE)))
        parts["rx"].append(s_e * sx * 2.0 ** F)
        parts["rh"].append(sh * STATE_SCALE * 2.0 ** F)
    rx, rh = np.stack(parts["rx"]), np.stack(parts["rh"])
    shift = choose_shift(np.concatenate([rx.ravel(), rh.ravel()]))
    p = GruParams(emb=emb, wx=np.stack(parts["wx"]), wh=np.stack(parts["wh"]),
                  bx=np.stack(parts["bx"]).astype(np.int32), bh=np.stack(parts["bh"]).astype(np.int32),
                  mx=np.round(rx * 2.0 ** (32 + shift)).astype(np.int32),
                  mh=np.round(rh * 2.0 ** (32 + shift)).astype(np.int32), shift=shift,
                  sig=sig_table(), tanh=tanh_table(), emb_scale=s_e, emb_zero_point=zp_e,
                  emb_mult=mult)
    check(p)
    return p


def check(p: GruParams) -> None:
    """Raise ``ValueError`` unless every accumulator of the spec fits int32 and the shapes agree."""
    U, E = p.units, p.embed_dim
    shapes = {"wx": (2, 3 * U, E), "wh": (2, 3 * U, U), "bx": (2, 3 * U), "bh": (2, 3 * U),
              "mx": (2, 3 * U), "mh": (2, 3 * U), "sig": (256,), "tanh": (256,),
              "emb": (p.rows, E * p.embedding_bits // 8)}
    if p.emb_mult is not None:
        shapes["emb_mult"] = (p.rows,)
        fmt = EMB_MULT_FORMATS.get(p.emb_mult.dtype)
        if E % (8 // p.embedding_bits) or p.emb.dtype != np.uint8 or fmt is None or (
                p.emb_mult < 0).any() or (p.emb_mult >= fmt[2]).any():
            raise ValueError("4-bit (2-bit) embedding: E not even (a multiple of 4), emb not uint8 or "
                             "mult neither uint8 nor int16 in [0, 2^14) (spec v2)")
        if p.embedding_bits == 2 and fmt[0] != GRU_SPEC_VERSION:
            raise ValueError("2-bit embedding: uint8 row multipliers only (spec v3)")
    for k, shape in shapes.items():
        if getattr(p, k).shape != shape:
            raise ValueError(f"{k}: shape {getattr(p, k).shape}, expected {shape}")
    if not 0 <= p.shift <= 31:
        raise ValueError(f"shift {p.shift} not in 0..31")
    if (p.mx < 0).any() or (p.mh < 0).any():
        raise ValueError("negative multiplier")
    for b, k in ((p.bx, E), (p.bh, U)):
        if np.abs(b.astype(np.int64)).max() + 128 * 128 * k >= 2 ** 31:
            raise ValueError("bias too large: an accumulator could overflow int32")


# ----------------------------------------------------------------------------- packing


def pack(p: GruParams, ru: int = PACK_RU) -> dict[str, np.ndarray]:
    """The operator's constant tensors (module docstring: packed ``wx``, ``wh``, ``gates``)."""
    U = p.units
    nb = -(-U // ru)
    up = nb * ru

    def blocks(w: np.ndarray) -> np.ndarray:  # [2, 3U, K] -> [2, NB, K, 3*RU]
        k = w.shape[2]
        padded = np.zeros((2, 3, up, k), np.int8)
        padded[:, :, :U] = w.reshape(2, 3, U, k)
        return np.ascontiguousarray(padded.reshape(2, 3, nb, ru, k).transpose(0, 2, 4, 3, 1)
                                    .reshape(2, nb, k, 3 * ru))

    gates = np.zeros((2, 4, up, 3), np.int32)
    for n, v in enumerate((p.bx, p.bh, p.mx, p.mh)):
        gates[:, n, :U] = v.reshape(2, 3, U).transpose(0, 2, 1)
    out = {"emb": p.emb, "wx": blocks(p.wx), "wh": blocks(p.wh),
           "gates": gates.reshape(2, 4, 3 * up), "sig": p.sig, "tanh": p.tanh}
    if p.emb_mult is not None:
        out["mult"] = p.emb_mult
    return out


def unpack(c: dict[str, np.ndarray], units: int, ru: int, shift: int) -> GruParams:
    """Inverse of :func:`pack` (padding dropped)."""
    U = units

    def plain(w: np.ndarray) -> np.ndarray:  # [2, NB, K, 3*RU] -> [2, 3U, K]
        _, nb, k, _ = w.shape
        g = w.reshape(2, nb, k, ru, 3).transpose(0, 4, 1, 3, 2).reshape(2, 3, nb * ru, k)
        return np.ascontiguousarray(g[:, :, :U].reshape(2, 3 * U, k))

    g = c["gates"].reshape(2, 4, -1, 3)[:, :, :U].transpose(1, 0, 3, 2).reshape(4, 2, 3 * U)
    return GruParams(emb=c["emb"], wx=plain(c["wx"]), wh=plain(c["wh"]), bx=g[0], bh=g[1],
                     mx=g[2], mh=g[3], shift=shift, sig=c["sig"], tanh=c["tanh"], emb_mult=c.get("mult"))


def spec_version(p: GruParams) -> int:
    """3, or 2 for a table with v2's int16 multipliers."""
    return GRU_SPEC_VERSION if p.emb_mult is None else EMB_MULT_FORMATS[p.emb_mult.dtype][0]


def options(p: GruParams, ru: int = PACK_RU) -> bytes:
    """The operator's ``custom_options``: ``(spec version, E, U, RU, S, EB)`` as little-endian int32."""
    return struct.pack(OPTIONS_FORMAT, spec_version(p), p.embed_dim, p.units, ru, p.shift,
                       p.embedding_bits)


def const_names(embedding_bits: int) -> tuple[str, ...]:
    """The operator's constant inputs (3...) in order: :data:`CONST_NAMES`, plus ``mult`` for EB = 4, 2."""
    return CONST_NAMES + (("mult",) if embedding_bits != 8 else ())


# ----------------------------------------------------------------------------- the .tflite file


def build_step_flatbuffer(p: GruParams, ru: int = PACK_RU) -> bytes:
    """The step model: one ``TINYSENT_BIGRU`` operator (tensor layout in the module docstring)."""
    s = fb.schema()
    tt = s.TensorType
    U, consts = p.units, pack(p, ru)
    m, sg = fb.new_model(f"tinysent BiGRU step: {OP_NAME} spec v{spec_version(p)}")
    state = (STATE_SCALE, 0)
    ins = [fb.add_tensor(m, sg, b"tokens", [1, 2], tt.INT32),
           fb.add_tensor(m, sg, b"h_fwd", [1, U], tt.INT8, quant=state),
           fb.add_tensor(m, sg, b"h_bwd", [1, U], tt.INT8, quant=state)]
    types = {"emb": tt.INT8 if p.emb_mult is None else tt.UINT8, "wx": tt.INT8, "wh": tt.INT8,
             "gates": tt.INT32, "sig": tt.UINT8, "tanh": tt.INT8,
             "mult": tt.INT16 if spec_version(p) == 2 else tt.UINT8}
    emb_q = (p.emb_scale, p.emb_zero_point)
    names = {"emb": "emb" if p.emb_mult is None else f"emb{p.embedding_bits}"}
    consts_idx = [fb.add_constant(m, sg, f"gru_{names.get(k, k)}".encode(), consts[k], types[k],
                                  quant=emb_q if k == "emb" else None)
                  for k in const_names(p.embedding_bits)]
    outs = [fb.add_tensor(m, sg, b"h_fwd_next", [1, U], tt.INT8, quant=state),
            fb.add_tensor(m, sg, b"h_bwd_next", [1, U], tt.INT8, quant=state)]
    sg.operators = [fb.make_custom_op(m, OP_NAME, ins + consts_idx, outs, options(p, ru))]
    sg.inputs, sg.outputs = ins, outs
    fb.set_signature(m, {"tokens": ins[0], "h_fwd": ins[1], "h_bwd": ins[2]},
                     {"h_fwd": outs[0], "h_bwd": outs[1]})
    return fb.pack(m)


def read_step_flatbuffer(model: fb.ModelLike) -> GruParams:
    """The spec's constants read back from a step ``.tflite`` (checks op, version and shapes)."""
    m = fb.load(model)
    sg = m.subgraphs[0]
    ops = list(sg.operators or [])
    if len(ops) != 1 or fb.builtin(m, ops[0]) != OP_NAME:
        raise ValueError(f"not a {OP_NAME} step model: operators {[fb.builtin(m, o) for o in ops]}")
    op = ops[0]
    raw = b"" if op.customOptions is None else np.asarray(op.customOptions, np.uint8).tobytes()
    version = struct.unpack("<i", raw[:4])[0] if len(raw) >= 4 else 0
    if version not in (1, 2, GRU_SPEC_VERSION):
        raise ValueError(f"{OP_NAME} spec version {version}, this code implements {GRU_SPEC_VERSION} "
                         "(and reads 1 and 2)")
    fmt = OPTIONS_FORMAT_V1 if version == 1 else OPTIONS_FORMAT
    if len(raw) != struct.calcsize(fmt):
        raise ValueError(f"{OP_NAME}: custom_options of {len(raw)} bytes")
    _, E, U, ru, shift, *rest = struct.unpack(fmt, raw)
    bits = rest[0] if rest else 8
    if bits not in EMBEDDING_BITS:
        raise ValueError(f"{OP_NAME}: embedding bits {bits}")
    names = const_names(bits)
    if len(op.inputs) != 3 + len(names) or len(op.outputs) != 2:
        raise ValueError(f"{OP_NAME}: {len(op.inputs)} inputs, {len(op.outputs)} outputs")
    for i in [*op.inputs[1:3], *op.outputs]:
        t = sg.tensors[i]
        if list(t.shape) != [1, U] or fb.per_tensor(t) != (STATE_SCALE, 0):
            raise ValueError(f"{OP_NAME}: state tensor {fb.name(t.name)!r} is not [1, {U}] at 1/128")
    dtypes = {"emb": np.int8 if bits == 8 else np.uint8, "wx": np.int8, "wh": np.int8,
              "gates": np.int32, "sig": np.uint8, "tanh": np.int8,
              "mult": np.int16 if version == 2 else np.uint8}
    consts = {k: fb.tensor_data(m, sg.tensors[i], dtypes[k])
              for k, i in zip(names, op.inputs[3:], strict=True)}
    nb = -(-U // ru)
    want = {"wx": (2, nb, E, 3 * ru), "wh": (2, nb, U, 3 * ru), "gates": (2, 4, 3 * nb * ru)}
    for k, shape in want.items():
        if consts[k].shape != shape:
            raise ValueError(f"{OP_NAME}: {k} has shape {consts[k].shape}, expected {shape}")
    p = unpack(consts, U, ru, shift)
    p.emb_scale, p.emb_zero_point = fb.per_tensor(sg.tensors[op.inputs[3]])
    check(p)
    return p
