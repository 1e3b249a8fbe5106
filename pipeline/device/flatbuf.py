"""The project's one flatbuffer toolkit for ``.tflite`` files: read, inspect, patch, write.

Everything goes through the flatbuffer *object API* of the TFLite schema (``ModelT`` and friends,
generated Python shipped with ``tflite-micro``): :func:`load` unpacks a model, the inspection
helpers read a ``ModelT`` (or bytes, unpacked on the fly), the patch helpers change a ``ModelT``
in place, and :func:`pack` writes it back with every buffer 16-byte aligned, as the converter
does. No TensorFlow: conversion, lookup tables, the firmware export and the runtimes share it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ModelLike = Any  # bytes of a .tflite file, or an unpacked ModelT


def schema():
    """The TFLite flatbuffer schema module (generated Python, shipped with ``tflite-micro``)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def op_names() -> dict[int, str]:
    """Builtin operator code -> name (``FULLY_CONNECTED``, ...)."""
    return _names(schema().BuiltinOperator)


def type_names() -> dict[int, str]:
    """Tensor type code -> name (``INT8``, ...)."""
    return _names(schema().TensorType)


def load(model: ModelLike):
    """A ``ModelT`` for ``.tflite`` bytes (a ``ModelT`` is returned as it is)."""
    if isinstance(model, bytes | bytearray | memoryview):
        return schema().ModelT.InitFromPackedBuf(bytearray(model), 0)
    return model


def pack(model) -> bytes:
    """Serialize a ``ModelT`` with every buffer's data 16-byte aligned (as the converter does).

    The object API's own ``BufferT.Pack`` aligns byte vectors to 1, which would leave int32 biases
    misaligned for TFLM on a device.
    """
    import flatbuffers

    s = schema()

    class _AlignedBuffer(s.BufferT):
        def Pack(self, builder):  # noqa: N802 - flatbuffers' method name
            if self.data is None or len(self.data) == 0:
                return super().Pack(builder)
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
            s.BufferStart(builder)
            s.BufferAddData(builder, data)
            s.BufferAddOffset(builder, self.offset)
            s.BufferAddSize(builder, self.size)
            return s.BufferEnd(builder)

    buffers = model.buffers
    model.buffers = []
    for b in buffers:
        aligned = _AlignedBuffer()
        aligned.data, aligned.offset, aligned.size = b.data, b.offset, b.size
        model.buffers.append(aligned)
    try:
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
    finally:
        model.buffers = buffers


def name(x) -> bytes:
    """A tensor's name as bytes (the object API gives bytes or None)."""
    return x if isinstance(x, bytes) else (x or "").encode()


def builtin(model, op) -> str:
    """Name of operator ``op``: its builtin code's (``max`` of the new and the deprecated field), or
    for a custom operator its custom code (``TINYSENT_BIGRU``)."""
    code = model.operatorCodes[op.opcodeIndex]
    b = max(code.builtinCode, code.deprecatedBuiltinCode)
    if b == schema().BuiltinOperator.CUSTOM and code.customCode:
        return name(code.customCode).decode()
    return op_names().get(b, str(b))


def is_custom(model: ModelLike, op_name: str) -> bool:
    """Whether ``op_name`` (as :func:`builtin` names it) is a custom operator of ``model``."""
    m = load(model)
    return any(max(c.builtinCode, c.deprecatedBuiltinCode) == schema().BuiltinOperator.CUSTOM
               and name(c.customCode).decode() == op_name for c in m.operatorCodes or [])


# ----------------------------------------------------------------------------- inspection


def io_map(model: ModelLike) -> dict[str, dict[str, int]]:
    """Signature names -> positions in the flatbuffer's input / output lists (not signature order)."""
    m = load(model)
    sig, sg = m.signatureDefs[0], m.subgraphs[0]
    ins, outs = [int(i) for i in sg.inputs], [int(i) for i in sg.outputs]
    return {"inputs": {name(t.name).decode(): ins.index(t.tensorIndex) for t in sig.inputs},
            "outputs": {name(t.name).decode(): outs.index(t.tensorIndex) for t in sig.outputs}}


def io_tensor(model: ModelLike, kind: str, pos: int):
    """``TensorT`` of input (``kind="inputs"``) or output ``pos`` of the first subgraph."""
    sg = load(model).subgraphs[0]
    return sg.tensors[int((sg.inputs if kind == "inputs" else sg.outputs)[pos])]


def io_shape(model: ModelLike, kind: str, pos: int) -> list[int]:
    return [int(d) for d in io_tensor(model, kind, pos).shape]


def per_tensor(t) -> tuple[float, int]:
    """``(scale, zero_point)`` of a per-tensor quantized ``TensorT``."""
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        raise ValueError(f"tensor {name(t.name).decode()!r} is not per-tensor quantized")
    return float(q.scale[0]), int(q.zeroPoint[0])


def tensor_quant(model: ModelLike, kind: str, pos: int) -> dict[str, Any]:
    """``{"scale", "zero_point", "dtype"}`` of input/output ``pos`` (``kind``: inputs|outputs)."""
    t = io_tensor(model, kind, pos)
    q = t.quantization
    has = q is not None and q.scale is not None and len(q.scale) > 0
    return {"scale": float(q.scale[0]) if has else 0.0,
            "zero_point": int(q.zeroPoint[0]) if has else 0,
            "dtype": type_names()[t.type]}


def op_report(model: ModelLike) -> list[dict[str, Any]]:
    """Every operator with the types of its input and output tensors (``-1`` inputs omitted)."""
    m = load(model)
    types = type_names()
    out = []
    for sg in m.subgraphs:
        for op in sg.operators or []:
            ins, outs = ([types[sg.tensors[j].type] for j in ix if j >= 0]
                         for ix in (op.inputs, op.outputs))
            out.append({"op": builtin(m, op), "inputs": ins, "outputs": outs})
    return out


def op_set(model: ModelLike) -> list[str]:
    """The distinct operator names of a model, sorted."""
    return sorted({o["op"] for o in op_report(model)})


def float_ops(model: ModelLike) -> list[str]:
    """Operators touching a non-integer tensor (empty for a full-integer model)."""
    integer = {"INT8", "UINT8", "INT16", "INT32", "INT64"}
    return [o["op"] for o in op_report(model) if not set(o["inputs"] + o["outputs"]) <= integer]


def tensor_data(model, t, dtype) -> np.ndarray:
    """A constant ``TensorT``'s data as a NumPy array of ``dtype`` in the tensor's shape (a copy)."""
    data = model.buffers[t.buffer].data
    if data is None or len(data) == 0:
        raise ValueError(f"tensor {name(t.name).decode()!r} has no constant data")
    raw = np.asarray(data, np.uint8).tobytes()
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(list(t.shape))


def count_macs(model: ModelLike) -> int:
    """Multiply-accumulates of one invoke: the FULLY_CONNECTED weight sizes (batch 1)."""
    m = load(model)
    sg = m.subgraphs[0]
    return sum(int(np.prod(sg.tensors[op.inputs[1]].shape)) for op in sg.operators
               if builtin(m, op) == "FULLY_CONNECTED")


# ----------------------------------------------------------------------------- patching


def copy_quant(model, src_input: int, dst_output: int) -> None:
    """Give output ``dst_output`` the scale and zero point of input ``src_input`` (in place).

    The output is produced by an op that derives its requantization from the tensor at Prepare
    time (ADD here), so nothing else in the model depends on the old values.
    """
    src, dst = io_tensor(model, "inputs", src_input), io_tensor(model, "outputs", dst_output)
    for t in (src, dst):
        per_tensor(t)  # raises unless per-tensor
        if len(t.quantization.zeroPoint) != 1:
            raise ValueError("expected per-tensor quantization on the state tensors")
    dst.quantization.scale = list(src.quantization.scale)
    dst.quantization.zeroPoint = list(src.quantization.zeroPoint)


FC_SCALE_BITS = 12  # significant bits of FULLY_CONNECTED input and filter scales (exact_fc_scales)


def _short_mantissa(x: float, bits: int) -> float:
    """``x`` rounded to ``bits`` significant bits (a float32 value)."""
    m, e = np.frexp(np.float64(x))
    return float(np.float32(np.ldexp(np.round(m * (1 << bits)) / (1 << bits), e)))


def exact_fc_scales(model: ModelLike, bits: int = FC_SCALE_BITS) -> bytes:
    """The model with every int8 FULLY_CONNECTED's input and filter scales rounded to ``bits``
    significant bits and its bias scales set to their product, which is then exact in float32.

    TFLM versions derive the output multiplier differently: esp-tflite-micro 1.3.7 multiplies
    the input and filter scales in float32 and widens the product, the Python interpreter
    multiplies in double. The two multipliers differ in their last bits, which flips the
    double-rounded output of an accumulator that lands next to a half (seen: 1 review in 28,564).
    With an exact product every version computes the same multiplier. The quantized weights and
    biases are kept: the scales move by less than ``2**-bits`` of themselves.
    """
    m = load(model)
    for sg in m.subgraphs:
        for op in sg.operators or []:
            if builtin(m, op) != "FULLY_CONNECTED":
                continue
            x, w = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
            b = sg.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            for t in (x, w, b):
                if t is not None and (t.quantization is None or t.quantization.scale is None):
                    raise ValueError("FULLY_CONNECTED tensor without quantization scales")
            x.quantization.scale = [_short_mantissa(x.quantization.scale[0], bits)]
            w.quantization.scale = [_short_mantissa(v, bits) for v in w.quantization.scale]
            if b is not None:
                b.quantization.scale = [float(np.float32(x.quantization.scale[0] * v))
                                        for v in w.quantization.scale]
    return pack(m)


def code_index(model, op: int) -> int:
    """Index of builtin operator ``op`` in the model's operator codes (added when missing)."""
    s = schema()
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == op:
            return i
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = op, min(op, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def add_tensor(model, sg, tensor_name: bytes, shape: list[int], dtype: int, buffer: int = 0,
               quant: tuple[float, int] | None = None) -> int:
    """Append a tensor to subgraph ``sg``; returns its index."""
    s = schema()
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = tensor_name, shape, dtype, buffer
    if quant is not None:
        t.quantization = s.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [quant[0]], [quant[1]]
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def add_constant(model, sg, tensor_name: bytes, data: np.ndarray, dtype: int,
                 quant: tuple[float, int] | None = None) -> int:
    """Append a constant tensor (with its own buffer) to ``sg``; returns its index."""
    buf = schema().BufferT()
    buf.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    model.buffers.append(buf)
    return add_tensor(model, sg, tensor_name, list(data.shape), dtype, len(model.buffers) - 1, quant)


def custom_code_index(model, custom_code: str) -> int:
    """Index of custom operator ``custom_code`` in the model's operator codes (added when missing)."""
    s = schema()
    for i, c in enumerate(model.operatorCodes):
        if c.builtinCode == s.BuiltinOperator.CUSTOM and name(c.customCode).decode() == custom_code:
            return i
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode, code.version = custom_code.encode(), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def make_custom_op(model, custom_code: str, inputs: list[int], outputs: list[int],
                   custom_options: bytes = b""):
    """A new ``OperatorT`` for custom operator ``custom_code`` with raw ``custom_options`` bytes.

    TFLM hands the bytes to the kernel's ``init`` as they are; the format field keeps its only
    value (``FLEXBUFFERS``), which nothing here or in TFLM interprets for a custom operator.
    """
    o = schema().OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = custom_code_index(model, custom_code), inputs, outputs
    o.customOptions = list(custom_options)
    o.customOptionsFormat = 0
    return o


def new_model(description: str):
    """An empty schema-v3 ``ModelT`` with one subgraph and the empty buffer 0: ``(model, subgraph)``."""
    s = schema()
    m, sg = s.ModelT(), s.SubGraphT()
    m.version, m.description = 3, description.encode()
    m.operatorCodes, m.buffers, m.subgraphs, m.signatureDefs = [], [s.BufferT()], [sg], []
    sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = [], [], [], [], b"main"
    return m, sg


def set_signature(model, inputs: dict[str, int], outputs: dict[str, int],
                  key: str = "serving_default") -> None:
    """Give subgraph 0 one signature: names -> tensor indices (read back by :func:`io_map`)."""
    s = schema()

    def tensor_maps(d: dict[str, int]) -> list:
        out = []
        for n, i in d.items():
            t = s.TensorMapT()
            t.name, t.tensorIndex = n.encode(), i
            out.append(t)
        return out

    sig = s.SignatureDefT()
    sig.inputs, sig.outputs = tensor_maps(inputs), tensor_maps(outputs)
    sig.signatureKey, sig.subgraphIndex = key.encode(), 0
    model.signatureDefs = [sig]


def make_op(model, op: int, inputs: list[int], outputs: list[int], options=None):
    """A new ``OperatorT`` for builtin ``op`` (``options``: e.g. ``AddOptionsT()``)."""
    s = schema()
    o = s.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = code_index(model, op), inputs, outputs
    if options is not None:
        o.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])
        o.builtinOptions = options
    return o
