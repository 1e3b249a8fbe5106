/*
 * Fuzz harness for firmware/src/tokenizer.c (host only, not part of the firmware).
 *
 * libFuzzer (clang >= 6; `apt-get install clang` on Debian), from the repository root, with the
 * committed tables (or tables generated into another folder by `python -m pipeline.export
 * tokenizer TOKENIZER_DIR --out GEN`, then GEN/tokenizer_tables.c):
 *
 *   mkdir -p build/fuzz/corpus
 *   clang -std=c99 -Wall -Wextra -Werror -pedantic -g -O1 \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Ifirmware/src \
 *       firmware/host/fuzz_tokenizer.c firmware/src/tokenizer.c firmware/src/tokenizer_tables.c \
 *       -o build/fuzz/fuzz_tokenizer
 *   cd build/fuzz && nice -n 19 ./fuzz_tokenizer -runs=1000000 -max_len=8192 -seed=1 corpus \
 *       < /dev/null
 *
 * Standalone (any C99 compiler, e.g. gcc with -fsanitize=address,undefined), add
 * -DTOK_STANDALONE_MAIN:
 *
 *   fuzz_tokenizer --random N SEED   N pseudo-random inputs (bytes, UTF-8 mixes, long inputs)
 *   fuzz_tokenizer                   records from stdin, one output line each, for parity tests:
 *       record = u32le length, u32le max_ids (0xFFFFFFFF = all), u8 tail, then the bytes;
 *       line   = "n_ids input_bytes_used:" followed by " id" for each id written.
 *
 * Every input is checked for: ids in [0, vocab), head/tail truncation equal to the prefix/suffix
 * of the full sequence, counts and input cut consistent, normalization idempotent. A failed
 * check aborts (a finding, like a sanitizer report).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_tables.h"

#define MAX_IDS (TOK_MAX_SYMBOLS + 8)
#define NORM_CAP (3 * 4 * TOK_MAX_INPUT_BYTES + 16)

static tok_work_t work;
static int32_t full[MAX_IDS], part[MAX_IDS];
static char norm1[NORM_CAP], norm2[NORM_CAP];

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tokenizer: check failed: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    tok_info_t info, info2;
    size_t n, k, i, cut, n1, n2, used;

    n = tok_encode(s, size, full, MAX_IDS, &work, &info);
    check(n == info.n_ids && !info.ids_truncated, "full encode fits");
    check(info.input_bytes_used <= size && info.input_bytes_used <= TOK_MAX_INPUT_BYTES, "cut");
    check(info.input_cut == (info.input_bytes_used < size), "cut flag");
    check(!info.input_cut || info.input_bytes_used + 4 > TOK_MAX_INPUT_BYTES, "cut late");
    for (i = 0; i < n; i++) check(full[i] >= 0 && (uint32_t)full[i] < tok_tables.vocab_size, "id");

    k = size > 0 ? data[0] % (n + 2) : 0; /* some truncation length, also 0 and > n */
    cut = tok_encode(s, size, part, k, &work, &info2);
    check(cut == (k < n ? k : n) && info2.n_ids == n && info2.ids_truncated == (n > k), "head n");
    check(memcmp(part, full, cut * sizeof full[0]) == 0, "head ids");
    cut = tok_encode_tail(s, size, part, k, &work, &info2);
    check(cut == (k < n ? k : n) && info2.n_ids == n, "tail n");
    check(memcmp(part, full + (n - cut), cut * sizeof full[0]) == 0, "tail ids");
    check(tok_encode(s, size, NULL, 0, &work, &info2) == 0 && info2.n_ids == n, "count only");

    if (size <= 4 * TOK_MAX_INPUT_BYTES) {
        n1 = tok_normalize(s, size, norm1, sizeof norm1, tok_tables.stopwords != 0, &used);
        check(used == size && n1 <= 3 * size, "normalize reads all");
        n2 = tok_normalize(norm1, n1, norm2, sizeof norm2, tok_tables.stopwords != 0, &used);
        check(n2 == n1 && memcmp(norm1, norm2, n1) == 0, "normalize idempotent");
        if (n1 > 0) check(norm1[0] != ' ' && norm1[n1 - 1] != ' ', "stripped");
        /* a small output buffer cuts the input but never overflows */
        n2 = tok_normalize(s, size, norm2, size % 7, false, &used);
        check(n2 <= size % 7 && used <= size, "small normalize buffer");
    }
    return 0;
}

#ifdef TOK_STANDALONE_MAIN

static uint64_t rng_state;

static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static size_t put_utf8(uint8_t *p, uint32_t c)
{
    if (c < 0x80) {
        p[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        p[0] = (uint8_t)(0xC0 | (c >> 6));
        p[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        p[0] = (uint8_t)(0xE0 | (c >> 12));
        p[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        p[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    p[0] = (uint8_t)(0xF0 | (c >> 18));
    p[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    p[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    p[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* code points that exercise the normalization rules, the vocabulary and the decoder */
static uint32_t interesting_cp(void)
{
    static const uint32_t pick[] = {
        ' ', ' ', ' ', 'a', 'e', 't', 'n', 'o', 's', 'A', 'Z', '\'', '"', '.', '!', '?', '\t',
        '\n', '\r', 0, 0x7F, 0x85, 0xA0, 0xAB, 0xB4, 0xC0, 0xD7, 0xDE, 0xDF, 0xE9, 0x2581,
        0x200B, 0x2014, 0x2019, 0x201C, 0x2026, 0x2212, 0x3000, 0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF};
    uint32_t r = rnd() % 8;
    if (r < 5) return 'a' + rnd() % 26;
    if (r < 7) return pick[rnd() % (sizeof pick / sizeof pick[0])];
    r = rnd() % 4;
    if (r == 0) return rnd() % 0x80;
    if (r == 1) return rnd() % 0x800;
    r = rnd() % 0x110000;
    return (r >= 0xD800 && r < 0xE000) ? 0xFFFD : r;
}

static size_t random_input(uint8_t *buf, size_t cap)
{
    size_t len = 0, target;
    uint32_t kind = rnd() % 8;
    target = rnd() % 64;
    if (kind == 0) target = rnd() % (2 * TOK_MAX_INPUT_BYTES + 16); /* long, often cut */
    if (kind == 1) target = TOK_MAX_INPUT_BYTES - 4 + rnd() % 8;  /* around the cut */
    if (target > cap - 4) target = cap - 4;
    while (len < target) {
        uint32_t r = rnd() % 16;
        if (kind == 2 || r == 0) {
            buf[len++] = (uint8_t)rnd(); /* raw byte: ill-formed sequences */
        } else if (r == 1 && len + 4 <= target) { /* a truncated multi-byte sequence */
            uint8_t tmp[4];
            size_t n = put_utf8(tmp, 0x80 + rnd() % 0x10FF80);
            size_t keep = 1 + rnd() % (n > 1 ? n - 1 : 1);
            memcpy(buf + len, tmp, keep);
            len += keep;
        } else if (kind == 3) {
            buf[len++] = (uint8_t)('a' + rnd() % 3); /* one very long word */
        } else {
            uint8_t tmp[4];
            size_t n = put_utf8(tmp, interesting_cp());
            if (len + n > cap) break;
            memcpy(buf + len, tmp, n);
            len += n;
        }
    }
    return len;
}

static int run_random(unsigned long n, unsigned long seed)
{
    static uint8_t buf[2 * TOK_MAX_INPUT_BYTES + 64];
    unsigned long i;
    rng_state = seed * 2654435761ull + 1;
    for (i = 0; i < n; i++) {
        size_t len = random_input(buf, sizeof buf);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("%lu inputs ok\n", n);
    return 0;
}

static int read_exact(void *p, size_t n)
{
    return fread(p, 1, n, stdin) == n;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int run_records(void)
{
    uint8_t hdr[9];
    while (read_exact(hdr, sizeof hdr)) {
        uint32_t len = le32(hdr), max_ids = le32(hdr + 4);
        char *text = malloc(len ? len : 1);
        int32_t *ids;
        tok_info_t info;
        size_t n, i, cap = max_ids == 0xFFFFFFFFu ? MAX_IDS : max_ids;
        if (text == NULL || !read_exact(text, len)) return 1;
        ids = malloc((cap ? cap : 1) * sizeof *ids);
        if (ids == NULL) return 1;
        n = hdr[8] ? tok_encode_tail(text, len, ids, cap, &work, &info)
                   : tok_encode(text, len, ids, cap, &work, &info);
        LLVMFuzzerTestOneInput((const uint8_t *)text, len);
        printf("%lu %lu:", (unsigned long)info.n_ids, (unsigned long)info.input_bytes_used);
        for (i = 0; i < n; i++) printf(" %ld", (long)ids[i]);
        printf("\n");
        free(ids);
        free(text);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--random") == 0)
        return run_random(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    if (argc == 1) return run_records();
    fprintf(stderr, "usage: %s [--random N SEED]  (no argument: records on stdin)\n", argv[0]);
    return 2;
}

#endif /* TOK_STANDALONE_MAIN */
