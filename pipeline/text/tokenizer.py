"""Text normalization and SentencePiece BPE tokenization.

Normalization spec (versions 1 and 2), written so that a C implementation can be bit-exact
-----------------------------------------------------------------------------------------
Input is a sequence of Unicode code points decoded from UTF-8; an invalid sequence decodes to
U+FFFD exactly as Python's ``bytes.decode("utf-8", "replace")`` does (one U+FFFD per maximal invalid
subpart). Each code point ``c`` is mapped in order:

1. ``A``-``Z`` (U+0041-U+005A) and Latin-1 capitals U+00C0-U+00DE except U+00D7 -> ``c + 0x20``.
2. Punctuation folding: U+2018 U+2019 U+201A U+201B U+2032 U+00B4 U+0060 -> ``'``;
   U+201C U+201D U+201E U+201F U+2033 U+00AB U+00BB -> ``"``;
   U+2010-U+2015 U+2212 -> ``-``; U+2026 -> ``...`` (three code points).
3. Whitespace: U+0009-U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
   U+202F, U+205F, U+3000 are separators.
4. Removed: other code points below U+0020, U+007F-U+009F, U+200B-U+200D, U+2060, U+FEFF.
5. Every other code point is kept as it is (no Unicode case folding beyond rule 1).

Separators are then collapsed: runs of separators become a single U+0020 and leading/trailing
separators are dropped. Removed code points do not split words (``a\\u200bb`` -> ``ab``).

Version 2 (``tokenizer.normalization=2``) is version 1 followed by one more rule on its output: an
apostrophe ``'`` is a separator, and each of ``. , ! ? ; : ( ) "`` stands apart as a word of its
own (a separator on each side). Text written as some corpora's publishers wrote it (``didn t``,
``great , but``) then normalizes as the original does (``didn't``, ``great, but``).

Optional stopword removal (off by default) runs after normalization: words (maximal runs of
non-space characters) found in :data:`STOPWORDS` are dropped. Negations are never stopwords.

Tokenization: SentencePiece BPE with an identity normalization rule (all normalization is the spec
above), a dummy ``▁`` prefix, id 0 = ``<pad>``, id 1 = ``<unk>``, no BOS/EOS. Details a port must
keep (``firmware/src/tokenizer.c`` does): spaces become ``▁`` and a literal U+2581 in the text
acts exactly like a space; the adjacent pair whose merge has the highest piece score merges first,
ties going to the leftmost pair (scores compared as float32); a run of unknown pieces becomes a
single ``<unk>``.

Truncation policy: sequences longer than ``seq_len`` keep their first ``seq_len`` ids
(``truncate="head"``, the default: titles and openings carry the verdict) or their last ones
(``truncate="tail"``). Shorter sequences are right-padded with 0 and masked by the models.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipeline.config import TokenizerConfig
from pipeline.text.ragged import Ragged, RaggedFile

log = logging.getLogger(__name__)

NORMALIZATION_VERSIONS = (1, 2)  # TokenizerConfig.normalization
PAD_ID = 0
UNK_ID = 1
SPACE_PIECE = "\u2581"  # the word boundary piece ``▁``

NO_WORDS = "no words to judge"
ONLY_UNKNOWN = "no known words: every character is one the tokenizer does not know"


def no_verdict_reason(ids: Sequence[int], space_id: int) -> str | None:
    """Why the ids a model sees give it nothing to judge, else None (the rule predict applies).

    Nothing to judge means no id other than ``UNK_ID`` and ``space_id`` (the bare ``▁`` piece that
    precedes an unknown character): :data:`ONLY_UNKNOWN` when one is ``UNK_ID`` (emoji, other
    scripts, invalid bytes), else :data:`NO_WORDS` (no ids: empty after normalization, e.g. only
    NUL or zero-width characters).
    """
    if any(i != UNK_ID and i != space_id for i in ids):
        return None
    return ONLY_UNKNOWN if UNK_ID in ids else NO_WORDS

_SEPARATORS = (
    set(range(0x09, 0x0E))
    | {0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}
    | set(range(0x2000, 0x200B))
)
_REMOVED = (
    set(range(0x00, 0x20)) | set(range(0x7F, 0xA0)) | {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF}
) - _SEPARATORS


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for c in range(0x41, 0x5B):
        table[c] = chr(c + 0x20)
    for c in range(0xC0, 0xDF):
        if c != 0xD7:
            table[c] = chr(c + 0x20)
    for c in (0x2018, 0x2019, 0x201A, 0x201B, 0x2032, 0xB4, 0x60):
        table[c] = "'"
    for c in (0x201C, 0x201D, 0x201E, 0x201F, 0x2033, 0xAB, 0xBB):
        table[c] = '"'
    for c in (*range(0x2010, 0x2016), 0x2212):
        table[c] = "-"
    table[0x2026] = "..."
    for c in _SEPARATORS:
        table[c] = " "
    for c in _REMOVED:
        table[c] = None
    return table


CHAR_MAP: dict[int, str | None] = _build_table()
"""Rules 1-4 of the spec as one code point -> replacement table (None = removed)."""

_SPACES = re.compile(" +")
APART = ".,!?;:()\""
"""Version 2: the characters that stand apart as words of their own (the apostrophe separates)."""
_APART = re.compile("([" + re.escape(APART) + "])")

NEGATIONS = frozenset(
    "not no nor never none nothing nobody nowhere neither cannot without n't".split()
)
STOPWORDS = frozenset(
    """a an the and or but if then so than too very just also of at by for with about into onto
    to from in on up down out over under again further once here there when where why how all any
    both each few more most other some such own same this that these those i me my myself we our
    ours you your yours he him his she her hers it its itself they them their theirs what which who
    whom am is are was were be been being have has had having do does did doing would should could
    ought i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd
    we'd they'd i'll you'll he'll she'll we'll they'll 's 're 've 'd 'll 'm as until while because
    s t""".split()
)
assert not STOPWORDS & NEGATIONS and not any(w.endswith("n't") for w in STOPWORDS)


def split_apart(text: str) -> str:
    """Spec v2's rule: each apostrophe a space, each :data:`APART` character between two spaces
    (runs of spaces are left to the caller)."""
    return _APART.sub(r" \1 ", text.replace("'", " "))


def normalize(text: str, version: int = 1) -> str:
    """Apply normalization spec ``version`` (1 or 2; see module docstring)."""
    text = text.translate(CHAR_MAP)
    if version == 2:
        text = split_apart(text)
    elif version != 1:
        raise ValueError(f"normalization v{version}: this code implements v1 and v2")
    return _SPACES.sub(" ", text).strip(" ")


def remove_stopwords(text: str) -> str:
    """Drop stopwords from normalized text; negations are always kept."""
    return " ".join(w for w in text.split(" ") if w not in STOPWORDS)


T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter, never empty)."""
    buf: list[T] = []
    for item in items:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


class Tokenizer:
    """Normalization + SentencePiece BPE + truncation/padding, loaded from a model directory."""

    MODEL_FILE = "tokenizer.model"
    CONFIG_FILE = "tokenizer.json"

    def __init__(self, model_proto: bytes, cfg: TokenizerConfig) -> None:
        import sentencepiece as spm

        self.cfg = cfg
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    def __reduce__(self) -> tuple:
        """Pickled as its model bytes and config (worker processes rebuild the processor)."""
        return (Tokenizer, (self.model_proto, self.cfg))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def space_id(self) -> int:
        """Id of the bare ``▁`` piece (``UNK_ID`` if the vocabulary has none)."""
        return int(self.sp.piece_to_id(SPACE_PIECE))

    def no_verdict_reason(self, ids: Sequence[int]) -> str | None:
        """:func:`no_verdict_reason` for this vocabulary."""
        return no_verdict_reason(ids, self.space_id)

    def preprocess(self, text: str) -> str:
        """Normalized (and optionally stopword-free) text, exactly what BPE sees."""
        t = normalize(text, self.cfg.normalization)
        return remove_stopwords(t) if self.cfg.stopwords else t

    def encode(self, text: str) -> list[int]:
        """Untruncated ids for one text."""
        return self.sp.encode(self.preprocess(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode([self.preprocess(t) for t in texts])

    def truncate(self, ids: Sequence[int]) -> list[int]:
        """Apply the truncation policy: at most ``seq_len`` ids."""
        L = self.cfg.seq_len
        return list(ids[:L] if self.cfg.truncate == "head" else ids[-L:])

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Truncated, unpadded ids per text (what the models consume)."""
        return [self.truncate(r) for r in self.encode_batch(texts)]

    def ids_ragged(self, texts: Iterable[str], chunk: int = 8192,
                   path: Path | None = None) -> Ragged | RaggedFile:
        """:meth:`ids` packed into a :class:`Ragged` (2 bytes per id), tokenized chunk by chunk so
        that no list of every row's ids is ever held; with ``path``, written there and read back
        row by row (:class:`RaggedFile`: nothing but the offsets in memory)."""
        dtype = Ragged.dtype_for(self.vocab_size)

        parts = itertools.chain((Ragged.from_rows(self.ids(part), dtype) for part in chunks(texts, chunk)),
                                [Ragged.from_rows([], dtype)])  # the id type even with no text
        return Ragged.concat(parts) if path is None else RaggedFile.write(parts, path)

    def to_array(self, texts: Sequence[str]) -> np.ndarray:
        """Truncated ids right-padded with PAD_ID into an int32 ``[n, seq_len]`` array."""
        out = np.zeros((len(texts), self.cfg.seq_len), dtype=np.int32)
        for i, r in enumerate(self.ids(texts)):
            out[i, : len(r)] = r
        return out

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / self.MODEL_FILE).write_bytes(self.model_proto)
        # the version as tokenizer.json always held it (files of v1 tokenizers stay as they were)
        cfg = {k: v for k, v in asdict(self.cfg).items() if k != "normalization"}
        meta = {"normalization_version": self.cfg.normalization, **cfg}
        (out_dir / self.CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, model_dir: Path) -> Tokenizer:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / cls.CONFIG_FILE).read_text())
        version = meta.pop("normalization_version")
        if version not in NORMALIZATION_VERSIONS:
            raise ValueError(
                f"{model_dir}: tokenizer uses normalization v{version}, this code implements "
                f"{' and '.join(f'v{v}' for v in NORMALIZATION_VERSIONS)}; retrain the tokenizer stage"
            )
        known = TokenizerConfig.__dataclass_fields__
        cfg = TokenizerConfig(**{k: v for k, v in meta.items() if k in known and k != "normalization"},
                              normalization=version)
        return cls((model_dir / cls.MODEL_FILE).read_bytes(), cfg)


def encode_spans(tok, texts: Sequence[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Truncated ids (as ``tok.ids``) and their ``[n_ids, 2]`` UTF-8 byte spans in the normalized
    text, from one encoding."""
    ids, spans = [], []
    for proto in tok.sp.encode([tok.preprocess(t) for t in texts], return_type="proto"):
        pieces = tok.truncate(proto.pieces)
        ids.append([p.id for p in pieces])
        spans.append(np.array([(p.begin, p.end) for p in pieces], np.int64).reshape(-1, 2))
    return ids, spans


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train SentencePiece BPE on (normalized) training texts only, read once as a stream
    (SentencePiece keeps at most ``cfg.max_train_sentences`` of them)."""
    import io

    import sentencepiece as spm

    if cfg.stopwords and cfg.normalization == 2:
        raise ValueError("tokenizer: stopwords with normalization 2: spec v2 splits contractions "
                         "(can't -> can t) and stopword removal would then drop the t of every "
                         "negation; set normalization=1 with stopwords=true")
    spm.set_random_generator_seed(cfg.seed)
    pre = Tokenizer.__new__(Tokenizer)
    pre.cfg = cfg
    fed = 0

    def sentences() -> Iterator[str]:
        nonlocal fed
        for s in map(pre.preprocess, texts):
            if s:
                fed += 1
                yield s

    it = sentences()
    first = next(it, None)
    if first is None:
        raise ValueError("no non-empty training text for the tokenizer")
    log.info("training BPE tokenizer: vocab=%d", cfg.vocab_size)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=itertools.chain([first], it),
        model_writer=buf,
        model_type="bpe",
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        input_sentence_size=cfg.max_train_sentences,
        shuffle_input_sentence=True,
        max_sentence_length=1 << 16,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    log.info("BPE tokenizer trained on %d texts", fed)
    return Tokenizer(buf.getvalue(), cfg)


def build_tokenizer(data_dir: Path, out_dir: Path, cfg: TokenizerConfig) -> dict:
    """Stage: train the tokenizer on ``data_dir/train.jsonl``; write it and length stats.

    Streams: the BPE reads the training reviews in file order, or, when there are more than
    ``cfg.sample_reviews``, that many of them (the smallest seeded md5 keys, whatever the order).
    """
    from pipeline.data import bounded_sample, iter_jsonl

    train = Path(data_dir) / "train.jsonl"
    n_train = sum(1 for _ in iter_jsonl(train))
    texts: Iterable[str] = (t for t, _ in iter_jsonl(train))
    if n_train > cfg.sample_reviews:
        log.info("tokenizer: a sample of %d of the %d training reviews", cfg.sample_reviews, n_train)
        texts = bounded_sample(texts, cfg.sample_reviews, cfg.seed)
    tok = train_tokenizer(texts, cfg)
    tok.save(out_dir)
    lengths = array("l")
    unk = 0
    for part in chunks((t for t, _ in iter_jsonl(Path(data_dir) / "val.jsonl")), 8192):
        for r in tok.encode_batch(part):
            lengths.append(len(r))
            unk += r.count(UNK_ID)
    lengths_np = np.frombuffer(lengths, np.int64) if lengths else np.zeros(0, np.int64)
    stats = {
        "vocab_size": tok.vocab_size,
        "val_tokens_per_review": {f"p{q}": float(np.percentile(lengths_np, q))
                                  for q in (50, 90, 99)},
        "val_mean_tokens": float(lengths_np.mean()),
        "val_truncated_share": float(np.mean(lengths_np > cfg.seq_len)),
        "val_unk_rate": float(unk / lengths_np.sum()) if lengths_np.sum() else 0.0,
    }
    (Path(out_dir) / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("tokenizer: vocab %d, val tokens p50 %.0f p90 %.0f, %.1f%% truncated at %d",
             stats["vocab_size"], stats["val_tokens_per_review"]["p50"],
             stats["val_tokens_per_review"]["p90"], 100 * stats["val_truncated_share"],
             cfg.seq_len)
    return stats
