"""The C tokenizer (firmware/src/tokenizer.c) gives exactly the Python tokenizer's ids."""

from __future__ import annotations

import ctypes
import hashlib
import json
import random
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import data
from pipeline.config import TokenizerConfig
from pipeline.text.tokenizer import (
    NO_WORDS,
    ONLY_UNKNOWN,
    STOPWORDS,
    Tokenizer,
    normalize,
    remove_stopwords,
    train_tokenizer,
)

if shutil.which("gcc") is None:
    pytest.skip("gcc not found: the C tokenizer tests need a C compiler", allow_module_level=True)

from pipeline.text.ctables import (  # noqa: E402
    TABLES_C,
    ExportError,
    bpe_bytes,
    fnv1a,
    pack_pool,
    piece_table,
    ranks_follow_ids,
    write_tokenizer_tables,
)
from pipeline.text.ctok import (  # noqa: E402 (after the skip)
    DEVICE_MAX_INPUT_BYTES,
    SRC,
    WARNINGS,
    CTokenizer,
    _Info,
    build_driver,
    compiler,
)

HOST_MAX = 1 << 16  # host builds that read whole reviews (32-bit offsets)
SYNTHETIC = [
    "This product is great, I love it! Works as described.",
    "Terrible quality. It broke after two days and the seller didn't answer.",
    "Not bad for the price; the battery lasts about 10 hours.",
    "ÉCOLE café naïve — “quoted” words… and 'single' ones",
    "I would never buy this again, it's not worth the money.",
] * 40
SPECIAL = ("\u2019\u2018\u201c\u201d\u2026\u2014\u2013\u00a0\u200b\ufeff\t\n\r\x00\x07\x7f\x85"
           "ÀÉÎÕÜÝÞ×ß😀👍🏽❤️☃\u2581 'AZaz")


def _train(texts: list[str], out: Path, **cfg: object) -> Path:
    train_tokenizer(texts, TokenizerConfig(vocab_size=2000, seq_len=64, **cfg)).save(out)
    return out


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest) -> list[str]:
    """Real reviews from the slice when the shared data is there, else a synthetic corpus."""
    try:
        sl = request.getfixturevalue("real_slice")
    except pytest.skip.Exception:
        return SYNTHETIC
    return [t for t, _ in data.iter_reviews(sl["amazon"])]


@pytest.fixture(scope="module")
def tok_dir(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(corpus, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def stop_dir(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(corpus, tmp_path_factory.mktemp("tok_stop"), stopwords=True)


@pytest.fixture(scope="module")
def py(tok_dir: Path) -> Tokenizer:
    return Tokenizer.load(tok_dir)


@pytest.fixture(scope="module")
def dev(tok_dir: Path) -> CTokenizer:
    """The device configuration (TOK_MAX_INPUT_BYTES = 2048)."""
    return CTokenizer(tok_dir)


@pytest.fixture(scope="module")
def host(tok_dir: Path) -> CTokenizer:
    return CTokenizer(tok_dir, max_input_bytes=HOST_MAX)


@pytest.fixture(scope="module")
def stream(dev: CTokenizer) -> CStream:
    """The device's streaming tokenizer (what the console uses)."""
    return CStream(dev)


@pytest.fixture(scope="module")
def whole_stream(whole: CTokenizer) -> CStream:
    """The stream when merges may cross "▁" (split_at_space = 0): bounded buffer, rule-2 splits."""
    return CStream(whole)


@pytest.fixture(scope="module")
def whole(tok_dir: Path) -> CTokenizer:
    """BPE over the whole text at once instead of word by word (tables' split_at_space = 0)."""
    return CTokenizer(tok_dir, max_input_bytes=HOST_MAX, defines=("TOK_NEVER_SPLIT",))


class CStream:
    """ctypes glue for the streaming tokenizer (tok_stream_* in the library of a CTokenizer)."""

    def __init__(self, c: CTokenizer) -> None:
        lib = self._lib = ctypes.CDLL(str(c.library))
        lib.tok_stream_size.restype = lib.tok_stream_bytes.restype = ctypes.c_size_t
        lib.tok_stream_init.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32),
                                        ctypes.c_size_t, ctypes.c_bool]
        lib.tok_stream_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.tok_stream_finish.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Info)]
        lib.tok_stream_finish.restype = ctypes.c_size_t
        lib.tok_stream_forced_splits.argtypes = [ctypes.c_void_p]
        lib.tok_stream_forced_splits.restype = ctypes.c_uint32
        self.capacity = int(lib.tok_stream_bytes())
        self._state = ctypes.create_string_buffer(int(lib.tok_stream_size()))

    def encode(self, data: bytes, max_ids: int | None = None, tail: bool = False,
               pieces: list[int] | None = None) -> tuple[list[int], int, int]:
        """(ids written, untruncated count, forced splits) of ``data`` fed in ``pieces`` sizes."""
        cap = len(data) + 1 if max_ids is None else max_ids
        ids = (ctypes.c_int32 * max(cap, 1))()
        self._lib.tok_stream_init(self._state, ids, cap, tail)
        pos = 0
        for k in [*(pieces or []), len(data)]:
            part = data[pos:pos + k]
            self._lib.tok_stream_feed(self._state, part, len(part))
            pos += len(part)
        info = _Info()
        n = self._lib.tok_stream_finish(self._state, ctypes.byref(info))
        assert info.input_bytes_used == len(data) and not info.input_cut
        return list(ids[:n]), int(info.n_ids), int(self._lib.tok_stream_forced_splits(self._state))


def _pieces(rng: random.Random, n: int, biggest: int = 12) -> list[int]:
    return [rng.randint(1, biggest) for _ in range(n // 4 + 1)]


def _check_stream(tok: Tokenizer, s: CStream, raw: bytes, rng: random.Random) -> None:
    """The stream, in random pieces, gives Python's ids (unless it reports a forced split)."""
    want = _python_ids(tok, raw)
    ids, n, forced = s.encode(raw, pieces=_pieces(rng, len(raw)))
    assert n == len(ids)
    if forced == 0:
        assert ids == want, raw[:200]
    k = rng.randint(0, 20)
    head, n_head, _ = s.encode(raw, max_ids=k, pieces=_pieces(rng, len(raw)))
    tail, _, _ = s.encode(raw, max_ids=k, tail=True, pieces=_pieces(rng, len(raw)))
    assert n_head == n and head == ids[:k] and tail == ids[-k:][:k]


def _python_ids(tok: Tokenizer, raw: bytes) -> list[int]:
    return tok.encode(raw.decode("utf-8", "replace"))


def _check_device(tok: Tokenizer, c: CTokenizer, raw: bytes) -> None:
    """C == Python on the bytes the device reads (all of them, or a cut at a char boundary)."""
    r = c.encode_info(raw)
    if len(raw) <= c.max_input_bytes:
        assert r.input_bytes_used == len(raw)
    else:
        assert c.max_input_bytes - 4 < r.input_bytes_used <= c.max_input_bytes
    assert r.ids == _python_ids(tok, raw[: r.input_bytes_used]) and r.n_ids == len(r.ids)


# ---------------------------------------------------------------- build


def test_sources_build_with_warnings_as_errors(tmp_path: Path) -> None:
    for name in ("tokenizer.c", "tokenizer_tables.c"):
        for size in (DEVICE_MAX_INPUT_BYTES, HOST_MAX):
            cmd = [compiler(), *WARNINGS, "-Wconversion", "-Wshadow", "-Wcast-qual",
                   "-Wstrict-prototypes", "-Wmissing-prototypes", "-O2", f"-I{SRC}",
                   f"-DTOK_MAX_INPUT_BYTES={size}", "-c", str(SRC / name), "-o", str(tmp_path / "o.o")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr


def test_portable_headers_only() -> None:
    allowed = {"stdint.h", "stddef.h", "string.h", "stdbool.h", "tokenizer.h", "tokenizer_tables.h"}
    for name in ("tokenizer.c", "tokenizer.h", "tokenizer_tables.h", "tokenizer_tables.c"):
        text = (SRC / name).read_text()
        assert set(re.findall(r'#include [<"]([^>"]+)[>"]', text)) <= allowed, name
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", text), name


def test_committed_tables_are_generated_and_current(tmp_path: Path) -> None:
    text = (SRC / "tokenizer_tables.c").read_text()
    head = text[: text.index("#include")]
    assert "GENERATED FILE - DO NOT EDIT" in head and "python -m pipeline.export tokenizer" in head
    m = re.search(r"from (\S+) \(sha256 ([0-9a-f]{64})\)", head)
    assert m, head
    model = Path(__file__).resolve().parents[1] / m.group(1)
    if not model.exists() or hashlib.sha256(model.read_bytes()).hexdigest() != m.group(2):
        pytest.skip(f"{m.group(1)} with that sha256 is not here to regenerate from")
    write_tokenizer_tables(model.parent, tmp_path)
    fresh = (tmp_path / "tokenizer_tables.c").read_text()
    assert fresh[fresh.index("#include"):] == text[text.index("#include"):]


def test_export_refuses_models_it_cannot_reproduce(tmp_path: Path) -> None:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SYNTHETIC), model_writer=buf,
                                   model_type="unigram", vocab_size=60, hard_vocab_limit=False,
                                   minloglevel=2)
    Tokenizer(buf.getvalue(), TokenizerConfig()).save(tmp_path)
    with pytest.raises(ExportError, match="BPE"):
        write_tokenizer_tables(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- parity


def test_real_reviews(real_slice: dict[str, Path], corpus: list[str], py: Tokenizer,
                      host: CTokenizer, dev: CTokenizer, whole: CTokenizer, stream: CStream,
                      whole_stream: CStream) -> None:
    texts = corpus + [t for t, _ in data.iter_reviews(real_slice["heldout"])]
    assert len(texts) >= 3000
    rng = random.Random(4)
    for i, text in enumerate(texts):
        raw = text.encode()
        want = py.encode(text)
        assert host.encode_bytes(raw) == want, text
        _check_device(py, dev, raw)
        assert stream.encode(raw, pieces=_pieces(rng, len(raw), 40)) == (want, len(want), 0), text
        if i % 5 == 0:
            assert whole.encode_bytes(raw) == want, text
            assert whole_stream.encode(raw, pieces=_pieces(rng, len(raw))) == (want, len(want), 0)


RELEASE = Path(__file__).resolve().parents[1] / "models" / "release"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "amazon").is_dir() or not (RELEASE / "tokenizer.model").exists(),
                    reason="../shared/data or models/release not here")
def test_release_stream_on_all_test_and_heldout_reviews() -> None:
    """The device path (streaming C tokenizer, models/release) == Tokenizer.ids on every review of
    the test split of ../shared/data/amazon and of every held-out set, however long."""
    tok = Tokenizer.load(RELEASE)
    s = CStream(CTokenizer(RELEASE))
    texts = [t for t, _ in data.iter_reviews(SHARED_DATA / "amazon") if data.split_of(t) == "test"]
    n_test = len(texts)
    for path in sorted((SHARED_DATA / "heldout").glob("*.jsonl.gz")):
        texts += [t for t, _ in data.iter_reviews(path)]
    full = tok.encode_batch(texts)
    rng = random.Random(8)
    long = 0
    for text, ids in zip(texts, full, strict=True):
        raw = text.encode()
        got = s.encode(raw, max_ids=tok.cfg.seq_len, tail=tok.cfg.truncate == "tail")
        assert got == (tok.truncate(ids), len(ids), 0), text[:200]
        if len(raw) > 2048:  # all long ones again, in random pieces
            long += 1
            assert s.encode(raw, pieces=_pieces(rng, len(raw), 60)) == (ids, len(ids), 0)
    assert n_test > 10_000 and len(texts) > 25_000 and long > 400


def test_known_cases(py: Tokenizer, host: CTokenizer) -> None:
    cases = ["", " ", "Hello  WORLD", "It\u2019s \u201cgreat\u201d \u2014 really\u2026",
             "☃☃ snow ☃", "a\u200bb", "\u2581\u2581x\u2581", "×ÀÞ", "x" * 3000, "ab " * 1000]
    for text in cases:
        assert host.encode(text) == py.encode(text), text
    # SentencePiece turns a run of unknown characters into one <unk>: so does the C port
    assert py.encode("☃☃")[-1] == py.sp.unk_id() and len(py.encode("☃☃")) <= 2


def test_no_verdict_rule_like_python(py: Tokenizer, host: CTokenizer) -> None:
    """tok_no_verdict_reason (what the console prints instead of a verdict) is predict's rule
    (pipeline.text.tokenizer.no_verdict_reason), word for word, on the C tokenizer's ids."""
    space, unk = py.space_id, py.sp.unk_id()
    assert host.space_id == space != unk  # the bare "▁" is a piece of this vocabulary
    assert host.no_verdict_reason([]) == NO_WORDS
    assert host.no_verdict_reason([space, space]) == NO_WORDS
    assert host.no_verdict_reason([space, unk, space, unk]) == host.no_verdict_reason([unk]) == ONLY_UNKNOWN
    known = py.encode("great")[-1]
    assert known not in (space, unk)
    assert host.no_verdict_reason([space, unk, known]) is None
    assert host.no_verdict_reason([known, space]) is None
    # another space id (a vocabulary without "▁" passes unk's): the rule follows it
    assert host.no_verdict_reason([space], space_id=unk) is None
    cases = ["", "\x00\x00", "\u200b\ufeff\u2060", "\x01\x02\x7f", " \t\n", "\u2581", "\u2581 \u2581",
             "😀", "😀👍🏽 ☃", "\ufffd", "ok 😀", "a", "not bad", "Ω", "x\u200by"]
    for text in cases:
        ids = host.encode(text)
        assert ids == py.encode(text), text
        assert host.no_verdict_reason(ids) == py.no_verdict_reason(ids), text
    reasons = {py.no_verdict_reason(py.encode(t)) for t in cases}
    assert reasons == {None, NO_WORDS, ONLY_UNKNOWN}  # all three answers occur
    raw = b"\xff\xfe \xc3"  # invalid bytes only: U+FFFD, unknown
    assert host.no_verdict_reason(host.encode_bytes(raw)) == ONLY_UNKNOWN == py.no_verdict_reason(
        _python_ids(py, raw))


@pytest.mark.parametrize("raw", [
    b"\xe2\x82", b"\xe2\x82A", b"\xed\xa0\x80", b"\xf0\x90\x80", b"\xf0\x90\x80\x80", b"\xf4\x90\x80\x80",
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf8\x88\x80\x80\x80", b"\xff\xfe\xfd", b"\x80\xbf", b"a\x00b",
    b"\xef\xbf\xbd\xef\xbf", b"\xc2", b"\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41",
])
def test_ill_formed_utf8_like_python(raw: bytes, py: Tokenizer, host: CTokenizer) -> None:
    assert host.encode_bytes(raw) == _python_ids(py, raw)
    assert host.normalize_bytes(raw) == normalize(raw.decode("utf-8", "replace")).encode()


_chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIAL))
_texts = st.one_of(
    st.text(_chars, max_size=80),
    st.builds(lambda s, n: s * n, st.text(_chars, min_size=1, max_size=12), st.integers(1, 400)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts)
def test_hypothesis_text(text: str, py: Tokenizer, host: CTokenizer, dev: CTokenizer,
                         whole: CTokenizer, stream: CStream, whole_stream: CStream) -> None:
    raw = text.encode()
    assert host.encode_bytes(raw) == py.encode(text) == whole.encode_bytes(raw)
    assert host.normalize_bytes(raw) == normalize(text).encode()
    ids = py.ids([text])[0]
    assert host.no_verdict_reason(ids) == py.no_verdict_reason(ids)
    _check_device(py, dev, raw)
    rng = random.Random(len(raw))
    _check_stream(py, stream, raw, rng)
    _check_stream(py, whole_stream, raw, rng)


_utf8_pieces = st.one_of(
    st.binary(max_size=8),
    _texts.map(lambda s: s.encode()),
    st.sampled_from([b"\xe2\x80", b"\xf0\x9f", b"\xed\xa0", b"\xc3", b"\x80", b"\xe2\x96\x81"]),
)
_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(_utf8_pieces, max_size=40).map(b"".join),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=5), st.integers(1, 1500)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_bytes)
def test_hypothesis_bytes(raw: bytes, py: Tokenizer, host: CTokenizer, dev: CTokenizer,
                          stream: CStream, whole_stream: CStream) -> None:
    assert host.encode_bytes(raw) == _python_ids(py, raw)
    assert host.normalize_bytes(raw) == normalize(raw.decode("utf-8", "replace")).encode()
    _check_device(py, dev, raw)
    rng = random.Random(len(raw))
    _check_stream(py, stream, raw, rng)
    _check_stream(py, whole_stream, raw, rng)


def test_stream_long_inputs(py: Tokenizer, stream: CStream, whole_stream: CStream) -> None:
    """Inputs far beyond TOK_MAX_INPUT_BYTES and words beyond the stream's buffer: exact, or a
    reported forced split (only for words without an exact split point, and then bounded)."""
    rng = random.Random(6)
    url = "http://example.com/" + "/".join(f"p{i}q.x?a={i}&b=" for i in range(60))  # > 256 B
    cases = [
        ("The seller was great, it broke. " * 800).encode(),  # 25 KB
        (url + " great " + url.upper()).encode(),
        "é😀\u2581x ".encode() * 3000,
        bytes(rng.randrange(256) for _ in range(50_000)),
        b"\xe2\x96" * 500 + b"\xe2\x96\x81" * 200 + b"\x00" * 300,
    ]
    for raw in cases:
        for s in (stream, whole_stream):
            ids, n, forced = s.encode(raw, pieces=_pieces(rng, len(raw), 50))
            assert (ids, n, forced) == (_python_ids(py, raw), n, 0), raw[:100]
    # one 1 MB word of a single letter: no exact split point, bounded work, counted
    sp = py.sp
    doubled = next(p for p in (sp.id_to_piece(i) for i in range(sp.get_piece_size()))
                   if len(p) == 2 and p[0] == p[1] and p[0] != "\u2581")
    ids, n, forced = stream.encode(("a " + doubled[0] * 1_000_000 + " b").encode())
    assert forced > 0 and len(ids) == n > 0


def test_stopwords_model(stop_dir: Path, corpus: list[str]) -> None:
    tok = Tokenizer.load(stop_dir)
    c = CTokenizer(stop_dir, max_input_bytes=HOST_MAX)
    s = CStream(c)
    s_whole = CStream(CTokenizer(stop_dir, max_input_bytes=HOST_MAX, defines=("TOK_NEVER_SPLIT",)))
    rng = random.Random(2)
    texts = corpus[:1500] + [" ".join(sorted(STOPWORDS)), "I'M NOT sure it's the ONE", "the a an",
                             "the " * 2000 + "end", "x" * 600 + " the " + "y" * 300]
    for text in texts:
        assert c.encode(text) == tok.encode(text), text
        for st_ in (s, s_whole):
            ids, n, forced = st_.encode(text.encode(), pieces=_pieces(rng, len(text)))
            assert forced > 0 or ids == tok.encode(text), text
        expected = remove_stopwords(normalize(text)).encode()
        assert c.normalize_bytes(text.encode(), stopwords=True) == expected
    assert tok.encode("the a an") == c.encode("the a an") == []
    assert c.no_verdict_reason([]) == tok.no_verdict_reason([]) == NO_WORDS  # stopwords only


def test_truncation(corpus: list[str], py: Tokenizer, host: CTokenizer) -> None:
    tail = Tokenizer(py.model_proto, TokenizerConfig(seq_len=16, truncate="tail"))
    head = Tokenizer(py.model_proto, TokenizerConfig(seq_len=16, truncate="head"))
    for i, text in enumerate(corpus[:300] + ["", "a", "☃☃☃ ☃☃"]):
        full = py.encode(text)
        for k in (0, 1, 16, len(full), len(full) + 1, i % 40):
            r = host.encode_info(text.encode(), max_ids=k)
            assert r.ids == full[:k] and r.n_ids == len(full)
            assert host.encode_info(text.encode(), max_ids=k, tail=True).ids == full[-k:][:k]
        assert host.encode(text, max_ids=16) == head.truncate(full)
        assert host.encode_info(text.encode(), 16, tail=True).ids == tail.truncate(full)


# ---------------------------------------------------------------- table layout (tokenizer_tables.h)


@pytest.fixture(scope="module", params=["trained", "release"])
def layout_dir(request: pytest.FixtureRequest) -> Path:
    """The tables of a freshly trained tokenizer and of models/release (the committed firmware's)."""
    if request.param == "release":
        if not (RELEASE / "tokenizer.model").exists():
            pytest.skip("models/release not here")
        return RELEASE
    return request.getfixturevalue("tok_dir")


def _proto(tokenizer_dir: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(Tokenizer.load(tokenizer_dir).model_proto)
    return proto


def _normal_pieces(proto) -> dict[bytes, int]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    return {p.piece.encode(): i for i, p in enumerate(proto.pieces)
            if p.type == pb.ModelProto.SentencePiece.NORMAL}


def _lookup(c: CTokenizer) -> Callable[[bytes], int]:
    """tokenizer.c's piece look-up (the TOK_TEST_HOOKS build's tok_lookup_piece)."""
    f = ctypes.CDLL(str(c.library)).tok_lookup_piece
    f.restype = ctypes.c_uint16
    f.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lambda b: int(f(b, len(b)))


def test_pack_pool_stores_each_byte_run_once() -> None:
    pieces = [b"\xe2\x96\x81the", b"the", b"he", b"\xe2\x96\x81th", b"ther", b"erm", b"x", b"abc",
              b"bcd", b"the"]
    pool, where = pack_pool(pieces)
    # longest first; "ther" overlaps the tail "the", "bcd" the tail "bc", the rest are inside
    assert pool == b"\xe2\x96\x81therabcdermx"
    assert all(pool[where[p]:where[p] + len(p)] == p for p in pieces) and len(where) == 9
    assert pack_pool(reversed(pieces)) == (pool, where)


def test_piece_table_buckets() -> None:
    pieces = [b"<unk>", *(f"p{i}".encode() for i in range(1, 40)), b"a" * 9, b"ab", b"b"]
    ids = range(1, len(pieces))
    entries, starts = piece_table(pieces, ids, per_bucket=4)
    n = len(starts) - 1
    assert n == 16 and starts[0] == 0 and starts[-1] == len(entries) and sorted(entries) == list(ids)
    for b in range(n):
        got = entries[starts[b]:starts[b + 1]]
        want = sorted((i for i in ids if fnv1a(pieces[i]) & (n - 1) == b), key=lambda i: (len(pieces[i]), i))
        assert got == want


def test_piece_lookup_finds_exactly_the_normal_pieces(layout_dir: Path) -> None:
    """Every NORMAL piece is found with its id (long ones, ones stored inside others); control
    pieces, bytes in no piece, prefixes, suffixes and extensions of pieces are not."""
    proto = _proto(layout_dir)
    pieces = _normal_pieces(proto)
    look = _lookup(CTokenizer(layout_dir, defines=("TOK_TEST_HOOKS",)))
    for b, i in pieces.items():
        assert look(b) == i, b
    pool, _ = pack_pool(pieces)
    assert len(pool) < sum(map(len, pieces))  # some pieces do share bytes
    rng = random.Random(3)
    ordered = sorted(pieces)
    others = {b"", bytes(range(256)), max(pieces, key=len) + b"e", *(bytes([x]) for x in range(256))}
    others |= {p.piece.encode() for p in proto.pieces}  # <unk>, <pad>, ...
    for b in ordered:
        others |= {b[:k] for k in range(1, len(b))} | {b[k:] for k in range(1, len(b))}
        others |= {b + rng.choice(ordered), b + b}
    misses = others - pieces.keys()
    assert len(misses) > 5000
    for b in misses:
        assert look(b) == 0xFFFF, b


def _piece_texts(proto) -> list[str]:
    """Texts built from the vocabulary: every piece alone, the longest ones glued and spaced,
    groups of pieces sharing a prefix, and characters that are in no piece."""
    pieces = sorted((b.decode() for b in _normal_pieces(proto)), key=lambda p: (-len(p), p))
    alone = [p.replace("\u2581", " ") for p in pieces]
    longest = [p.strip() for p in alone[:60]]
    by_prefix: dict[str, list[str]] = {}
    for p in alone:
        by_prefix.setdefault(p[:3], []).append(p.strip())
    shared = sorted(by_prefix.values(), key=len, reverse=True)[:20]
    chars = {c for p in pieces for c in p}
    absent = [chr(c) for c in range(0x21, 0x2600) if chr(c) not in chars and normalize(chr(c)) == chr(c)]
    assert len(absent) > 100
    return [*alone, "".join(longest), " ".join(longest), "".join(longest[::-1]),
            *("".join(g) for g in shared), *(" ".join(g) for g in shared),
            "".join(absent[:300]), " ".join(absent[:300]),
            "".join(a + p for a, p in zip(absent, longest, strict=False)),
            longest[0] + absent[0] + longest[0] + absent[1] * 3 + longest[1]]


def test_pieces_as_text_like_python(layout_dir: Path) -> None:
    tok = Tokenizer.load(layout_dir)
    host = CTokenizer(layout_dir, max_input_bytes=HOST_MAX)
    s = CStream(CTokenizer(layout_dir))
    rng = random.Random(9)
    for text in _piece_texts(_proto(layout_dir)):
        want = tok.encode(text)
        assert host.encode(text) == want, text
        _check_stream(tok, s, text.encode(), rng)


def test_rank_table_when_merge_order_is_not_id_order(tok_dir: Path, corpus: list[str],
                                                      tmp_path: Path) -> None:
    """A model whose scores do not follow the ids (shuffled, with ties) gets a rank table, and
    the C tokenizer still gives SentencePiece's ids; a trained one needs none."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = _proto(tok_dir)
    assert ranks_follow_ids(proto)
    write_tokenizer_tables(tok_dir, tmp_path / "ids")
    assert "static const uint16_t rank[]" not in (tmp_path / "ids" / TABLES_C).read_text()
    multi = [p for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) > 1]
    scores = [p.score for p in multi]
    random.Random(5).shuffle(scores)
    for k, (p, score) in enumerate(zip(multi, scores, strict=True)):
        p.score = float(round(score / 40) * 40) if k % 3 == 0 else score  # some ties
    assert not ranks_follow_ids(proto)
    cfg = Tokenizer.load(tok_dir).cfg
    Tokenizer(proto.SerializeToString(), cfg).save(tmp_path / "tok")
    sizes = write_tokenizer_tables(tmp_path / "tok", tmp_path / "ranks")
    assert "static const uint16_t rank[]" in (tmp_path / "ranks" / TABLES_C).read_text()
    assert sizes["rank"] == 2 * len(proto.pieces)
    tok = Tokenizer.load(tmp_path / "tok")
    host = CTokenizer(tmp_path / "tok", max_input_bytes=HOST_MAX)
    for text in corpus[:1000] + _piece_texts(proto)[::7]:
        assert host.encode(text) == tok.encode(text), text


# ---------------------------------------------------------------- sanitizers, CLI


SAN_ENV = {"ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}


def _random_under_sanitizers(tokenizer_dir: Path, n: int) -> None:
    exe = build_driver(tokenizer_dir, sanitize=True)
    proc = subprocess.run([exe, "--random", str(n), "7"], capture_output=True, text=True,
                          env=SAN_ENV, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0 and f"{n} inputs ok" in proc.stdout, proc.stderr[-3000:]


def test_sanitizer_driver(tok_dir: Path, stop_dir: Path, py: Tokenizer, corpus: list[str]) -> None:
    _random_under_sanitizers(tok_dir, 6000)
    _random_under_sanitizers(stop_dir, 2000)
    # records over stdin (bytes, max_ids, tail) -> ids, checked against Python
    exe = build_driver(tok_dir, sanitize=True)
    texts = [t.encode() for t in corpus[:200]] + [b"\xff" * 2100, "é😀 ".encode() * 600, b""]
    cases = [(b, 0xFFFFFFFF, 0) for b in texts] + [(b, 7, i % 2) for i, b in enumerate(texts[:50])]
    # the streaming tokenizer (flag 2), on inputs far beyond the one-shot limit too
    long = [b" ".join(texts[:200]) * 3, "é😀 ".encode() * 20_000, b"\xff\xe2\x96 x" * 9000]
    cases += [(b, 0xFFFFFFFF, 2) for b in texts[:100] + long]
    cases += [(b, 9, 2 | i % 2) for i, b in enumerate(texts[:40] + long)]
    records = b"".join(struct.pack("<IIB", len(b), k, tail) + b for b, k, tail in cases)
    proc = subprocess.run([exe], input=records, capture_output=True, env=SAN_ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(cases)
    for (raw, k, flags), line in zip(cases, lines, strict=True):
        counts, _, ids = line.partition(":")
        n, used = map(int, counts.split())  # no "forced=" here: these need no forced split
        expected = _python_ids(py, raw[:used])
        assert n == len(expected) and (used == len(raw) or not flags & 2)
        assert list(map(int, ids.split())) == (expected[-k:] if flags & 1 else expected[:k])


def test_cli_python_and_c_agree(tok_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline.tokenize import main

    rows = ["Great product!", "Awful. Never again…", "word " * 700, "line\nbreak \ud800 lone"]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    outs = []
    for args in (["--impl", "python"], ["--impl", "c"], ["--impl", "python", "--max-len", "5"],
                 ["--impl", "c", "--max-len", "5"]):
        assert main([str(tok_dir), str(path), *args]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[2] == outs[3] and len(outs[0].splitlines()) == len(rows)
    assert all(1 <= len(line.split()) <= 5 for line in outs[2].splitlines())
    assert len(outs[0].splitlines()[2].split()) >= 700  # untruncated
    # the device's input limit: the long review is cut, and the CLI says so
    assert main([str(tok_dir), str(path), "--impl", "c", "--max-input-bytes", "2048"]) == 0
    out, err = capsys.readouterr()
    assert "1 review(s) longer than 2048 bytes" in err
    assert out.splitlines()[:2] == outs[0].splitlines()[:2] and out != outs[0]


def test_tables_store_the_space_piece_as_one_byte(layout_dir: Path, tmp_path: Path) -> None:
    """The pool holds "▁" as the byte ' ' (3 bytes less per occurrence), never as UTF-8."""
    proto = _proto(layout_dir)
    pieces = _normal_pieces(proto)
    n_space = sum(p.count(b"\xe2\x96\x81") for p in pieces)
    assert n_space > 100
    write_tokenizer_tables(layout_dir, tmp_path)
    text = (tmp_path / TABLES_C).read_text()
    pool = text.split("static const char pool[] = {", 1)[1].split("};", 1)[0]
    assert "'\\342','\\226','\\201'" not in pool.replace("\n", "").replace(" ", "")
    assert "' '" in pool
    escaped, _ = pack_pool(pieces)
    compact, _ = pack_pool(bpe_bytes(p.decode()) for p in pieces)
    assert f"packed into {len(compact)} */" in text and len(compact) < len(escaped)


# ---------------------------------------------------------------- normalization spec v2


def test_normalization_v2_like_python(corpus: list[str], host: CTokenizer, tmp_path: Path) -> None:
    """Spec v2 (tables' normalization_version 2): the whole-text, device and streaming C
    tokenizers give Python's ids, on reviews, their publisher-styled copies and odd bytes; the
    device cuts text dense in punctuation before its symbol arrays would overflow."""
    from pipeline.compress.distill import publisher_style

    v2_dir = _train(corpus, tmp_path / "tok_v2", normalization=2)
    tok = Tokenizer.load(v2_dir)
    v1 = host  # the module's spec v1 tokenizer, trained on the same corpus
    host, dev = CTokenizer(v2_dir, max_input_bytes=HOST_MAX), CTokenizer(v2_dir)
    stream, whole_stream = CStream(dev), CStream(CTokenizer(v2_dir, max_input_bytes=HOST_MAX,
                                                            defines=("TOK_NEVER_SPLIT",)))
    rng = random.Random(22)
    texts = [t.encode() for t in corpus[:800] + [publisher_style(t) for t in corpus[:200]]]
    texts += [SPECIAL.encode(), b"'.,!?;:()\"" * 300, "\u2026".encode() * 900, b". " * 1500,
              *(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(200))]
    for raw in texts:
        text = raw.decode("utf-8", "replace")
        assert host.encode_bytes(raw) == tok.encode(text), raw[:100]
        assert host.normalize_bytes(raw) == normalize(text, 2).encode()
        r = dev.encode_info(raw)
        assert r.input_bytes_used == len(raw) or len(raw) > dev.max_input_bytes // 2
        assert r.ids == _python_ids(tok, raw[: r.input_bytes_used]) and r.n_ids == len(r.ids)
        _check_stream(tok, stream, raw, rng)
        _check_stream(tok, whole_stream, raw, rng)
    assert dev.encode_info(b"." * 2000).input_bytes_used == 1024  # ". " per byte: 2 symbols
    assert host.encode("Didn't. ") == host.encode("didn t .") != v1.encode("Didn't. ")
