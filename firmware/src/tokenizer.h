/*
 * Portable C99 port of pipeline/tokenizer.py: UTF-8 decoding, normalization spec v1, optional
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
 *   - At most TOK_MAX_INPUT_BYTES bytes are read. A longer input is cut at the last character
 *     (decoding unit) boundary at or before TOK_MAX_INPUT_BYTES, so the result equals Python's on
 *     utf8[:info.input_bytes_used]; info.input_cut tells the caller it happened. The device
 *     should cut reviews itself; the ids of a cut review may differ from the full review's.
 *
 * Worst cases (N = TOK_MAX_INPUT_BYTES, default 2048)
 *   - work buffer: sizeof(tok_work_t) = (3N + 3) + 2 (N + 2) + 4 (N + 1) bytes (16-bit offsets,
 *     used while N <= 21844): 18,444 bytes for N = 2048. Put it in static storage, not on a small
 *     stack. The functions themselves use a few dozen bytes of stack (no arrays, no recursion).
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

/* Normalization spec v1 (plus stopword removal when `stopwords`) of utf8[0:len], written to
 * out (not NUL-terminated); returns its length. Reads whole decoding units while their output
 * fits in out_cap (out_cap >= 3 * len + 1 always suffices); *consumed (if not NULL) gets the
 * number of input bytes read. Equals Python's normalize(utf8[:consumed].decode("utf-8",
 * "replace")) (then remove_stopwords when asked). */
size_t tok_normalize(const char *utf8, size_t len, char *out, size_t out_cap, bool stopwords,
                     size_t *consumed);

/* sizeof(tok_work_t) and TOK_MAX_INPUT_BYTES of this build (for bindings). */
size_t tok_work_size(void);
size_t tok_max_input_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* TOKENIZER_H */
