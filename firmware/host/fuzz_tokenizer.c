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
 *       record = u32le length, u32le max_ids (0xFFFFFFFF = all), u8 flags, then the bytes;
 *       flags: 1 = tail (keep the last max_ids), 2 = the streaming tokenizer (tok_stream_*, fed
 *       7 bytes at a time, no input limit) instead of tok_encode;
 *       line   = "n_ids input_bytes_used:" followed by " id" for each id written (streaming:
 *       " forced=N" before the colon when N > 0 forced splits happened).
 *
 * Every input is checked for: ids in [0, vocab), head/tail truncation equal to the prefix/suffix
 * of the full sequence, counts and input cut consistent, normalization idempotent; the stream, fed
 * in pieces whose sizes come from the input, equals tok_encode on the bytes tok_encode read
 * (unless it made a forced split) and, on the whole input, keeps head and tail ids consistent with
 * its own full count. A failed check aborts (a finding, like a sanitizer report).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_tables.h"

#define MAX_IDS (TOK_MAX_SYMBOLS + 8)
#define NORM_CAP (3 * 4 * TOK_MAX_INPUT_BYTES + 16)
#define STREAM_IDS (4 * TOK_MAX_INPUT_BYTES + 64) /* ids of the longest random input */

static tok_work_t work;
static tok_stream_t stream;
static int32_t full[MAX_IDS], part[MAX_IDS], sfull[STREAM_IDS], spart[STREAM_IDS];
static char norm1[NORM_CAP], norm2[NORM_CAP];

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tokenizer: check failed: %s\n", what);
        abort();
    }
}

/* Streams data[0:size) in pieces of 1..16 bytes (sizes taken from the data, `salt` varies them);
 * returns the ids written to ids[0:max_ids). */
static size_t stream_in_pieces(const uint8_t *data, size_t size, int32_t *ids, size_t max_ids,
                               bool tail, unsigned salt, tok_info_t *info)
{
    size_t pos = 0;
    tok_stream_init(&stream, ids, max_ids, tail);
    while (pos < size) {
        size_t k = 1 + (size_t)((data[pos] + salt + pos) % 16u);
        if (k > size - pos) k = size - pos;
        tok_stream_feed(&stream, (const char *)data + pos, k);
        pos += k;
    }
    return tok_stream_finish(&stream, info);
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

    /* the stream on the bytes tok_encode read: the same ids, unless a forced split */
    used = info.input_bytes_used;
    cut = stream_in_pieces(data, used, sfull, STREAM_IDS, false, 0, &info2);
    check(info2.n_ids == cut && info2.input_bytes_used == used && !info2.input_cut, "stream n");
    if (tok_stream_forced_splits(&stream) == 0)
        check(cut == n && memcmp(sfull, full, n * sizeof full[0]) == 0, "stream == encode");
    /* the stream on the whole input (no limit): head/tail truncation of its own full count */
    n1 = stream_in_pieces(data, size, sfull, STREAM_IDS, false, 5, &info2);
    check(n1 == info2.n_ids && n1 < STREAM_IDS && info2.input_bytes_used == size, "stream all");
    for (i = 0; i < n1; i++) check(sfull[i] >= 0 && (uint32_t)sfull[i] < tok_tables.vocab_size, "sid");
    k = size > 1 ? data[1] % (n1 + 2) : 0;
    cut = stream_in_pieces(data, size, spart, k, false, 3, &info2);
    check(cut == (k < n1 ? k : n1) && info2.n_ids == n1, "stream head n");
    check(memcmp(spart, sfull, cut * sizeof sfull[0]) == 0, "stream head ids");
    cut = stream_in_pieces(data, size, spart, k, true, 9, &info2);
    check(cut == (k < n1 ? k : n1) && info2.n_ids == n1, "stream tail n");
    check(memcmp(spart, sfull + (n1 - cut), cut * sizeof sfull[0]) == 0, "stream tail ids");
    check(tok_stream_finish(&stream, &info2) == cut && info2.n_ids == n1, "finish twice");

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
    if (kind == 3 || kind == 4) target = rnd() % (2 * TOK_MAX_INPUT_BYTES + 16); /* long words */
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
        } else if (kind == 4) { /* URL-like words of ~500 bytes: the stream's split rules */
            static const char url[] = "abcdefghijklmnopqrstuvwxyz0123456789/.-_?=&%";
            buf[len++] = rnd() % 500 == 0 ? ' ' : (uint8_t)url[rnd() % (sizeof url - 1)];
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
        size_t n, i, cap = max_ids != 0xFFFFFFFFu ? max_ids : (hdr[8] & 2) ? (size_t)len + 2 : MAX_IDS;
        if (text == NULL || !read_exact(text, len)) return 1;
        ids = malloc((cap ? cap : 1) * sizeof *ids);
        if (ids == NULL) return 1;
        uint32_t forced = 0;
        if (hdr[8] & 2) {
            size_t pos = 0;
            tok_stream_init(&stream, ids, cap, (hdr[8] & 1) != 0);
            for (pos = 0; pos < len; pos += 7)
                tok_stream_feed(&stream, text + pos, len - pos < 7 ? len - pos : 7);
            n = tok_stream_finish(&stream, &info);
            forced = tok_stream_forced_splits(&stream);
        } else {
            n = (hdr[8] & 1) ? tok_encode_tail(text, len, ids, cap, &work, &info)
                             : tok_encode(text, len, ids, cap, &work, &info);
        }
        if (len <= 4 * TOK_MAX_INPUT_BYTES) LLVMFuzzerTestOneInput((const uint8_t *)text, len);
        printf("%lu %lu", (unsigned long)info.n_ids, (unsigned long)info.input_bytes_used);
        if (forced > 0) printf(" forced=%lu", (unsigned long)forced);
        printf(":");
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
