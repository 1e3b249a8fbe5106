"""Firmware sources of an int8 release: model arrays, constants, op resolver, tokenizer tables.

``export_firmware(MODEL_DIR, OUT)`` writes everything model-specific of the PlatformIO project rooted
at ``OUT`` into ``OUT/src`` from a full-int8 release folder (``step.tflite``, ``head.tflite``,
``quant.json``, the tokenizer; see :mod:`pipeline.device.release`):

* ``model_data.c``: both models as 16-byte-aligned ``const unsigned char`` arrays (flash), byte for
  byte the ``.tflite`` files (declared in the hand-written ``model_data.h``);
* ``model_config.h``: what the device step loop needs: units, vocabulary, token limit, the tensor
  position of every input/output, the state / pooled / prob scale and zero point, ``m_fwd`` /
  ``m_bwd``, the tensor arena (measured minimum, :func:`arena_minimum`, + :func:`arena_with_margin`)
  and flash figures;
* ``op_resolver.h`` / ``op_resolver.cc``: a ``tflite::MicroMutableOpResolver<N>`` registering
  exactly the operators found in the two flatbuffers (so it cannot drift from the model); a custom
  operator (the ``TINYSENT_BIGRU`` step, :mod:`pipeline.device.gru`) with ``AddCustom`` and its
  hand-written registration (``firmware/src/gru_op.cc``, kernel ``gru_step.c``);
* ``tokenizer_tables.c`` of the release folder's tokenizer (:mod:`pipeline.text.ctables`).

Every generated file starts with a comment naming the command and the input files (with sha256).
No TensorFlow.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.device import flatbuf
from pipeline.device.release import load_release
from pipeline.text.ctables import (
    TABLES_C,
    ExportError,
    c_wrap,
    display_path,
    file_sha256,
    write_tokenizer_tables,
)
from pipeline.text.tokenizer import Tokenizer

MODEL_DATA_C, MODEL_CONFIG_H = "model_data.c", "model_config.h"
OP_RESOLVER_H, OP_RESOLVER_CC = "op_resolver.h", "op_resolver.cc"
FIRMWARE_FILES = (MODEL_DATA_C, MODEL_CONFIG_H, OP_RESOLVER_H, OP_RESOLVER_CC, TABLES_C)
STEP_ARRAY, HEAD_ARRAY = "sent_step_model", "sent_head_model"
ARENA_MARGIN_FRACTION, ARENA_MARGIN_MIN = 0.10, 1024
GENERATED_MARK = "GENERATED FILE - DO NOT EDIT"

# tflite::MicroMutableOpResolver method for each builtin operator (tflite-micro's
# micro_mutable_op_resolver.h). An operator missing here stops the export with an ExportError
# rather than writing a resolver that does not compile.
_RESOLVER_METHODS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin",
    "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt", "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum",
    "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}


# custom operator -> (header declaring its registration, the call returning it), in firmware/src
CUSTOM_OPS = {"TINYSENT_BIGRU": ("gru_op.h", "tinysent_register_bigru()")}


def resolver_call(op: str) -> str:
    """The ``MicroMutableOpResolver`` call registering ``op``: ``AddConv2D()`` or, for a custom
    operator, ``AddCustom("NAME", registration())``."""
    if op in CUSTOM_OPS:
        return f'AddCustom("{op}", {CUSTOM_OPS[op][1]})'
    return f"{resolver_method(op)}()"


def resolver_method(op: str) -> str:
    """``MicroMutableOpResolver`` method registering builtin operator ``op`` (e.g. ``AddConv2D``)."""
    try:
        return _RESOLVER_METHODS[op]
    except KeyError:
        raise ExportError(f"operator {op} has no MicroMutableOpResolver method known to "
                          "pipeline.device.firmware (_RESOLVER_METHODS)") from None


ARENA_BAR = 16 * 1024  # the project's bar for both arenas together


def arena_minimum(meta_model: dict) -> tuple[int, str]:
    """The arena minimum a model's device arena is sized from, and where it was measured.

    ``arena_bytes_32bit``: bisection on the riscv32 build of the firmware itself
    (:func:`pipeline.device.bench.arena_minimum`, the board's 32-bit layout), when the release
    has it; otherwise ``arena_bytes``, the 64-bit host minimum of the TFLM Python interpreter
    (larger: pointer-sized bookkeeping).
    """
    if meta_model.get("arena_bytes_32bit"):
        return int(meta_model["arena_bytes_32bit"]), "32-bit firmware build (riscv32)"
    return int(meta_model["arena_bytes"]), "64-bit host TFLM interpreter"


def arena_with_margin(measured: int) -> int:
    """Device tensor arena for a measured minimum: ``+max(10 %, 1 KB)``, rounded up to 16 B.

    The margin covers what the measurement cannot see: TFLM versions differ, and the chips'
    optimized kernels (esp-nn on the ESP32-S3) may ask for scratch buffers the ANSI C ones do not.
    ``info`` on the device prints the bytes really used (less than the minimum: never size the
    arena from it).
    """
    total = measured + max(ARENA_MARGIN_MIN, math.ceil(measured * ARENA_MARGIN_FRACTION))
    return -(-total // 16) * 16


def _c_bytes(data: bytes, per_line: int = 16) -> str:
    """Array initializer lines of ``0x..`` bytes."""
    return "\n".join("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + ","
                     for i in range(0, len(data), per_line))


def parse_c_array(text: str, name: str) -> bytes:
    """The bytes of the ``unsigned char`` array ``name`` in C source ``text`` (written by us)."""
    m = re.search(r"\b" + re.escape(name) + r"\s*\[\s*\]\s*=\s*\{(.*?)\};", text, re.S)
    if m is None:
        raise ExportError(f"no array {name} in the C source")
    return bytes(int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", m.group(1)))


def _c_float(x: float) -> str:
    """A float32 value as an exact C hex literal (``0x1.8p-1f``), decimal in a comment."""
    f = struct.unpack("<f", struct.pack("<f", x))[0]
    return f"{f.hex()}f /* {f!r} */"


def _c_int(v: int) -> str:
    return f"({v})" if v < 0 else str(v)


def _generated_comment(command: str, sources: Sequence[Path], extra: Sequence[str] = ()) -> str:
    lines = [f"{GENERATED_MARK}. Regenerate with:", f"    {command}", "from:"]
    lines += [f"    {display_path(p)} (sha256 {file_sha256(p)})" for p in sources]
    lines += list(extra)
    return "/* " + "\n * ".join(lines) + "\n */\n"


def _check_release(converted: dict, tok: Tokenizer, model_dir: Path) -> None:
    """Refuse a release folder whose files do not fit the device loop (shapes, types, quant.json)."""
    meta, q, units = converted["meta"], converted["meta"]["quant"], converted["meta"]["units"]
    problems = []
    if meta["vocab_size"] != tok.vocab_size:
        problems.append(f"model vocabulary {meta['vocab_size']} != tokenizer's {tok.vocab_size}")
    expect = {
        ("step", "inputs", "tokens"): ("INT32", [1, 2]),
        ("step", "inputs", "h_fwd"): ("INT8", [1, units]),
        ("step", "inputs", "h_bwd"): ("INT8", [1, units]),
        ("step", "outputs", "h_fwd"): ("INT8", [1, units]),
        ("step", "outputs", "h_bwd"): ("INT8", [1, units]),
        ("head", "inputs", "pooled"): ("INT8", [1, 2 * units]),
        ("head", "outputs", "prob"): ("INT8", [1, 1]),
    }
    for (model, kind, name), (dtype, shape) in expect.items():
        pos = meta[model][kind][name]
        got = flatbuf.tensor_quant(converted[model], kind, pos)
        got_shape = flatbuf.io_shape(converted[model], kind, pos)
        if got["dtype"] != dtype or got_shape != shape:
            problems.append(f"{model} {kind[:-1]} {name}: {got['dtype']} {got_shape}, "
                            f"expected {dtype} {shape}")
        elif dtype == "INT8":
            if (got["scale"], got["zero_point"]) != (q[name]["scale"], q[name]["zero_point"]):
                problems.append(f"{model} {name}: quantization differs from quant.json")
    for name in ("step", "head"):
        if bad := flatbuf.float_ops(converted[name]):
            problems.append(f"{name} model has float operators {bad}")
    if problems:
        raise ExportError(f"{model_dir}: not a device release: " + "; ".join(problems))


def export_firmware(model_dir: Path, out_dir: Path) -> dict:
    """Stage: write the model-specific firmware sources of ``model_dir`` into ``out_dir/src``.

    ``model_dir`` is a full-int8 release folder; ``out_dir`` the PlatformIO project root
    (``firmware/``). Returns the flash sizes in bytes: ``step_model``, ``head_model``,
    ``model_arrays`` (both), ``tokenizer_tables``, ``total`` (arrays + tables) and the device
    ``arena`` (allocated at start-up).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    try:
        converted = load_release(model_dir)
        tok = Tokenizer.load(model_dir)
        _check_release(converted, tok, model_dir)
    except (KeyError, ValueError) as e:
        if isinstance(e, ExportError):
            raise
        raise ExportError(f"{model_dir}: not an int8 release folder ({e!r})") from e
    ops = {name: flatbuf.op_set(converted[name]) for name in ("step", "head")}
    all_ops = sorted(set(ops["step"]) | set(ops["head"]))
    methods = [(op, resolver_call(op)) for op in all_ops]  # refuses unknown operators first
    # everything is written to a scratch folder first: a failure leaves out_dir/src untouched
    with tempfile.TemporaryDirectory() as tmp:
        sizes = _write_firmware(model_dir, out_dir, Path(tmp), converted, tok, ops, methods)
        src = out_dir / "src"
        src.mkdir(parents=True, exist_ok=True)
        for name in FIRMWARE_FILES:
            shutil.move(str(Path(tmp) / name), str(src / name))
    return sizes


def _write_firmware(model_dir: Path, out_dir: Path, src: Path, converted: dict, tok: Tokenizer,
                    ops: dict[str, list[str]], methods: list[tuple[str, str]]) -> dict:
    """export_firmware's files into ``src`` (a scratch folder); returns the sizes."""
    meta, q = converted["meta"], converted["meta"]["quant"]
    step_file, head_file = model_dir / meta["step"]["file"], model_dir / meta["head"]["file"]
    quant_file = model_dir / "quant.json"
    tok_files = [model_dir / Tokenizer.MODEL_FILE, model_dir / Tokenizer.CONFIG_FILE]
    command = f"python -m pipeline.export firmware {display_path(model_dir)} --out {display_path(out_dir)}"
    tables = write_tokenizer_tables(model_dir, src, note=f"Written by: {command}")
    text = (src / TABLES_C).read_text()  # name the real output folder, not the scratch one
    (src / TABLES_C).write_text(text.replace(f"--out {display_path(src)}\n",
                                             f"--out {display_path(out_dir / 'src')}\n", 1))

    step, head = converted["step"], converted["head"]
    (src / MODEL_DATA_C).write_text(
        _generated_comment(command, [step_file, head_file],
                           ["Both arrays are byte for byte these files; layout: model_data.h."])
        + f"""#include "model_data.h"

SENT_MODEL_ALIGN const unsigned char {STEP_ARRAY}[] = {{
{_c_bytes(step)}
}};
const unsigned int {STEP_ARRAY}_len = {len(step)}u;

SENT_MODEL_ALIGN const unsigned char {HEAD_ARRAY}[] = {{
{_c_bytes(head)}
}};
const unsigned int {HEAD_ARRAY}_len = {len(head)}u;
""" + _id_map_c(meta))

    all_ops = [op for op, _ in methods]
    used_by = {op: "+".join(n for n in ("step", "head") if op in ops[n]) for op in all_ops}
    ops_comment = [f"Operators of {n}: {' '.join(ops[n])}." for n in ("step", "head")]
    custom_includes = "".join(f'#include "{CUSTOM_OPS[op][0]}"\n' for op in all_ops if op in CUSTOM_OPS)
    (src / OP_RESOLVER_H).write_text(
        _generated_comment(command, [step_file, head_file], ops_comment)
        + f"""#ifndef OP_RESOLVER_H
#define OP_RESOLVER_H

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

/* One registration per distinct operator of the step and head models. */
constexpr unsigned int kSentOpCount = {len(methods)};
using SentOpResolver = tflite::MicroMutableOpResolver<kSentOpCount>;

/* Registers every operator both models use: kTfLiteOk, or the first failure. */
TfLiteStatus sent_register_ops(SentOpResolver &resolver);

#endif /* OP_RESOLVER_H */
""")
    adds = "\n".join(f"    if (resolver.{m} != kTfLiteOk) return kTfLiteError; /* {op} ({used_by[op]}) */"
                     for op, m in methods)
    (src / OP_RESOLVER_CC).write_text(
        _generated_comment(command, [step_file, head_file], ops_comment)
        + f"""#include "op_resolver.h"
{custom_includes}
TfLiteStatus sent_register_ops(SentOpResolver &resolver)
{{
{adds}
    return kTfLiteOk;
}}
""")

    measured = {n: arena_minimum(meta[n]) for n in ("step", "head")}
    arena = {n: arena_with_margin(measured[n][0]) for n in ("step", "head")}
    arena64 = {n: arena_with_margin(int(meta[n]["arena_bytes"])) for n in ("step", "head")}
    id_map_bytes = 2 * meta["vocab_size"] if meta.get("id_map") is not None else 0
    sizes = {"step_model": len(step), "head_model": len(head), "id_map": id_map_bytes,
             "model_arrays": len(step) + len(head) + id_map_bytes,
             "tokenizer_tables": tables["total"]}
    sizes["total"] = sizes["model_arrays"] + sizes["tokenizer_tables"]
    sizes["arena"] = arena["step"] + arena["head"]
    info_path = model_dir / "model.json"
    kind = json.loads(info_path.read_text()).get("kind", "int8") if info_path.exists() else "int8"
    sio, hio = meta["step"], meta["head"]
    defines = [
        ("model", None),
        ("SENT_MODEL_DESC", f'"{display_path(model_dir)}: {kind} BiGRU student, embed '
                            f'{meta["embed_dim"]}, units {meta["units"]}"'),
        ("SENT_STEP_SHA256", f'"{file_sha256(step_file)}"'),
        ("SENT_HEAD_SHA256", f'"{file_sha256(head_file)}"'),
        ("SENT_OPS", f'"{" ".join(all_ops)}"'),
        ("SENT_UNITS", str(meta["units"])),
        ("SENT_EMBED_DIM", str(meta["embed_dim"])),
        ("SENT_VOCAB_SIZE", str(meta["vocab_size"])),
        ("SENT_HAS_ID_MAP", f"{int(meta.get('id_map') is not None)} /* 1: ids go through "
                            "sent_id_map (pruned embedding rows dropped) */"),
        ("SENT_TABLE_ROWS", str(meta.get("table_rows", meta["vocab_size"]))),
        *_custom_step_defines(meta),
        ("tokenizer (tokenizer_tables.c holds the same values at run time)", None),
        ("SENT_MAX_TOKENS", f"{tok.cfg.seq_len} /* ids per review: Tokenizer.truncate */"),
        ("SENT_TRUNCATE_TAIL", f"{int(tok.cfg.truncate == 'tail')} /* 0: keep the first ids */"),
        ("tensor positions: interpreter->input(i) / output(i)", None),
        ("SENT_STEP_IN_TOKENS", str(sio["inputs"]["tokens"])),
        ("SENT_STEP_IN_H_FWD", str(sio["inputs"]["h_fwd"])),
        ("SENT_STEP_IN_H_BWD", str(sio["inputs"]["h_bwd"])),
        ("SENT_STEP_OUT_H_FWD", str(sio["outputs"]["h_fwd"])),
        ("SENT_STEP_OUT_H_BWD", str(sio["outputs"]["h_bwd"])),
        ("SENT_STEP_INPUTS", str(len(sio["inputs"]))),
        ("SENT_STEP_OUTPUTS", str(len(sio["outputs"]))),
        ("SENT_HEAD_IN_POOLED", str(hio["inputs"]["pooled"])),
        ("SENT_HEAD_OUT_PROB", str(hio["outputs"]["prob"])),
        ("SENT_HEAD_INPUTS", str(len(hio["inputs"]))),
        ("SENT_HEAD_OUTPUTS", str(len(hio["outputs"]))),
        ("quantization (real = scale * (q - zero_point)); states out = states in", None),
        ("SENT_H_FWD_ZERO_POINT", _c_int(q["h_fwd"]["zero_point"])),
        ("SENT_H_FWD_SCALE", _c_float(q["h_fwd"]["scale"])),
        ("SENT_H_BWD_ZERO_POINT", _c_int(q["h_bwd"]["zero_point"])),
        ("SENT_H_BWD_SCALE", _c_float(q["h_bwd"]["scale"])),
        ("SENT_POOLED_ZERO_POINT", _c_int(q["pooled"]["zero_point"])),
        ("SENT_POOLED_SCALE", _c_float(q["pooled"]["scale"])),
        ("SENT_PROB_ZERO_POINT", _c_int(q["prob"]["zero_point"])),
        ("SENT_PROB_SCALE", f"{float(q['prob']['scale']).hex()} /* {q['prob']['scale']!r}, double */"),
        ("SENT_M_FWD", _c_float(q["m_fwd"]) + " /* h_fwd scale / pooled scale */"),
        ("SENT_M_BWD", _c_float(q["m_bwd"]) + " /* h_bwd scale / pooled scale */"),
        (f"tensor arena: measured minimum (step: {measured['step'][1]}; head: "
         f"{measured['head'][1]}) + max({int(ARENA_MARGIN_FRACTION * 100)} %, "
         f"{ARENA_MARGIN_MIN} B), multiple of 16", None),
        ("SENT_STEP_ARENA_MEASURED", str(measured["step"][0])),
        ("SENT_HEAD_ARENA_MEASURED", str(measured["head"][0])),
        ("SENT_STEP_ARENA_BYTES_32BIT", str(arena["step"])),
        ("SENT_HEAD_ARENA_BYTES_32BIT", str(arena["head"])),
        ("a 64-bit host (the native build of this firmware, the TFLM Python interpreter) needs more: "
         "pointer-sized bookkeeping; its minimum (quant.json arena_bytes) + the same margin", None),
        ("SENT_STEP_ARENA_BYTES_64BIT", str(arena64["step"])),
        ("SENT_HEAD_ARENA_BYTES_64BIT", str(arena64["head"])),
        ("#if", "defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ > 4"),
        ("SENT_STEP_ARENA_BYTES", "SENT_STEP_ARENA_BYTES_64BIT"),
        ("SENT_HEAD_ARENA_BYTES", "SENT_HEAD_ARENA_BYTES_64BIT"),
        ("#else", ""),
        ("SENT_STEP_ARENA_BYTES", "SENT_STEP_ARENA_BYTES_32BIT"),
        ("SENT_HEAD_ARENA_BYTES", "SENT_HEAD_ARENA_BYTES_32BIT"),
        ("#endif", ""),
        ("SENT_ARENA_BYTES", "(SENT_STEP_ARENA_BYTES + SENT_HEAD_ARENA_BYTES)"),
        ("flash (bytes)", None),
        ("SENT_STEP_MODEL_BYTES", str(len(step))),
        ("SENT_HEAD_MODEL_BYTES", str(len(head))),
        ("SENT_ID_MAP_BYTES", str(id_map_bytes)),
        ("SENT_TOKENIZER_TABLE_BYTES", str(tables["total"])),
    ]
    body = "\n".join(f"\n/* {name} */" if value is None else
                     f"{name} {value}".rstrip() if name.startswith("#") else f"#define {name} {value}"
                     for name, value in defines)
    (src / MODEL_CONFIG_H).write_text(
        _generated_comment(command, [step_file, head_file, quant_file, *tok_files],
                           ["Constants of the device step loop; see pipeline/device/loop.py."])
        + f"""#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H
{body}

#endif /* MODEL_CONFIG_H */
""")
    return sizes


def _custom_step_defines(meta: dict) -> list[tuple[str, str | None]]:
    """``model_config.h`` lines of a custom-operator step (none for a builtin one)."""
    op = meta["step"].get("custom_op")
    if op is None:
        return []
    return [("SENT_STEP_CUSTOM_OP", f'"{op["name"]}" /* the step model is this one custom operator */'),
            ("SENT_GRU_SPEC_VERSION", f'{op["spec_version"]} /* gru_op.cc runs 1 to GRU_SPEC_VERSION */'),
            ("SENT_GRU_EMBEDDING_BITS", f'{op.get("embedding_bits", 8)} /* 8: int8, 4 or 2: packed */'),
            ("SENT_GRU_PACK_RU", f'{op["pack_ru"]} /* must equal gru_step.h GRU_RU */'),
            ("SENT_STEP_ARENA_ESTIMATED", f'{int(not meta["step"].get("arena_measured", True))} '
                                          "/* 1: the step arena is an estimate, not host-measured */")]


def _id_map_c(meta: dict) -> str:
    """``sent_id_map`` (token id -> row of the compacted embedding table), when the model has one."""
    if meta.get("id_map") is None:
        return ""
    values = meta["id_map"]
    if max(values) > 32767:
        raise ExportError("id_map rows do not fit int16")
    return (f"""
/* Token id -> row of the step model's embedding table: pruning emptied some rows, which
 * pipeline.device.step.compact_rows dropped (they all share one zero row). */
const int16_t sent_id_map[SENT_VOCAB_SIZE] = {{
{c_wrap([str(v) for v in values])}
}};
""")
