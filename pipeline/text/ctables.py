"""The C tokenizer's tables: ``tokenizer_tables.c`` for ``firmware/src/tokenizer.c``.

``write_tokenizer_tables`` writes the normalization map, the pieces (a packed byte pool and a
chained hash over it), merge ranks when they are not the piece ids and the stopword list of a
tokenizer folder as ``const`` C arrays (layout in ``firmware/src/tokenizer_tables.h``), after
refusing SentencePiece settings the C port does not implement. The small C-source helpers here are
shared with the firmware export.

Compact layout (all in flash): pieces are stored with "▁" as the one byte " " (``bpe_bytes``: a
space never reaches BPE, and 3-byte "▁" was 21% of the piece text); the pool holds each piece's
bytes once, and a piece that occurs inside a longer one points into it (``pack_pool``); the
hash is a bucket index over entries sorted by bucket (``piece_table``): 5 bytes per piece + 2
per bucket, a bucket per 4 pieces. The rank table is left out when SentencePiece's merge order is
the id order (``ranks_follow_ids``; true of the BPE models its trainer writes): the C code then
compares ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.text.tokenizer import CHAR_MAP, STOPWORDS, Tokenizer

TABLES_C = "tokenizer_tables.c"
SPACE = "\u2581"  # SentencePiece's escaped space
BPE_SPACE = " "  # how the tables and tokenizer.c's BPE buffers write it
NONE16 = 0xFFFF  # no piece
# load of the piece hash: n_buckets = the power of two >= pieces / this; a bucket costs 2 bytes.
# riscv32 tokenizer instructions per token on the bench text with models/release (4,000 pieces):
# 2: 2,634, 4: 2,670, 8: 2,727 (the 16 KB open-addressing hash this replaced: 2,735).
PIECES_PER_BUCKET = 4
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


class ExportError(ValueError):
    """The artifact uses a feature the C port does not implement."""


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, the hash the C tokenizer uses for piece look-up."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def bpe_bytes(piece: str) -> bytes:
    """A piece's bytes as tokenizer.c stores and matches them: UTF-8 with "▁" as one " "."""
    return piece.replace(SPACE, BPE_SPACE).encode()


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
    if any(BPE_SPACE in p for p in pieces):
        problems.append(f"has a piece with {BPE_SPACE!r}, the byte tokenizer.c writes {SPACE!r} as")
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


def ranks_follow_ids(proto: Any) -> bool:
    """True when comparing piece ids orders merges exactly as SentencePiece's scores do.

    Only a piece of two or more characters is ever the result of a merge (the C tokenizer looks
    up ranks for merged pairs only), so the condition is: the NORMAL pieces of >= 2 characters
    have strictly decreasing scores in id order (no ties: a tie is broken by position, not id).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    scores = [p.score for p in proto.pieces
              if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) > 1]
    return all(a > b for a, b in zip(scores, scores[1:], strict=False))


def pack_pool(pieces: Iterable[bytes]) -> tuple[bytes, dict[bytes, int]]:
    """The pieces' bytes, each stored once: ``(pool, offset of each distinct piece)``.

    Longest first; a piece found anywhere in the pool so far points there, else it is appended,
    overlapping the pool's tail where that ends with the piece's start. Deterministic.
    """
    pool = bytearray()
    where: dict[bytes, int] = {}
    for p in sorted(set(pieces), key=lambda b: (-len(b), b)):
        at = pool.find(p)
        if at < 0:
            k = next((k for k in range(min(len(p) - 1, len(pool)), 0, -1) if pool.endswith(p[:k])), 0)
            at = len(pool) - k
            pool += p[k:]
        where[p] = at
    return bytes(pool), where


def piece_table(pieces: Sequence[bytes], ids: Iterable[int],
                per_bucket: int = PIECES_PER_BUCKET) -> tuple[list[int], list[int]]:
    """The chained hash of pieces ``ids``: (entry ids ordered by bucket, then byte length, then
    id; bucket starts, n_buckets + 1 of them). Bucket of a piece: fnv1a(bytes) & (n_buckets - 1).
    The length order lets a look-up stop at the first longer entry."""
    ids = sorted(ids)
    n_buckets = 1
    while n_buckets * per_bucket < len(ids):
        n_buckets *= 2
    entries = sorted(ids, key=lambda i: (fnv1a(pieces[i]) & (n_buckets - 1), len(pieces[i]), i))
    starts = [0] * (n_buckets + 1)
    for i in ids:
        starts[(fnv1a(pieces[i]) & (n_buckets - 1)) + 1] += 1
    for b in range(n_buckets):
        starts[b + 1] += starts[b]
    return entries, starts


def c_chars(data: bytes) -> list[str]:
    """Bytes as C character constants ('a', '\\342'): no length limit, no trigraphs."""
    out: list[str] = []
    for b in data:
        c = chr(b)
        out.append(f"'{c}'" if 0x20 <= b < 0x7F and c not in "'\\?" else f"'\\{b:03o}'")
    return out


def c_array(ctype: str, name: str, values: Sequence[int]) -> str:
    return f"static const {ctype} {name}[] = {{\n{c_wrap([str(v) for v in values])}\n}};\n"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def display_path(path: Path) -> str:
    """The path relative to the working directory when inside it (reproducible headers)."""
    path = Path(path).resolve()
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def write_tokenizer_tables(tokenizer_dir: Path, out_dir: Path, note: str | None = None) -> dict:
    """Write ``out_dir/tokenizer_tables.c`` for the tokenizer in ``tokenizer_dir``.

    ``note`` adds one line to the generated header (e.g. the firmware export that wrote it).
    Returns the size in bytes of each array as it sits in flash, and ``total`` (their sum; not
    counted: the ``tok_tables`` descriptor, 84 bytes on a 32-bit target, and alignment padding).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    tok = Tokenizer.load(tokenizer_dir)
    proto = pb.ModelProto()
    proto.ParseFromString(tok.model_proto)
    _check_model(proto, tokenizer_dir / Tokenizer.MODEL_FILE)

    pieces = [bpe_bytes(p.piece) for p in proto.pieces]
    normal = [i for i, p in enumerate(proto.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL]
    entries, buckets = piece_table(pieces, normal)
    pool, where = pack_pool(pieces[i] for i in normal)
    if len(pool) > NONE16:
        raise ExportError(f"the packed pieces take {len(pool)} > {NONE16} bytes (16-bit offsets)")
    max_piece = max(len(pieces[i]) for i in normal)
    if max_piece > 0xFF:
        raise ExportError(f"a piece of {max_piece} > 255 bytes (8-bit lengths)")
    ranks = None if ranks_follow_ids(proto) else _dense_ranks([p.score for p in proto.pieces])
    if ranks is not None and max(ranks) >= NONE16:
        raise ExportError("too many distinct scores for 16-bit ranks")
    split_at_space = not any(proto.pieces[i].piece.find(SPACE, 1) >= 0 for i in normal)
    rules = _norm_rules()
    stop = sorted(w.encode() for w in STOPWORDS) if tok.cfg.stopwords else []
    stop_off = [0]
    for w in stop:
        stop_off.append(stop_off[-1] + len(w))
    unk_id = next(i for i, p in enumerate(proto.pieces)
                  if p.type == pb.ModelProto.SentencePiece.UNKNOWN)
    pad_id = tok.sp.pad_id()

    model_file = tokenizer_dir / Tokenizer.MODEL_FILE
    config_file = tokenizer_dir / Tokenizer.CONFIG_FILE
    rule_lines = ",\n".join(
        f"    {{0x{cp:04X}, {len(rep)}, {{{','.join(c_chars(rep.ljust(3, bytes(1))))}}}}}"
        for cp, rep in rules
    )
    stop_pool = c_chars(b"".join(stop)) if stop else ["0"]
    note_line = f"\n * {note}" if note else ""
    rank_array = (c_array("uint16_t", "rank", ranks) if ranks is not None
                  else "/* no rank table: merge order is id order (ctables.ranks_follow_ids) */\n")
    text = f"""\
/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export tokenizer {display_path(tokenizer_dir)} --out {display_path(out_dir)}
 * from {display_path(model_file)} (sha256 {file_sha256(model_file)})
 *  and {display_path(config_file)} (sha256 {file_sha256(config_file)}).{note_line}
 * vocab {len(pieces)}, normalization v{tok.cfg.normalization}, stopwords {int(tok.cfg.stopwords)}, \
seq_len {tok.cfg.seq_len}, truncate {tok.cfg.truncate}. Layout: tokenizer_tables.h.
 */
#include "tokenizer_tables.h"

static const tok_norm_rule_t norm[] = {{
{rule_lines}
}};

/* {len(entries)} pieces, {sum(len(pieces[i]) for i in normal)} bytes of piece text packed into {len(pool)} */
static const char pool[] = {{
{c_wrap(c_chars(pool))}
}};

{c_array("uint16_t", "piece_off", [where[pieces[i]] for i in entries])}
{c_array("uint8_t", "piece_len", [len(pieces[i]) for i in entries])}
{c_array("uint16_t", "piece_id", entries)}
{c_array("uint16_t", "bucket", buckets)}
{rank_array}static const char stop_pool[] = {{
{c_wrap(stop_pool)}
}};

{c_array("uint16_t", "stop_off", stop_off)}
const tok_tables_t tok_tables = {{
    {tok.cfg.normalization}, norm, {len(rules)}u,
    {len(pieces)}u, pool, piece_off, piece_len, piece_id, {len(entries)}u,
    bucket, {len(buckets) - 1}u, {max_piece}u, {"rank" if ranks is not None else "0 /* ids */"},
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
        "piece_off": 2 * len(entries),
        "piece_len": len(entries),
        "piece_id": 2 * len(entries),
        "bucket": 2 * len(buckets),
        "rank": 2 * len(ranks) if ranks is not None else 0,
        "stop_pool": max(1, sum(map(len, stop))),
        "stop_off": 2 * len(stop_off),
    }
    sizes["total"] = sum(sizes.values())
    return sizes



def c_wrap(items: Sequence[str], width: int = 100) -> str:
    """Initializer items, comma-separated, in lines of at most ``width`` characters."""
    lines, line = [], ""
    for item in items or ["0"]:
        if line and len(line) + len(item) + 1 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line},{item}" if line else item
    lines.append(line)
    return "\n".join("    " + x for x in lines)
