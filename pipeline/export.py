"""Export trained artifacts as C sources for the ESP32 firmware.

    python -m pipeline.export tokenizer TOKENIZER_DIR [--out firmware/src]
    python -m pipeline.export firmware MODEL_DIR [--out firmware]

``tokenizer`` writes ``tokenizer_tables.c`` (layout in ``firmware/src/tokenizer_tables.h``) for the
C tokenizer in ``firmware/src/tokenizer.c``: the normalization map, the vocabulary, merge ranks, a
hash of the pieces and the stopword list, all ``const`` so that they stay in flash.

``firmware`` writes everything model-specific of the PlatformIO project rooted at ``--out`` into
``OUT/src`` from a full-int8 release folder (``step.tflite``, ``head.tflite``, ``quant.json``, the
tokenizer; see ``pipeline.quantize.write_release``):

* ``model_data.c``: both models as 16-byte-aligned ``const unsigned char`` arrays (flash), byte for
  byte the ``.tflite`` files (declared in the hand-written ``model_data.h``);
* ``model_config.h``: what the device step loop needs: units, vocabulary, token limit, the tensor
  position of every input/output, the state / pooled / prob scale and zero point, ``m_fwd`` /
  ``m_bwd``, the tensor arena (host-measured minimum + :func:`arena_with_margin`) and flash figures;
* ``op_resolver.h`` / ``op_resolver.cc``: a ``tflite::MicroMutableOpResolver<N>`` registering
  exactly the operators found in the two flatbuffers (so it cannot drift from the model);
* ``tokenizer_tables.c`` of the release folder's tokenizer.

Every generated file starts with a comment naming the command and the input files (with sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.tokenizer import CHAR_MAP, NORMALIZATION_VERSION, STOPWORDS, Tokenizer

TABLES_C = "tokenizer_tables.c"
SPACE = "\u2581"  # SentencePiece's escaped space
NONE16 = 0xFFFF  # empty hash slot / no piece
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


class ExportError(ValueError):
    """The artifact uses a feature the C port does not implement."""


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, the hash the C tokenizer uses for piece look-up."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def _check_model(proto: Any, path: Path) -> None:
    """Refuse SentencePiece settings that tokenizer.c does not implement."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    ts, ns = proto.trainer_spec, proto.normalizer_spec
    problems = [
        why
        for bad, why in (
            (ts.model_type != pb.TrainerSpec.BPE, "model_type is not BPE"),
            (bool(ns.precompiled_charsmap), "normalization rule is not 'identity'"),
            (not ns.add_dummy_prefix, "add_dummy_prefix is off"),
            (ns.remove_extra_whitespaces, "remove_extra_whitespaces is on"),
            (not ns.escape_whitespaces, "escape_whitespaces is off"),
            (ts.treat_whitespace_as_suffix, "treat_whitespace_as_suffix is on"),
            (ts.byte_fallback, "byte_fallback is on"),
            (len(proto.pieces) >= NONE16, f"vocabulary of {len(proto.pieces)} >= {NONE16} pieces"),
        )
        if bad
    ]
    kinds = {p.type for p in proto.pieces}
    allowed = {pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.UNKNOWN,
               pb.ModelProto.SentencePiece.CONTROL}
    if kinds - allowed:
        problems.append("has user-defined, unused or byte pieces")
    if sum(p.type == pb.ModelProto.SentencePiece.UNKNOWN for p in proto.pieces) != 1:
        problems.append("needs exactly one unknown piece")
    pieces = [p.piece for p in proto.pieces]
    if len(set(pieces)) != len(pieces):
        problems.append("has duplicate pieces")
    if any(p.type != pb.ModelProto.SentencePiece.NORMAL and len(p.piece) == 1 for p in proto.pieces):
        problems.append("has a one-character control/unknown piece")
    if problems:
        raise ExportError(f"{path}: the C tokenizer cannot reproduce this model: " + "; ".join(problems))


def _norm_rules() -> list[tuple[int, bytes]]:
    rules = sorted((cp, (rep or "").encode()) for cp, rep in CHAR_MAP.items())
    for cp, rep in rules:
        # tokenizer.h's buffer bounds assume a rule never makes text longer in UTF-8
        if len(rep) > min(3, len(chr(cp).encode())):
            raise ExportError(f"CHAR_MAP[U+{cp:04X}] -> {rep!r} is longer than its source")
    return rules


def _dense_ranks(scores: Sequence[float]) -> list[int]:
    """Rank 0 for the highest score; equal scores share a rank (SentencePiece compares floats)."""
    order = {s: r for r, s in enumerate(sorted(set(scores), reverse=True))}
    return [order[s] for s in scores]


def _hash_table(pieces: Sequence[bytes], ids: Iterable[int]) -> list[int]:
    ids = list(ids)
    size = 2
    while size < 2 * len(ids):
        size *= 2
    table = [NONE16] * size
    for i in ids:
        slot = fnv1a(pieces[i]) & (size - 1)
        while table[slot] != NONE16:
            slot = (slot + 1) & (size - 1)
        table[slot] = i
    return table


def _c_chars(data: bytes) -> list[str]:
    """Bytes as C character constants ('a', '\\342'): no length limit, no trigraphs."""
    out: list[str] = []
    for b in data:
        c = chr(b)
        out.append(f"'{c}'" if 0x20 <= b < 0x7F and c not in "'\\?" else f"'\\{b:03o}'")
    return out


def _c_array(ctype: str, name: str, values: Sequence[int]) -> str:
    return f"static const {ctype} {name}[] = {{\n{_wrap([str(v) for v in values])}\n}};\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _display(path: Path) -> str:
    """The path relative to the working directory when inside it (reproducible headers)."""
    path = Path(path).resolve()
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def write_tokenizer_tables(tokenizer_dir: Path, out_dir: Path, note: str | None = None) -> dict:
    """Write ``out_dir/tokenizer_tables.c`` for the tokenizer in ``tokenizer_dir``.

    ``note`` adds one line to the generated header (e.g. the firmware export that wrote it).
    Returns the size in bytes of each table as it sits in flash, and ``total``.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    tok = Tokenizer.load(tokenizer_dir)
    proto = pb.ModelProto()
    proto.ParseFromString(tok.model_proto)
    _check_model(proto, tokenizer_dir / Tokenizer.MODEL_FILE)

    pieces = [p.piece.encode() for p in proto.pieces]
    normal = [i for i, p in enumerate(proto.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL]
    offsets = [0]
    for p in pieces:
        offsets.append(offsets[-1] + len(p))
    ranks = _dense_ranks([p.score for p in proto.pieces])
    if max(ranks) >= NONE16:
        raise ExportError("too many distinct scores for 16-bit ranks")
    hash_table = _hash_table(pieces, normal)
    split_at_space = not any(proto.pieces[i].piece.find(SPACE, 1) >= 0 for i in normal)
    max_piece = max(len(pieces[i]) for i in normal)
    rules = _norm_rules()
    stop = sorted(w.encode() for w in STOPWORDS) if tok.cfg.stopwords else []
    stop_off = [0]
    for w in stop:
        stop_off.append(stop_off[-1] + len(w))
    unk_id = next(i for i, p in enumerate(proto.pieces)
                  if p.type == pb.ModelProto.SentencePiece.UNKNOWN)
    pad_id = tok.sp.pad_id()
    pool = b"".join(pieces)

    model_file = tokenizer_dir / Tokenizer.MODEL_FILE
    config_file = tokenizer_dir / Tokenizer.CONFIG_FILE
    rule_lines = ",\n".join(
        f"    {{0x{cp:04X}, {len(rep)}, {{{','.join(_c_chars(rep.ljust(3, bytes(1))))}}}}}"
        for cp, rep in rules
    )
    stop_pool = _c_chars(b"".join(stop)) if stop else ["0"]
    note_line = f"\n * {note}" if note else ""
    text = f"""\
/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export tokenizer {_display(tokenizer_dir)} --out {_display(out_dir)}
 * from {_display(model_file)} (sha256 {_sha256(model_file)})
 *  and {_display(config_file)} (sha256 {_sha256(config_file)}).{note_line}
 * vocab {len(pieces)}, normalization v{NORMALIZATION_VERSION}, stopwords {int(tok.cfg.stopwords)}, \
seq_len {tok.cfg.seq_len}, truncate {tok.cfg.truncate}. Layout: tokenizer_tables.h.
 */
#include "tokenizer_tables.h"

static const tok_norm_rule_t norm[] = {{
{rule_lines}
}};

static const char pool[] = {{
{_wrap(_c_chars(pool))}
}};

{_c_array("uint32_t", "off", offsets)}
{_c_array("uint16_t", "rank", ranks)}
{_c_array("uint16_t", "hash", hash_table)}
static const char stop_pool[] = {{
{_wrap(stop_pool)}
}};

{_c_array("uint16_t", "stop_off", stop_off)}
const tok_tables_t tok_tables = {{
    {NORMALIZATION_VERSION}, norm, {len(rules)}u,
    {len(pieces)}u, pool, off, rank, {max_piece}u,
    hash, {len(hash_table)}u,
    {unk_id}, {pad_id}, {int(split_at_space)},
    {int(tok.cfg.stopwords)}, stop_pool, stop_off, {len(stop)}u,
    {tok.cfg.seq_len}u, {int(tok.cfg.truncate == "tail")},
}};
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TABLES_C).write_text(text)
    sizes = {
        "norm": 8 * len(rules),
        "pool": len(pool),
        "off": 4 * len(offsets),
        "rank": 2 * len(ranks),
        "hash": 2 * len(hash_table),
        "stop_pool": max(1, sum(map(len, stop))),
        "stop_off": 2 * len(stop_off),
    }
    sizes["total"] = sum(sizes.values())
    return sizes


# ----------------------------------------------------------------------------- firmware


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


def resolver_method(op: str) -> str:
    """``MicroMutableOpResolver`` method registering builtin operator ``op`` (e.g. ``AddConv2D``)."""
    try:
        return _RESOLVER_METHODS[op]
    except KeyError:
        raise ExportError(f"operator {op} has no MicroMutableOpResolver method known to "
                          "pipeline.export (_RESOLVER_METHODS)") from None


def arena_with_margin(measured: int) -> int:
    """Device tensor arena for a host-measured minimum: ``+max(10 %, 1 KB)``, rounded up to 16 B.

    The minimum comes from the TFLM interpreter on the 64-bit host (``quantize.min_arena``); the
    32-bit device needs less for pointer-sized bookkeeping but its optimized kernels may ask for
    scratch buffers, and TFLM versions differ, hence the margin. ``info`` on the device prints the
    bytes really used.
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
    lines += [f"    {_display(p)} (sha256 {_sha256(p)})" for p in sources]
    lines += list(extra)
    return "/* " + "\n * ".join(lines) + "\n */\n"


def _io_shape(model_bytes: bytes, kind: str, pos: int) -> list[int]:
    from pipeline.quantize import _io_tensor

    return [int(d) for d in _io_tensor(model_bytes, kind, pos).ShapeAsNumpy()]


def _check_release(converted: dict, tok: Tokenizer, model_dir: Path) -> None:
    """Refuse a release folder whose files do not fit the device loop (shapes, types, quant.json)."""
    from pipeline.quantize import float_ops, tensor_quant

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
        got = tensor_quant(converted[model], kind, pos)
        got_shape = _io_shape(converted[model], kind, pos)
        if got["dtype"] != dtype or got_shape != shape:
            problems.append(f"{model} {kind[:-1]} {name}: {got['dtype']} {got_shape}, "
                            f"expected {dtype} {shape}")
        elif dtype == "INT8":
            if (got["scale"], got["zero_point"]) != (q[name]["scale"], q[name]["zero_point"]):
                problems.append(f"{model} {name}: quantization differs from quant.json")
    for name in ("step", "head"):
        if bad := float_ops(converted[name]):
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
    from pipeline.quantize import load_release, op_report

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    try:
        converted = load_release(model_dir)
        tok = Tokenizer.load(model_dir)
        _check_release(converted, tok, model_dir)
    except (KeyError, ValueError) as e:
        if isinstance(e, ExportError):
            raise
        raise ExportError(f"{model_dir}: not an int8 release folder ({e!r})") from e
    ops = {name: sorted({o["op"] for o in op_report(converted[name])}) for name in ("step", "head")}
    all_ops = sorted(set(ops["step"]) | set(ops["head"]))
    methods = [(op, resolver_method(op)) for op in all_ops]  # refuses unknown operators first
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
    command = f"python -m pipeline.export firmware {_display(model_dir)} --out {_display(out_dir)}"
    tables = write_tokenizer_tables(model_dir, src, note=f"Written by: {command}")
    text = (src / TABLES_C).read_text()  # name the real output folder, not the scratch one
    (src / TABLES_C).write_text(text.replace(f"--out {_display(src)}\n",
                                             f"--out {_display(out_dir / 'src')}\n", 1))

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
    adds = "\n".join(f"    if (resolver.{m}() != kTfLiteOk) return kTfLiteError; /* {op} ({used_by[op]}) */"
                     for op, m in methods)
    (src / OP_RESOLVER_CC).write_text(
        _generated_comment(command, [step_file, head_file], ops_comment)
        + f"""#include "op_resolver.h"

TfLiteStatus sent_register_ops(SentOpResolver &resolver)
{{
{adds}
    return kTfLiteOk;
}}
""")

    arena = {n: arena_with_margin(meta[n]["arena_bytes"]) for n in ("step", "head")}
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
        ("SENT_MODEL_DESC", f'"{_display(model_dir)}: {kind} BiGRU student, embed '
                            f'{meta["embed_dim"]}, units {meta["units"]}"'),
        ("SENT_STEP_SHA256", f'"{_sha256(step_file)}"'),
        ("SENT_HEAD_SHA256", f'"{_sha256(head_file)}"'),
        ("SENT_OPS", f'"{" ".join(all_ops)}"'),
        ("SENT_UNITS", str(meta["units"])),
        ("SENT_EMBED_DIM", str(meta["embed_dim"])),
        ("SENT_VOCAB_SIZE", str(meta["vocab_size"])),
        ("SENT_HAS_ID_MAP", f"{int(meta.get('id_map') is not None)} /* 1: ids go through "
                            "sent_id_map (pruned embedding rows dropped) */"),
        ("SENT_TABLE_ROWS", str(meta.get("table_rows", meta["vocab_size"]))),
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
        (f"tensor arena: host-measured minimum + max({int(ARENA_MARGIN_FRACTION * 100)} %, "
         f"{ARENA_MARGIN_MIN} B), multiple of 16", None),
        ("SENT_STEP_ARENA_MEASURED", str(meta["step"]["arena_bytes"])),
        ("SENT_HEAD_ARENA_MEASURED", str(meta["head"]["arena_bytes"])),
        ("SENT_STEP_ARENA_BYTES", str(arena["step"])),
        ("SENT_HEAD_ARENA_BYTES", str(arena["head"])),
        ("SENT_ARENA_BYTES", "(SENT_STEP_ARENA_BYTES + SENT_HEAD_ARENA_BYTES)"),
        ("flash (bytes)", None),
        ("SENT_STEP_MODEL_BYTES", str(len(step))),
        ("SENT_HEAD_MODEL_BYTES", str(len(head))),
        ("SENT_ID_MAP_BYTES", str(id_map_bytes)),
        ("SENT_TOKENIZER_TABLE_BYTES", str(tables["total"])),
    ]
    body = "\n".join(f"\n/* {name} */" if value is None else f"#define {name} {value}"
                     for name, value in defines)
    (src / MODEL_CONFIG_H).write_text(
        _generated_comment(command, [step_file, head_file, quant_file, *tok_files],
                           ["Constants of the device step loop; see pipeline/quantize.py."])
        + f"""#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H
{body}

#endif /* MODEL_CONFIG_H */
""")
    return sizes


def _id_map_c(meta: dict) -> str:
    """``sent_id_map`` (token id -> row of the compacted embedding table), when the model has one."""
    if meta.get("id_map") is None:
        return ""
    values = meta["id_map"]
    if max(values) > 32767:
        raise ExportError("id_map rows do not fit int16")
    return (f"""
/* Token id -> row of the step model's embedding table: pruning emptied some rows, which
 * quantize.compact_rows dropped (they all share one zero row). */
const int16_t sent_id_map[SENT_VOCAB_SIZE] = {{
{_wrap([str(v) for v in values])}
}};
""")


def _wrap(items: Sequence[str], width: int = 100) -> str:
    """Initializer items, comma-separated, in lines of at most ``width`` characters."""
    lines, line = [], ""
    for item in items or ["0"]:
        if line and len(line) + len(item) + 1 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line},{item}" if line else item
    lines.append(line)
    return "\n".join("    " + x for x in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tokenizer", help="write tokenizer_tables.c")
    t.add_argument("tokenizer_dir", type=Path, help="folder with tokenizer.model + tokenizer.json")
    t.add_argument("--out", type=Path, default=Path("firmware/src"))
    f = sub.add_parser("firmware", help="write the model arrays, constants, op resolver and tables")
    f.add_argument("model_dir", type=Path, help="int8 release folder (step/head .tflite, quant.json)")
    f.add_argument("--out", type=Path, default=Path("firmware"), help="PlatformIO project root")
    args = ap.parse_args(argv)
    try:
        if args.what == "tokenizer":
            sizes = write_tokenizer_tables(args.tokenizer_dir, args.out)
            written = str(args.out / TABLES_C)
        else:
            sizes = export_firmware(args.model_dir, args.out)
            written = ", ".join(str(args.out / "src" / n) for n in FIRMWARE_FILES)
    except (OSError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written}: " + ", ".join(f"{k} {v} B" for k, v in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
