/*
 * Layout of the tokenizer tables. The data itself (tokenizer_tables.c) is generated for one
 * trained tokenizer by pipeline.export.write_tokenizer_tables; everything is const so that it
 * stays in flash. Swapping the tokenizer means regenerating tokenizer_tables.c only.
 */
#ifndef TOKENIZER_TABLES_H
#define TOKENIZER_TABLES_H

#include <stdint.h>

/* One normalization rule: code point -> UTF-8 replacement of 0..3 bytes (0 = removed).
 * A replacement " " marks a separator (runs collapse to one space, ends are stripped). */
typedef struct {
    uint32_t cp;
    uint8_t len;
    char out[3];
} tok_norm_rule_t;

typedef struct {
    uint32_t normalization_version; /* spec version of pipeline/text/tokenizer.py (1) */

    /* normalization: rules sorted by code point; other code points are kept */
    const tok_norm_rule_t *norm;
    uint32_t n_norm;

    uint32_t vocab_size;

    /* the NORMAL pieces (the only ones BPE produces), as a chained hash: entry k < n_pieces is
     * piece id piece_id[k], bytes pool[piece_off[k] .. piece_off[k] + piece_len[k]) (UTF-8, with
     * "▁" written as the one byte ' ', as tokenizer.c's BPE buffers hold it). Entries are
     * ordered by bucket fnv1a_32(bytes) & (n_buckets - 1), then by length, then by id: bucket b holds entries bucket[b] .. bucket[b + 1] - 1 (n_buckets, a
     * power of two, + 1 starts). The pool stores each byte run once: a piece that occurs inside
     * another (or across two stored next to each other) points there. */
    const char *pool;
    const uint16_t *piece_off;
    const uint8_t *piece_len;
    const uint16_t *piece_id;
    uint32_t n_pieces;
    const uint16_t *bucket;
    uint32_t n_buckets;
    uint32_t max_piece_bytes;
    /* merge priority of piece id i (0 = merged first; equal scores share a rank), or NULL when
     * the priority is the id itself (merge order = id order, checked by the export) */
    const uint16_t *rank;

    int32_t unk_id;
    int32_t pad_id;
    /* 1: no piece has "▁" after its first character, so BPE can run word by word */
    uint8_t split_at_space;

    /* stopwords (sorted bytewise; used when `stopwords` is 1) */
    uint8_t stopwords;
    const char *stop_pool;
    const uint16_t *stop_off;
    uint32_t n_stop;

    /* the model's truncation policy, for the caller: seq_len and 1 if "tail" */
    uint32_t seq_len;
    uint8_t truncate_tail;
} tok_tables_t;

extern const tok_tables_t tok_tables;

#endif /* TOKENIZER_TABLES_H */
