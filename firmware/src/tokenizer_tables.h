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

    /* vocabulary: piece i is pool[off[i] .. off[i+1]) (UTF-8, "▁" for spaces) */
    uint32_t vocab_size;
    const char *pool;
    const uint32_t *off;
    /* merge priority of piece i (0 = merged first; equal scores share a rank) */
    const uint16_t *rank;
    uint32_t max_piece_bytes;

    /* open-addressing hash (FNV-1a 32, linear probing) of the NORMAL pieces:
     * slot -> piece id or 0xFFFF; n_hash is a power of two */
    const uint16_t *hash;
    uint32_t n_hash;

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
