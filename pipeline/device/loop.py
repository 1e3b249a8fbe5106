"""The device loop: the int8 BiGRU student run token by token (a *step* model and a *head* model).

A Keras GRU converts either to a WHILE loop (its int8 calibration fails) or, unrolled, to megabytes,
so the recurrence runs in the caller (the ESP32 firmware, or :func:`step_loop_int8` here):

* ``step.tflite``: inputs ``tokens`` int32 ``[1, 2]`` (forward token ``ids[t]``, backward token
  ``ids[T-1-t]``), ``h_fwd`` and ``h_bwd`` int8 ``[1, U]``; outputs the new int8 states ``h_fwd``,
  ``h_bwd``. Since format 2 it is one custom operator, ``TINYSENT_BIGRU``: both GRU cell steps
  (Keras ``reset_after=True`` math) in the integer SPEC of :mod:`pipeline.device.gru`, states at
  scale 1/128, zero point 0 (``firmware/src/gru_step.c`` on the device, the NumPy spec on the host).
  Format 1 releases: one GATHER, then builtin FULLY_CONNECTED / ADD / MUL ... per direction, sigmoid
  and tanh as lookup tables (:mod:`pipeline.device.lut`). Either way each state output has *exactly*
  its input's scale and zero point, so the caller feeds the output bytes straight back.
* ``head.tflite``: input ``pooled`` int8 ``[1, 2U]`` (mean of the states over time) -> Dense ->
  sigmoid -> int8 ``prob``.
* ``quant.json``: the constants the loop needs (state / pooled / prob scale and zero point, the
  tensor index of every input and output in each model, arena sizes, MACs, the optional
  ``id_map`` of a compacted embedding table).

The device loop, for ``T`` token ids (right padding removed; when pruning emptied embedding rows,
``quant.json`` has an ``id_map`` and every id ``i`` becomes ``id_map[i]`` first, see
:func:`pipeline.device.step.compact_rows`)::

    hf[:] = zp_fwd; hb[:] = zp_bwd; sf[:] = 0; sb[:] = 0            # int8 states, int32 sums
    for t in 0..T-1:
        tokens = {ids[t], ids[T-1-t]}                                 # set EVERY input each step
        hf, hb = step(tokens, hf, hb); sf += hf; sb += hb
    pooled[j] = T ? clamp(floor(float(sf[j] - T*zp_fwd) * m_fwd / float(T) + 0.5f) + zp_pooled)
                  : zp_pooled                                          # likewise sb with m_bwd
    P(positive) = prob_scale * (head(pooled) - prob_zero_point)

with float32 ``m_fwd = fwd_scale / pooled_scale`` (``quant.json`` stores ``m_fwd``, ``m_bwd``).
Under Keras masking with right padding the backward GRU starts at the last real token, so the
backward state after step ``t`` is Keras' backward feature at position ``T-1-t``; the mean over time
only needs the sums, whose order does not matter.

The loop here is the reference the firmware's ``sent_run`` (``firmware/src/sentiment.c``) mirrors;
it needs NumPy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
HeadFn = Callable[[np.ndarray], Any]


def step_loop(step_fn: StepFn, head_fn: HeadFn, ids: Sequence[int], units: int) -> float:
    """Float reference loop: P(positive) for one review's ids (no padding), like the student.

    ``step_fn(tokens int32 [1,2], h_fwd [1,U], h_bwd [1,U]) -> (h_fwd, h_bwd)``;
    ``head_fn(pooled [1, 2U]) -> P``.
    """
    T = len(ids)
    hf = np.zeros((1, units), np.float32)
    hb = np.zeros((1, units), np.float32)
    sf = np.zeros((1, units), np.float64)
    sb = np.zeros((1, units), np.float64)
    for t in range(T):
        hf, hb = step_fn(np.array([[ids[t], ids[T - 1 - t]]], np.int32), hf, hb)
        sf += hf
        sb += hb
    pooled = np.concatenate([sf, sb], axis=1) / max(T, 1)
    return float(head_fn(pooled.astype(np.float32)))


def requantize_pooled(sums: np.ndarray, n: int, zero_points: np.ndarray, multipliers: np.ndarray,
                      out_zero_point: int) -> np.ndarray:
    """int32 state sums over ``n`` steps -> the head's int8 ``pooled`` input (float32 math as in C).

    ``pooled = clamp(floor(float(sum - n*zp) * m / float(n) + 0.5) + out_zp, -128, 127)``.
    """
    if n == 0:
        return np.full(sums.shape, out_zero_point, np.int8)
    centred = (sums.astype(np.int64) - n * zero_points.astype(np.int64)).astype(np.float32)
    x = centred * multipliers.astype(np.float32) / np.float32(n) + np.float32(0.5)
    return np.clip(np.floor(x).astype(np.int64) + out_zero_point, -128, 127).astype(np.int8)


def step_loop_int8(step_fn: StepFn, head_fn: HeadFn, ids: Sequence[int], meta: dict) -> float:
    """The int8 device loop (the module docstring's pseudo-code): P(positive) for one review.

    ``step_fn`` maps int32 tokens and int8 states to int8 states, ``head_fn`` int8 pooled ``[1, 2U]``
    to the int8 prob; ``meta`` is :func:`pipeline.device.convert.convert_int8`'s ``meta`` (``quant.json``).
    """
    q, units, T = meta["quant"], meta["units"], len(ids)
    if meta.get("id_map") is not None:  # pruned rows dropped from the table (compact_rows)
        ids = [meta["id_map"][i] for i in ids]
    hf = np.full((1, units), q["h_fwd"]["zero_point"], np.int8)
    hb = np.full((1, units), q["h_bwd"]["zero_point"], np.int8)
    tokens = np.empty((T, 1, 2), np.int32)
    tokens[:, 0, 0], tokens[:, 0, 1] = ids, ids[::-1]
    states = np.empty((T, 2, units), np.int8)  # summed once at the end: same int32 sums
    for t in range(T):
        hf, hb = step_fn(tokens[t], hf, hb)
        states[t, 0], states[t, 1] = hf[0], hb[0]
    return head_probability(states.sum(axis=0, dtype=np.int32), T, head_fn, meta)


def head_probability(sums: np.ndarray, n: int, head_fn: HeadFn, meta: dict) -> float:
    """The loop's end: the state sums ``[2, U]`` over ``n`` steps -> int8 pooled -> head ->
    P(positive) (``prob_scale * (head(pooled) - prob_zero_point)``)."""
    q, units = meta["quant"], meta["units"]
    zps = np.repeat([q["h_fwd"]["zero_point"], q["h_bwd"]["zero_point"]], units)
    mult = np.repeat(np.float32([q["m_fwd"], q["m_bwd"]]), units)
    pooled = requantize_pooled(np.asarray(sums).reshape(1, 2 * units), n, zps, mult,
                               q["pooled"]["zero_point"])
    out = int(np.asarray(head_fn(pooled)).reshape(-1)[0])
    return q["prob"]["scale"] * (out - q["prob"]["zero_point"])
