/*
 * Portable C99 port of pipeline/text/tokenizer.py: UTF-8 decoding, normalization spec v1 or v2
 * (tok_tables.normalization_version), optional
 * stopword removal and SentencePiece BPE encoding. For every input it gives exactly the ids of
 *
 *     Tokenizer.encode(bytes.decode("utf-8", "replace"))
 *
 * (bit-exact with sentencepiece 0.2.x's SentencePieceProcessor.encode), for the tokenizer whose
 * tables were generated into tokenizer_tables.c by pipeline.export.write_tokenizer_tables.
 *
 * No heap, no recursion, no platform headers; all state lives in the caller's tok_work_t.
 * Not reentrant per work buffer (one tok_work_t per concurrent caller); the tables are const.
 *
 * Input handling
 *   - Bytes are decoded as UTF-8; every ill-formed sequence becomes U+FFFD with the "maximal
 *     subpart" rule (Unicode ch. 3, "U+FFFD Substitution of Maximal Subparts"), as Python's
 *     bytes.decode("utf-8", "replace") does. NUL bytes are ordinary input (removed by rule 4).
 *   - tok_encode / tok_encode_tail (one call, whole input in memory) read at most
 *     TOK_MAX_INPUT_BYTES bytes. A longer input is cut at the last character (decoding unit)
 *     boundary at or before TOK_MAX_INPUT_BYTES, so the result equals Python's on
 *     utf8[:info.input_bytes_used]; info.input_cut tells the caller it happened. Spec v2 writes up
 *     to two characters per input byte (". . ."), so text dense in punctuation is cut earlier,
 *     where TOK_MAX_SYMBOLS would overflow (still at a character boundary). The firmware
 *     does not use them: it streams (tok_stream_*, below), with no input limit.
 *
 * Worst cases (N = TOK_MAX_INPUT_BYTES, default 2048)
 *   - work buffer: sizeof(tok_work_t) = (3N + 3) + 2 (N + 2) + 4 (N + 1) bytes (16-bit offsets,
 *     used while N <= 21844): 18,444 bytes for N = 2048. Put it in static storage, not on a small
 *     stack. The functions themselves use a few dozen bytes of stack (no recursion; no arrays but
 *     tok_piece_id's 256-byte copy of the piece).
 *   - normalized text <= 3N bytes (U+FFFD for each ill-formed byte), BPE symbols <= N + 1.
 *   - time: O(N log M) for decoding + normalization (M ~ 170 map entries, binary search), then
 *     BPE per segment (a segment starts at each "▁" when the vocabulary allows it, see
 *     tok_tables.split_at_space): O(s^2) for a segment of s characters, each merge step being a
 *     linear scan plus two hash look-ups. Ordinary text has short segments (words), so the cost
 *     is ~linear; the pathological worst case is one N-character word: ~N^2/2 = 2.1M scan steps
 *     for N = 2048.
 *
 * Output
 *   - tok_encode keeps the first max_ids ids (Tokenizer.truncate with truncate="head");
 *     tok_encode_tail keeps the last max_ids (truncate="tail"). Both return the number written
 *     and, if info != NULL, the untruncated count. ids may be NULL when max_ids == 0 (count only).
 *
 * Streaming (tok_stream_*: what the firmware console uses; no input limit)
 *   tok_stream_init, then tok_stream_feed with the bytes as they arrive (any split: a UTF-8
 *   sequence may straddle two calls), then tok_stream_finish. RAM: sizeof(tok_stream_t), about
 *   7 * TOK_STREAM_BYTES + 100 bytes (1,872 B for the default 256 on a 32-bit target,
 *   1,896 B on a 64-bit host),
 *   independent of the input's length. The result is exactly tok_encode's (= Python's
 *   Tokenizer.encode + truncate) on the whole input, however long, except after a forced split
 *   (below), which real text never needs.
 *   How: decoding and normalization are per character, with one pending-separator flag and up to
 *   3 pending bytes of an incomplete UTF-8 sequence. Normalized words go, escaped ("▁" + word),
 *   into buf[TOK_STREAM_BYTES]; when tok_tables.split_at_space is set no merge crosses a "▁", so
 *   each word is encoded (and dropped from buf) as soon as it ends (after the stopword check).
 *   When buf is full (a word of more than TOK_STREAM_BYTES - 1 bytes; the longest word of the
 *   33,000 reviews checked has 149) its first part is encoded at the last split point that cannot
 *   change the ids:
 *     1. before a "▁" (literal U+2581 in the text), when split_at_space;
 *     2. between two characters x y (searched from the end down to TOK_STREAM_BYTES / 2) such
 *        that the bytes of x y occur in no piece of the vocabulary: then no merge ever joins
 *        the two sides, and BPE (best pair first, leftmost on ties) on each side alone makes the
 *        same merges as on the whole. (Found by a scan of the pieces, 4 results cached.)
 *   Otherwise (e.g. 300 letters "hahaha..." without a space) buf is encoded as it is: a forced
 *   split, counted in forced_splits; ids around it may then differ from Python's.
 *   With split_at_space = 0 (or -DTOK_NEVER_SPLIT) words are not encoded one by one: buf holds
 *   several and is split by rule 2 (or forced) when full.
 *   Time: per input byte O(log M) decoding/normalization; BPE per word O(s^2) (s <= 256 chars);
 *   a rule-2 search costs at most TOK_STREAM_BYTES / 2 scans of the pieces (~26 KB) per
 *   TOK_STREAM_BYTES / 2 input bytes, only for words longer than the buffer.
 *   Stopword removal needs stopwords shorter than TOK_STREAM_BYTES - 1 bytes without "▁".
 */
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest input read by tok_encode, in bytes. Override at build time (-DTOK_MAX_INPUT_BYTES=...);
 * the same value must be used for every file that includes this header. */
#ifndef TOK_MAX_INPUT_BYTES
#define TOK_MAX_INPUT_BYTES 2048
#endif

/* Normalized text of one input: <= 3 bytes per input byte; +3 for the dummy "▁" prefix. */
#define TOK_BUF_BYTES (3 * (TOK_MAX_INPUT_BYTES) + 3)
/* BPE symbols: <= 1 code point per input byte, + the dummy prefix. */
#define TOK_MAX_SYMBOLS ((TOK_MAX_INPUT_BYTES) + 1)

#if TOK_BUF_BYTES <= 65535
typedef uint16_t tok_off_t;
#else
typedef uint32_t tok_off_t;
#endif

/* Scratch memory for one call; contents are meaningless between calls. */
typedef struct {
    char buf[TOK_BUF_BYTES];             /* normalized text, then the escaped BPE input */
    tok_off_t start[TOK_MAX_SYMBOLS + 1]; /* byte offset of each symbol of a segment (+ end) */
    uint16_t id[TOK_MAX_SYMBOLS];         /* piece id of each symbol, TOK_NONE if not a piece */
    uint16_t pair[TOK_MAX_SYMBOLS];       /* id of symbol i + symbol i+1 merged, or TOK_NONE */
} tok_work_t;

#define TOK_NONE 0xFFFFu

typedef struct {
    size_t n_ids;            /* untruncated number of ids */
    bool ids_truncated;      /* n_ids > max_ids */
    size_t input_bytes_used; /* bytes of the input that were tokenized */
    bool input_cut;          /* input_bytes_used < len (input longer than TOK_MAX_INPUT_BYTES) */
} tok_info_t;

/* Ids of utf8[0:len] (see above), first max_ids of them; returns how many were written. */
size_t tok_encode(const char *utf8, size_t len, int32_t *ids, size_t max_ids, tok_work_t *work,
                  tok_info_t *info);

/* Same, keeping the last max_ids ids (truncate="tail"). */
size_t tok_encode_tail(const char *utf8, size_t len, int32_t *ids, size_t max_ids,
                       tok_work_t *work, tok_info_t *info);

/* Normalization spec v1 or v2 (the tables' version; plus stopword removal when `stopwords`) of
 * utf8[0:len], written to out (not NUL-terminated); returns its length. Reads whole decoding
 * units while their output fits in out_cap (out_cap >= 3 * len + 1 always suffices: v2's " . "
 * adds at most one space per input byte); *consumed (if not NULL) gets the number of input bytes
 * read. Equals Python's normalize(utf8[:consumed].decode("utf-8",
 * "replace")) (then remove_stopwords when asked). */
size_t tok_normalize(const char *utf8, size_t len, char *out, size_t out_cap, bool stopwords,
                     size_t *consumed);

/* sizeof(tok_work_t) and TOK_MAX_INPUT_BYTES of this build (for bindings). */
size_t tok_work_size(void);
size_t tok_max_input_bytes(void);

/* ------------------------------------------------------------------ nothing to judge */

/* pipeline.text.tokenizer.NO_WORDS and ONLY_UNKNOWN, word for word (predict prints them). */
#define TOK_NO_WORDS "no words to judge"
#define TOK_ONLY_UNKNOWN "no known words: every character is one the tokenizer does not know"

/* Id of the normal piece with exactly the bytes piece[0..len), or the <unk> id when the
 * vocabulary has none: SentencePiece's piece_to_id for the pieces BPE can emit (the hash look-up
 * of the tables; control pieces such as <unk> are not in it). */
int32_t tok_piece_id(const char *piece, size_t len);

/* Id of the bare "▁" piece (Tokenizer.space_id): tok_piece_id("▁"). */
int32_t tok_space_id(void);

/* pipeline.text.tokenizer.no_verdict_reason: NULL when ids[0..n) (the ids the model reads) hold
 * an id other than <unk> and space_id; else TOK_ONLY_UNKNOWN when one of them is <unk> (emoji,
 * other scripts, invalid bytes), TOK_NO_WORDS when none is (no ids: empty after normalization,
 * e.g. only NUL, control or zero-width characters). */
const char *tok_no_verdict_reason(const int32_t *ids, size_t n, int32_t space_id);

/* ------------------------------------------------------------------ streaming */

/* Bytes of normalized, escaped text held at once (a word longer than this is split, see above).
 * Override at build time (-DTOK_STREAM_BYTES=...), 64..65535, same value for every file. */
#ifndef TOK_STREAM_BYTES
#define TOK_STREAM_BYTES 256
#endif
#if TOK_STREAM_BYTES < 64 || TOK_STREAM_BYTES > 65535
#error "TOK_STREAM_BYTES must be in 64..65535"
#endif

/* Where ids go: the first max_ids, or the last max_ids in a ring (tail). Private. */
typedef struct {
    int32_t *ids;
    size_t max_ids;
    size_t count; /* ids produced so far (untruncated) */
    bool tail;
    bool prev_unk;
} tok_ids_t;

/* One cached rule-2 answer: are the bytes of a character pair in no piece? Private. */
typedef struct {
    uint8_t n; /* 0: empty */
    uint8_t safe;
    char bytes[8];
} tok_pair_memo_t;

/* State of one streamed input. All fields are private; read results with tok_stream_finish. */
typedef struct {
    tok_ids_t out;
    size_t bytes_in;        /* bytes fed */
    uint32_t forced_splits; /* splits that may change ids (see above) */
    uint16_t len;           /* bytes in buf */
    uint16_t word_start;    /* offset in buf of the current word's "▁" */
    bool in_word;           /* a word is open (its end not seen yet) */
    bool word_flushed;      /* part of the current word was encoded already */
    bool finished;
    uint8_t n_pend;         /* bytes of an incomplete UTF-8 sequence in pend */
    unsigned char pend[4];
    uint8_t memo_next;
    tok_pair_memo_t memo[4];
    char buf[TOK_STREAM_BYTES];              /* escaped normalized text not encoded yet */
    tok_off_t start[TOK_STREAM_BYTES + 1];   /* BPE scratch, as in tok_work_t */
    uint16_t id[TOK_STREAM_BYTES];
    uint16_t pair[TOK_STREAM_BYTES];
} tok_stream_t;

/* Starts a stream whose ids go to ids[0..max_ids) (the first max_ids, or with tail the last
 * max_ids); ids may be NULL when max_ids == 0 (count only). */
void tok_stream_init(tok_stream_t *s, int32_t *ids, size_t max_ids, bool tail);

/* Feeds data[0..len) (any split of the input gives the same result). Ignored after finish. */
void tok_stream_feed(tok_stream_t *s, const char *data, size_t len);

/* Ends the input: encodes what is pending, puts tail ids in order, and returns how many ids were
 * written; info (if not NULL) gets n_ids (untruncated), ids_truncated, input_bytes_used (all
 * bytes fed) and input_cut = false. Calling it again returns the same. */
size_t tok_stream_finish(tok_stream_t *s, tok_info_t *info);

/* Forced splits so far (0: the ids are exactly Python's). */
uint32_t tok_stream_forced_splits(const tok_stream_t *s);

/* sizeof(tok_stream_t) and TOK_STREAM_BYTES of this build (for bindings). */
size_t tok_stream_size(void);
size_t tok_stream_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* TOKENIZER_H */
