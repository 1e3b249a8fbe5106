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

LUT_SIZE = 256
_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "LOGISTIC": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "TANH": np.tanh,
}


def tflite_schema():
    """The TFLite flatbuffer schema module (generated Python, shipped with ``tflite-micro``)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def activation_table(fn: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """The int8 table ``t[q + 128] = round(f(in_scale * (q - in_zp)) / out_scale) + out_zp``."""
    q = np.arange(-128, 128, dtype=np.float64)
    y = _FUNCS[fn](in_scale * (q - in_zp))
    out = np.floor(y / out_scale + 0.5) + out_zp
    return np.clip(out, -128, 127).astype(np.int8)


def _name(x) -> bytes:
    return x if isinstance(x, bytes) else (x or "").encode()


def _per_tensor(t) -> tuple[float, int]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        raise ValueError(f"tensor {_name(t.name).decode()!r} is not per-tensor quantized")
    return float(q.scale[0]), int(q.zeroPoint[0])


def _pack_aligned(model) -> bytes:
    """Serialize a ``ModelT`` with every buffer's data 16-byte aligned (as the converter does).

    The object API's own ``BufferT.Pack`` aligns byte vectors to 1, which would leave int32 biases
    misaligned for TFLM on a device.
    """
    import flatbuffers

    schema = tflite_schema()

    class _AlignedBuffer(schema.BufferT):
        def Pack(self, builder):  # noqa: N802 - flatbuffers' method name
            if self.data is None or len(self.data) == 0:
                return super().Pack(builder)
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
            schema.BufferStart(builder)
            schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    for i, b in enumerate(model.buffers):
        aligned = _AlignedBuffer()
        aligned.data, aligned.offset, aligned.size = b.data, b.offset, b.size
        model.buffers[i] = aligned
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def lut_activations(model_bytes: bytes) -> tuple[bytes, int]:
    """Replace every int8 LOGISTIC / TANH with CAST + ADD + GATHER on a table.

    Returns ``(model bytes, number of operators replaced)``; the model is returned unchanged when
    there is nothing to replace. Tensor indices of the graph's inputs and outputs do not change.
    """
    schema = tflite_schema()
    ops, types = schema.BuiltinOperator, schema.TensorType
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    names = {v: k for k, v in vars(ops).items() if not k.startswith("_")}

    def code_index(builtin: int) -> int:
        for i, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
                return i
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def constant(sg, name: bytes, data: np.ndarray, dtype: int, quant=None) -> int:
        buf = schema.BufferT()
        buf.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        model.buffers.append(buf)
        return tensor(sg, name, list(data.shape), dtype, len(model.buffers) - 1, quant)

    def tensor(sg, name: bytes, shape: list[int], dtype: int, buffer: int = 0, quant=None) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, dtype, buffer
        if quant is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [quant[0]], [quant[1]]
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def operator(builtin: int, inputs: list[int], outputs: list[int], options=None):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = code_index(builtin), inputs, outputs
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        return op

    replaced = 0
    for sg in model.subgraphs:
        tables: dict[tuple, int] = {}
        offset: int | None = None
        new_ops = []
        for op in sg.operators or []:
            c = model.operatorCodes[op.opcodeIndex]
            fn = names.get(max(c.builtinCode, c.deprecatedBuiltinCode))
            if fn not in _FUNCS:
                new_ops.append(op)
                continue
            src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
            if src.type != types.INT8 or dst.type != types.INT8:
                new_ops.append(op)
                continue
            key = (fn, *_per_tensor(src), *_per_tensor(dst))
            if key not in tables:
                tables[key] = constant(sg, _name(dst.name) + b"/lut", activation_table(*key),
                                       types.INT8, quant=key[3:])
            if offset is None:
                offset = constant(sg, b"lut_offset", np.array(128, "<i4"), types.INT32)
            shape = [int(d) for d in src.shape]
            cast = tensor(sg, _name(src.name) + b"/lut_cast", shape, types.INT32)
            index = tensor(sg, _name(src.name) + b"/lut_index", shape, types.INT32)
            new_ops += [
                operator(ops.CAST, [op.inputs[0]], [cast]),
                operator(ops.ADD, [cast, offset], [index], schema.AddOptionsT()),
                operator(ops.GATHER, [tables[key], index], [op.outputs[0]], schema.GatherOptionsT()),
            ]
            replaced += 1
        sg.operators = new_ops
    if not replaced:
        return model_bytes, 0
    return _pack_aligned(model), replaced
