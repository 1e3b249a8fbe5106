/* Portable C99 tokenizer: see tokenizer.h for the contract, pipeline/tokenizer.py for the spec. */
#include "tokenizer.h"

#include <string.h>

#include "tokenizer_tables.h"

#define T (&tok_tables)

/* Test hook: -DTOK_NEVER_SPLIT runs BPE over the whole text at once, as for split_at_space = 0. */
#ifdef TOK_NEVER_SPLIT
#define SPLIT_AT_SPACE 0
#else
#define SPLIT_AT_SPACE (T->split_at_space)
#endif

/* "▁" (U+2581), SentencePiece's escaped space */
static const char kSpace[3] = {'\xE2', '\x96', '\x81'};

/* ------------------------------------------------------------------ UTF-8 decoding */

#define INVALID 0x110000u /* decode_unit's code point for an ill-formed unit */

/* Decode one unit of s[0:n] (n >= 1): a well-formed character, or a maximal subpart of an
 * ill-formed one (*cp = INVALID). Returns its length in bytes (1..4). */
static size_t decode_unit(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t need, i;
    uint32_t v;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4) { /* continuation byte, overlong lead C0/C1, or > U+10FFFF */
        *cp = INVALID;
        return 1;
    }
    if (c < 0xE0) {
        need = 1;
        v = c & 0x1Fu;
    } else if (c < 0xF0) {
        need = 2;
        v = c & 0x0Fu;
        if (c == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else {
        need = 3;
        v = c & 0x07u;
        if (c == 0xF0) lo = 0x90;      /* no overlongs */
        else if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    }
    for (i = 1; i <= need; i++) {
        unsigned b;
        if (i >= n) break;
        b = s[i];
        if (b < lo || b > hi) break;
        v = (v << 6) | (b & 0x3Fu);
        lo = 0x80;
        hi = 0xBF;
    }
    if (i <= need) { /* truncated or bad continuation: the bytes so far are one maximal subpart */
        *cp = INVALID;
        return i;
    }
    *cp = v;
    return need + 1;
}

static const tok_norm_rule_t *find_rule(uint32_t cp)
{
    size_t lo = 0, hi = T->n_norm;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t k = T->norm[mid].cp;
        if (k == cp) return &T->norm[mid];
        if (k < cp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------ normalization */

/* Decode + normalize in[0:len] into out. Whole units are read while they end at or before
 * in_limit and their output fits: `cap` bounds the output size where each space counts
 * `space_cost` bytes (3 when spaces will later become "▁"). Returns the output length. */
static size_t normalize_into(const char *in, size_t len, size_t in_limit, char *out, size_t cap,
                             size_t space_cost, size_t *consumed)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t pos = 0, o = 0, cost = 0;
    bool pending = false; /* a separator run waits to be written as one space */

    while (pos < len) {
        uint32_t cp;
        size_t k = decode_unit(s + pos, len - pos, &cp);
        const tok_norm_rule_t *r;
        const char *rep;
        size_t rl, i, need = 0;
        bool pend = pending, started = o > 0;

        if (k > in_limit - pos) break;
        r = find_rule(cp == INVALID ? 0xFFFDu : cp); /* as Python: U+FFFD, then the rules */
        if (r != NULL) {
            rep = r->out;
            rl = r->len;
        } else if (cp == INVALID) {
            rep = "\xEF\xBF\xBD";
            rl = 3;
        } else {
            rep = in + pos;
            rl = k;
        }
        /* exact output cost of this unit, so that nothing is written past cap */
        for (i = 0; i < rl; i++) {
            if (rep[i] == ' ') {
                if (started) pend = true;
            } else {
                if (pend) need += space_cost;
                pend = false;
                need += 1;
                started = true;
            }
        }
        if (need > cap - cost) break;
        for (i = 0; i < rl; i++) {
            if (rep[i] == ' ') {
                if (o > 0) pending = true;
            } else {
                if (pending) {
                    out[o++] = ' ';
                    cost += space_cost;
                    pending = false;
                }
                out[o++] = rep[i];
                cost += 1;
            }
        }
        pos += k;
    }
    if (consumed != NULL) *consumed = pos;
    return o; /* a pending separator run at the end is dropped (strip) */
}

static bool is_stopword(const char *w, size_t n)
{
    size_t lo = 0, hi = T->n_stop;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *p = T->stop_pool + T->stop_off[mid];
        size_t pn = (size_t)T->stop_off[mid + 1] - T->stop_off[mid];
        int c = memcmp(p, w, pn < n ? pn : n);
        if (c == 0) {
            if (pn == n) return true;
            c = pn < n ? -1 : 1;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* remove_stopwords() in place on normalized text (single spaces, no spaces at the ends). */
static size_t drop_stopwords(char *s, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        size_t e = r;
        while (e < n && s[e] != ' ') e++;
        if (!is_stopword(s + r, e - r)) {
            if (w > 0) s[w++] = ' ';
            memmove(s + w, s + r, e - r);
            w += e - r;
        }
        r = e + 1;
    }
    return w;
}

size_t tok_normalize(const char *utf8, size_t len, char *out, size_t out_cap, bool stopwords,
                     size_t *consumed)
{
    size_t n = normalize_into(utf8, len, len, out, out_cap, 1, consumed);
    return stopwords ? drop_stopwords(out, n) : n;
}

/* ------------------------------------------------------------------ BPE */

static uint16_t lookup(const char *p, size_t n)
{
    uint32_t h = 2166136261u, mask, slot, probes;
    size_t i;
    if (n == 0 || n > T->max_piece_bytes) return TOK_NONE;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    mask = T->n_hash - 1;
    slot = h & mask;
    for (probes = 0; probes < T->n_hash; probes++) {
        uint16_t id = T->hash[slot];
        if (id == TOK_NONE) break;
        if (T->off[id + 1] - T->off[id] == n && memcmp(T->pool + T->off[id], p, n) == 0) return id;
        slot = (slot + 1) & mask;
    }
    return TOK_NONE;
}

static size_t char_len(unsigned char c)
{
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

typedef struct {
    int32_t *ids;
    size_t max_ids;
    size_t count;
    bool tail;
    bool prev_unk;
} emitter_t;

static void emit(emitter_t *e, int32_t id)
{
    bool unk = id == T->unk_id;
    if (unk && e->prev_unk) return; /* SentencePiece merges runs of unknown pieces into one */
    e->prev_unk = unk;
    if (e->tail) {
        if (e->max_ids > 0) e->ids[e->count % e->max_ids] = id;
    } else if (e->count < e->max_ids) {
        e->ids[e->count] = id;
    }
    e->count++;
}

/* Pair id of symbols i and i+1 of the current segment. */
static uint16_t pair_id(const tok_work_t *w, size_t i)
{
    return lookup(w->buf + w->start[i], (size_t)w->start[i + 2] - w->start[i]);
}

/* SentencePiece BPE on buf[a:b]: repeatedly merge the adjacent pair whose merged piece has the
 * best score (leftmost on ties) until no adjacent pair is a piece; then emit the pieces. */
static void bpe_segment(tok_work_t *w, size_t a, size_t b, emitter_t *e)
{
    size_t m = 0, p = a, i;
    while (p < b) {
        size_t l = char_len((unsigned char)w->buf[p]);
        if (l > b - p) l = b - p;
        w->start[m] = (tok_off_t)p;
        w->id[m] = lookup(w->buf + p, l);
        p += l;
        m++;
    }
    w->start[m] = (tok_off_t)b;
    for (i = 0; i + 1 < m; i++) w->pair[i] = pair_id(w, i);

    while (m > 1) {
        size_t best = m;
        uint32_t best_rank = 0xFFFFFFFFu;
        for (i = 0; i + 1 < m; i++) {
            if (w->pair[i] != TOK_NONE && T->rank[w->pair[i]] < best_rank) {
                best_rank = T->rank[w->pair[i]];
                best = i;
            }
        }
        if (best == m) break;
        /* symbol best absorbs symbol best+1 */
        w->id[best] = w->pair[best];
        memmove(&w->start[best + 1], &w->start[best + 2], (m - best - 1) * sizeof w->start[0]);
        memmove(&w->id[best + 1], &w->id[best + 2], (m - best - 2) * sizeof w->id[0]);
        if (best + 3 <= m)
            memmove(&w->pair[best + 1], &w->pair[best + 2], (m - best - 3) * sizeof w->pair[0]);
        m--;
        if (best + 1 < m) w->pair[best] = pair_id(w, best);
        if (best > 0) w->pair[best - 1] = pair_id(w, best - 1);
    }
    for (i = 0; i < m; i++) emit(e, w->id[i] == TOK_NONE ? T->unk_id : (int32_t)w->id[i]);
}

static void reverse(int32_t *v, size_t n)
{
    size_t i;
    for (i = 0; i < n / 2; i++) {
        int32_t t = v[i];
        v[i] = v[n - 1 - i];
        v[n - 1 - i] = t;
    }
}

static size_t encode(const char *utf8, size_t len, int32_t *ids, size_t max_ids, tok_work_t *w,
                     tok_info_t *info, bool tail)
{
    emitter_t e;
    size_t used = 0, n = 0, total, r, o, spaces = 0, a;

    e.ids = ids;
    e.max_ids = ids != NULL ? max_ids : 0;
    e.count = 0;
    e.tail = tail;
    e.prev_unk = false;

    if (utf8 != NULL && w != NULL) {
        /* normalized text, sized so that it still fits after spaces become "▁" and the prefix */
        n = normalize_into(utf8, len, TOK_MAX_INPUT_BYTES, w->buf, TOK_BUF_BYTES - 3, 3, &used);
        if (T->stopwords) n = drop_stopwords(w->buf, n);
    }
    if (n > 0) {
        for (r = 0; r < n; r++) spaces += w->buf[r] == ' ';
        total = 3 + n + 2 * spaces; /* <= TOK_BUF_BYTES by construction of normalize_into */
        /* escape spaces right to left, in place */
        o = total;
        for (r = n; r-- > 0;) {
            if (w->buf[r] == ' ') {
                o -= 3;
                memcpy(w->buf + o, kSpace, 3);
            } else {
                w->buf[--o] = w->buf[r];
            }
        }
        memcpy(w->buf, kSpace, 3); /* dummy prefix */

        a = 0;
        while (a < total) {
            size_t b = total;
            if (SPLIT_AT_SPACE) { /* next "▁" after a: merges never cross it */
                for (b = a + 3; b + 3 <= total; b++) {
                    if (memcmp(w->buf + b, kSpace, 3) == 0) break;
                }
                if (b + 3 > total) b = total;
            }
            bpe_segment(w, a, b, &e);
            a = b;
        }
    }

    if (tail && e.count > e.max_ids && e.max_ids > 0) { /* ring buffer -> chronological order */
        size_t k = e.count % e.max_ids;
        reverse(ids, k);
        reverse(ids + k, e.max_ids - k);
        reverse(ids, e.max_ids);
    }
    if (info != NULL) {
        info->n_ids = e.count;
        info->ids_truncated = e.count > e.max_ids;
        info->input_bytes_used = used;
        info->input_cut = used < len;
    }
    return e.count < e.max_ids ? e.count : e.max_ids;
}

size_t tok_encode(const char *utf8, size_t len, int32_t *ids, size_t max_ids, tok_work_t *work,
                  tok_info_t *info)
{
    return encode(utf8, len, ids, max_ids, work, info, false);
}

size_t tok_encode_tail(const char *utf8, size_t len, int32_t *ids, size_t max_ids,
                       tok_work_t *work, tok_info_t *info)
{
    return encode(utf8, len, ids, max_ids, work, info, true);
}

size_t tok_work_size(void)
{
    return sizeof(tok_work_t);
}

size_t tok_max_input_bytes(void)
{
    return TOK_MAX_INPUT_BYTES;
}
