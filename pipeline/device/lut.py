"""int8 activation lookup tables: a flatbuffer rewrite of LOGISTIC and TANH into CAST + ADD + GATHER.

TFLM's reference int8 LOGISTIC and TANH evaluate a fixed-point exponential per element (about
50 ns each on this host, measured once), and the one-token GRU step has 4 x 32 sigmoids and
2 x 32 tanh per token. An int8 input takes only 256 values, so the function is a 256-entry table:

    index = ADD(CAST(x), 128)    # int8 -> int32 q + 128 in [0, 255]
    y     = GATHER(table, index) # table[q + 128] = quantize_out(f(dequantize_in(q)))

All three are plain builtins that both TFLM and ``tf.lite`` run (a QUANTIZE int8 -> int32 would do
the first line in one op, but ``tf.lite`` rejects it). The model stays full-integer (the index is
an int32 tensor like the token ids); each table entry is the correctly rounded value of ``f`` at
that input, where the fixed-point kernel is within a step of it. Tables with the same quantization
are shared. Nothing else in the graph changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.device import flatbuf as fb

LUT_SIZE = 256
_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "LOGISTIC": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "TANH": np.tanh,
}


def activation_table(fn: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """The int8 table ``t[q + 128] = round(f(in_scale * (q - in_zp)) / out_scale) + out_zp``."""
    q = np.arange(-128, 128, dtype=np.float64)
    y = _FUNCS[fn](in_scale * (q - in_zp))
    out = np.floor(y / out_scale + 0.5) + out_zp
    return np.clip(out, -128, 127).astype(np.int8)


def lut_activations(model) -> int:
    """Replace every int8 LOGISTIC / TANH of a ``ModelT`` with CAST + ADD + GATHER on a table.

    Changes ``model`` (a :func:`pipeline.device.flatbuf.load` result) in place and returns the
    number of operators replaced. Tensor indices of the graph's inputs and outputs do not change.
    """
    s = fb.schema()
    ops, types = s.BuiltinOperator, s.TensorType
    replaced = 0
    for sg in model.subgraphs:
        tables: dict[tuple, int] = {}
        offset: int | None = None
        new_ops = []
        for op in sg.operators or []:
            fn = fb.builtin(model, op)
            if fn not in _FUNCS:
                new_ops.append(op)
                continue
            src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
            if src.type != types.INT8 or dst.type != types.INT8:
                new_ops.append(op)
                continue
            key = (fn, *fb.per_tensor(src), *fb.per_tensor(dst))
            if key not in tables:
                tables[key] = fb.add_constant(model, sg, fb.name(dst.name) + b"/lut",
                                              activation_table(*key), types.INT8, quant=key[3:])
            if offset is None:
                offset = fb.add_constant(model, sg, b"lut_offset", np.array(128, "<i4"), types.INT32)
            shape = [int(d) for d in src.shape]
            cast = fb.add_tensor(model, sg, fb.name(src.name) + b"/lut_cast", shape, types.INT32)
            index = fb.add_tensor(model, sg, fb.name(src.name) + b"/lut_index", shape, types.INT32)
            new_ops += [
                fb.make_op(model, ops.CAST, [op.inputs[0]], [cast]),
                fb.make_op(model, ops.ADD, [cast, offset], [index], s.AddOptionsT()),
                fb.make_op(model, ops.GATHER, [tables[key], index], [op.outputs[0]],
                           s.GatherOptionsT()),
            ]
            replaced += 1
        sg.operators = new_ops
    return replaced
