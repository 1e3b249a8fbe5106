/* Portable C99 tokenizer: see tokenizer.h for the contract, pipeline/text/tokenizer.py for the spec. */
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

/* "▁" (U+2581), SentencePiece's escaped space, in UTF-8 (the API) and as BPE sees it: the tables
 * and the BPE buffers write it as the one byte SP (tokenizer_tables.h), which normalized text
 * never holds (its spaces are what becomes "▁"). */
static const char kSpace[3] = {'\xE2', '\x96', '\x81'};
#define SP ' '

/* in[0:n) as BPE holds it: each "▁" (UTF-8) becomes SP; at most cap bytes go to out, and *used
 * (if not NULL) gets the input bytes read. out may be in (it never runs ahead of the reading). */
static size_t escape_spaces(char *out, size_t cap, const char *in, size_t n, size_t *used)
{
    size_t i = 0, o = 0;
    while (i < n && o < cap) {
        if (n - i >= 3 && in[i] == kSpace[0] && in[i + 1] == kSpace[1] && in[i + 2] == kSpace[2]) {
            out[o++] = SP;
            i += 3;
        } else {
            out[o++] = in[i++];
        }
    }
    if (used != NULL) *used = i;
    return o;
}

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

/* Spec v2's characters that stand apart as words (pipeline.text.tokenizer.APART). */
static bool stands_apart(char c)
{
    return c == '.' || c == ',' || c == '!' || c == '?' || c == ';' || c == ':' || c == '(' ||
           c == ')' || c == '"';
}

/* What normalization writes for one decoding unit u[0:k) of code point cp (INVALID if
 * ill-formed): as Python, an ill-formed unit is U+FFFD, then the rules apply; a code point
 * without a rule is kept as it is. Spec v2 then makes each apostrophe a separator and sets each
 * stands_apart() character between two separators, writing into apart (UNIT_MAX bytes). Sets
 * *rep and returns its length in bytes. */
#define UNIT_MAX 9 /* a rule writes <= 3 bytes; v2 at most triples them */
static size_t unit_output(const unsigned char *u, size_t k, uint32_t cp, const char **rep,
                          char apart[UNIT_MAX])
{
    const tok_norm_rule_t *r = find_rule(cp == INVALID ? 0xFFFDu : cp);
    const char *src;
    size_t n, i, o = 0;
    if (r != NULL) {
        src = r->out;
        n = r->len;
    } else if (cp == INVALID) {
        src = "\xEF\xBF\xBD";
        n = 3;
    } else {
        src = (const char *)u;
        n = k;
    }
    if (T->normalization_version < 2) {
        *rep = src;
        return n;
    }
    for (i = 0; i < n; i++) {
        if (src[i] == '\'') {
            apart[o++] = ' ';
        } else if (stands_apart(src[i])) {
            apart[o++] = ' ';
            apart[o++] = src[i];
            apart[o++] = ' ';
        } else {
            apart[o++] = src[i];
        }
    }
    *rep = apart;
    return o;
}

/* ------------------------------------------------------------------ normalization */

/* Decode + normalize in[0:len] into out. Whole units are read while they end at or before
 * in_limit and their output fits: `cap` bounds the output size where each space counts
 * `space_cost` bytes (3 when spaces will later become "▁"), and `max_chars` (0: no bound) the
 * number of characters written, spaces included (spec v1 writes at most one per input byte; v2
 * up to two). Returns the output length. */
static size_t normalize_into(const char *in, size_t len, size_t in_limit, char *out, size_t cap,
                             size_t space_cost, size_t max_chars, size_t *consumed)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t pos = 0, o = 0, cost = 0, chars = 0;
    bool pending = false; /* a separator run waits to be written as one space */

    while (pos < len) {
        uint32_t cp;
        size_t k = decode_unit(s + pos, len - pos, &cp);
        const char *rep;
        char apart[UNIT_MAX];
        size_t rl, i, need = 0, need_chars = 0;
        bool pend = pending, started = o > 0;

        if (k > in_limit - pos) break;
        rl = unit_output(s + pos, k, cp, &rep, apart);
        /* exact output cost of this unit, so that nothing is written past cap */
        for (i = 0; i < rl; i++) {
            if (rep[i] == ' ') {
                if (started) pend = true;
            } else {
                if (pend) {
                    need += space_cost;
                    need_chars++;
                }
                pend = false;
                need += 1;
                if (((unsigned char)rep[i] & 0xC0u) != 0x80u) need_chars++;
                started = true;
            }
        }
        if (need > cap - cost) break;
        if (max_chars > 0 && need_chars > max_chars - chars) break;
        chars += need_chars;
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
    size_t n = normalize_into(utf8, len, len, out, out_cap, 1, 0, consumed);
    return stopwords ? drop_stopwords(out, n) : n;
}

/* ------------------------------------------------------------------ BPE */

/* Id of the NORMAL piece with bytes p[0:n), or TOK_NONE (tokenizer_tables.h: chained hash). */
static uint16_t lookup(const char *p, size_t n)
{
    uint32_t h = 2166136261u, k, end;
    size_t i;
    if (n == 0 || n > T->max_piece_bytes) return TOK_NONE;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    h &= T->n_buckets - 1;
    end = T->bucket[h + 1];
    for (k = T->bucket[h]; k < end && T->piece_len[k] <= n; k++) { /* by length in a bucket */
        if (T->piece_len[k] == n) { /* pieces are short: a byte loop beats a memcmp call */
            const char *q = T->pool + T->piece_off[k];
            for (i = 0; i < n && q[i] == p[i]; i++) continue;
            if (i == n) return T->piece_id[k];
        }
    }
    return TOK_NONE;
}

/* lookup() of the UTF-8 piece p[0:n), "▁" written as in the vocabulary (U+2581); a raw SP byte
 * is in no piece. */
static uint16_t lookup_utf8(const char *p, size_t n)
{
    char piece[256]; /* > any piece: max_piece_bytes <= 255 (the export checks) */
    size_t used, m;
    if (memchr(p, SP, n) != NULL) return TOK_NONE;
    m = escape_spaces(piece, sizeof piece, p, n, &used);
    return used < n ? TOK_NONE : lookup(piece, m);
}

#ifdef TOK_TEST_HOOKS
/* Test hook (host builds only): the piece look-up, on UTF-8 pieces. */
uint16_t tok_lookup_piece(const char *p, size_t n);
uint16_t tok_lookup_piece(const char *p, size_t n)
{
    return lookup_utf8(p, n);
}
#endif

static size_t char_len(unsigned char c)
{
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

typedef tok_ids_t emitter_t;

/* The BPE scratch arrays of a tok_work_t or a tok_stream_t. */
typedef struct {
    char *buf;
    tok_off_t *start;
    uint16_t *id;
    uint16_t *pair;
} bpe_t;

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
static uint16_t pair_id(const bpe_t *w, size_t i)
{
    return lookup(w->buf + w->start[i], (size_t)w->start[i + 2] - w->start[i]);
}

/* SentencePiece BPE on buf[a:b]: repeatedly merge the adjacent pair whose merged piece has the
 * best score (leftmost on ties) until no adjacent pair is a piece; then emit the pieces. */
static void bpe_segment(const bpe_t *w, size_t a, size_t b, emitter_t *e)
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
        const uint16_t *rank = T->rank; /* NULL: the id is the rank */
        size_t best = m;
        uint32_t best_rank = 0xFFFFFFFFu;
        for (i = 0; i + 1 < m; i++) {
            uint32_t r, q = w->pair[i];
            if (q == TOK_NONE) continue;
            r = rank != NULL ? rank[q] : q;
            if (r < best_rank) {
                best_rank = r;
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

/* BPE on buf[a:b], segment by segment: a segment ends before each "▁" when merges never cross
 * one (split_at_space). */
static void bpe_range(const bpe_t *w, size_t a, size_t b, emitter_t *e)
{
    while (a < b) {
        size_t c = b;
        if (SPLIT_AT_SPACE) { /* next "▁" after a: merges never cross it */
            for (c = a + 1; c < b && w->buf[c] != SP; c++) continue;
        }
        bpe_segment(w, a, c, e);
        a = c;
    }
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

/* Tail mode: the ring buffer of ids -> chronological order. */
static void unring(emitter_t *e)
{
    if (e->tail && e->count > e->max_ids && e->max_ids > 0) {
        size_t k = e->count % e->max_ids;
        reverse(e->ids, k);
        reverse(e->ids + k, e->max_ids - k);
        reverse(e->ids, e->max_ids);
    }
}

static size_t encode(const char *utf8, size_t len, int32_t *ids, size_t max_ids, tok_work_t *w,
                     tok_info_t *info, bool tail)
{
    emitter_t e;
    bpe_t bw;
    size_t used = 0, n = 0, total, o;

    e.ids = ids;
    e.max_ids = ids != NULL ? max_ids : 0;
    e.count = 0;
    e.tail = tail;
    e.prev_unk = false;

    if (utf8 != NULL && w != NULL) {
        /* normalized text, sized so that it still fits after spaces become "▁" and the prefix */
        n = normalize_into(utf8, len, TOK_MAX_INPUT_BYTES, w->buf, TOK_BUF_BYTES - 3, 3,
                           TOK_MAX_SYMBOLS - 1, &used);
        if (T->stopwords) n = drop_stopwords(w->buf, n);
    }
    if (n > 0) {
        /* escape: spaces are SP already; a literal "▁" becomes SP too (in place, shrinking) */
        o = escape_spaces(w->buf, n, w->buf, n, NULL);
        memmove(w->buf + 1, w->buf, o);
        w->buf[0] = SP; /* dummy prefix */
        total = o + 1; /* <= n + 1 < TOK_BUF_BYTES */
        bw.buf = w->buf;
        bw.start = w->start;
        bw.id = w->id;
        bw.pair = w->pair;
        bpe_range(&bw, 0, total, &e);
    }

    unring(&e);
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

/* ------------------------------------------------------------------ nothing to judge */

int32_t tok_piece_id(const char *piece, size_t len)
{
    uint16_t id = lookup_utf8(piece, len);
    return id == TOK_NONE ? T->unk_id : (int32_t)id;
}

int32_t tok_space_id(void)
{
    return tok_piece_id(kSpace, sizeof kSpace);
}

const char *tok_no_verdict_reason(const int32_t *ids, size_t n, int32_t space_id)
{
    size_t i;
    int unk = 0;
    for (i = 0; i < n; i++) {
        if (ids[i] == T->unk_id) {
            unk = 1;
        } else if (ids[i] != space_id) {
            return NULL;
        }
    }
    return unk ? TOK_ONLY_UNKNOWN : TOK_NO_WORDS;
}

/* ------------------------------------------------------------------ streaming */

#define CAP ((size_t)TOK_STREAM_BYTES)

void tok_stream_init(tok_stream_t *s, int32_t *ids, size_t max_ids, bool tail)
{
    memset(s, 0, offsetof(tok_stream_t, buf)); /* the scratch arrays need no clearing */
    s->out.ids = ids;
    s->out.max_ids = ids != NULL ? max_ids : 0;
    s->out.tail = tail;
}

static bpe_t stream_bpe(tok_stream_t *s)
{
    bpe_t w;
    w.buf = s->buf;
    w.start = s->start;
    w.id = s->id;
    w.pair = s->pair;
    return w;
}

/* Encodes buf[0:f) and drops it from buf. */
static void stream_flush(tok_stream_t *s, size_t f)
{
    bpe_t w = stream_bpe(s);
    bpe_range(&w, 0, f, &s->out);
    memmove(s->buf, s->buf + f, s->len - f);
    s->len = (uint16_t)(s->len - f);
    if (s->in_word) {
        if (f > s->word_start) {
            s->word_flushed = true;
            s->word_start = 0;
        } else {
            s->word_start = (uint16_t)(s->word_start - f);
        }
    }
}

/* Rule 2 of tokenizer.h: true if the bytes p[0:n) (two characters) occur in no piece. */
static bool pair_is_safe(tok_stream_t *s, const char *p, size_t n)
{
    const char *pool = T->pool;
    size_t i, k;
    uint32_t e;
    bool safe = true;
    tok_pair_memo_t *memo;
    for (k = 0; k < 4; k++) {
        if (s->memo[k].n == n && memcmp(s->memo[k].bytes, p, n) == 0) return s->memo[k].safe != 0;
    }
    for (e = 0; e < T->n_pieces && safe; e++) {
        size_t b = (size_t)T->piece_off[e] + T->piece_len[e];
        for (i = T->piece_off[e]; i + n <= b; i++) {
            if (pool[i] == p[0] && memcmp(pool + i, p, n) == 0) {
                safe = false;
                break;
            }
        }
    }
    memo = &s->memo[s->memo_next];
    s->memo_next = (uint8_t)((s->memo_next + 1) % 4);
    memo->n = (uint8_t)n;
    memo->safe = safe;
    memcpy(memo->bytes, p, n);
    return safe;
}

static bool is_lead(char c)
{
    return ((unsigned char)c & 0xC0) != 0x80;
}

/* buf is too full for the next character: encode a first part of it (see tokenizer.h). */
static void stream_make_room(tok_stream_t *s)
{
    size_t len = s->len, f, lo = CAP / 2, hi = len - 1;
    /* stopwords: never split the current word (unless it fills buf: then it is none) */
    bool keep_word = T->stopwords && s->in_word && s->word_start > 0;
    if (keep_word) {
        lo = 1;
        hi = s->word_start;
    }
    if (SPLIT_AT_SPACE && !keep_word) { /* rule 1: before the last "▁" */
        for (f = len - 1; f > 0; f--) {
            if (s->buf[f] == SP) {
                stream_flush(s, f);
                return;
            }
        }
    }
    for (f = hi; f >= lo && f > 0; f--) { /* rule 2, from the end */
        size_t a = f, e = f;
        if (!is_lead(s->buf[f])) continue;
        do a--; while (a > 0 && !is_lead(s->buf[a]));
        e += char_len((unsigned char)s->buf[f]);
        if (e > len) continue;
        if (pair_is_safe(s, s->buf + a, e - a)) {
            stream_flush(s, f);
            return;
        }
    }
    s->forced_splits++;
    stream_flush(s, keep_word ? s->word_start : len);
}

/* Makes room for n more bytes in buf (n <= 7). */
static void stream_room(tok_stream_t *s, size_t n)
{
    while (s->len + n > CAP) stream_make_room(s);
}

static void stream_end_word(tok_stream_t *s)
{
    size_t w = (size_t)s->word_start + 1;
    if (T->stopwords && !s->word_flushed && is_stopword(s->buf + w, s->len - w))
        s->len = s->word_start;
    s->in_word = false;
    if (SPLIT_AT_SPACE) stream_flush(s, s->len);
}

/* Non-space normalized bytes (whole characters, n <= 4); a literal "▁" is stored as SP. */
static void stream_text(tok_stream_t *s, const char *p, size_t n)
{
    if (!s->in_word) {
        stream_room(s, 1 + n);
        s->word_start = s->len;
        s->buf[s->len++] = SP;
        s->in_word = true;
        s->word_flushed = false;
    } else {
        stream_room(s, n);
    }
    s->len = (uint16_t)(s->len + escape_spaces(s->buf + s->len, n, p, n, NULL));
}

/* One decoding unit u[0:k) (code point cp, INVALID if ill-formed): normalization rules 1-5,
 * separators collapsed and stripped by the word logic (a word is open or not). */
static void stream_unit(tok_stream_t *s, const unsigned char *u, size_t k, uint32_t cp)
{
    const char *rep;
    char apart[UNIT_MAX];
    size_t i = 0, rl = unit_output(u, k, cp, &rep, apart);
    while (i < rl) {
        if (rep[i] == ' ') {
            if (s->in_word) stream_end_word(s);
            i++;
        } else {
            size_t j = i;
            while (j < rl && rep[j] != ' ') j++;
            stream_text(s, rep + i, j - i);
            i = j;
        }
    }
}

/* Decodes the pending bytes; an incomplete but so far valid sequence waits unless `final`. */
static void stream_decode(tok_stream_t *s, bool final)
{
    while (s->n_pend > 0) {
        uint32_t cp;
        unsigned char u[4];
        size_t k = decode_unit(s->pend, s->n_pend, &cp);
        if (!final && cp == INVALID && k == s->n_pend && s->pend[0] >= 0xC2 && s->pend[0] <= 0xF4)
            return; /* a lead byte and valid continuations so far: more may come */
        memcpy(u, s->pend, k);
        s->n_pend = (uint8_t)(s->n_pend - k);
        memmove(s->pend, s->pend + k, s->n_pend);
        stream_unit(s, u, k, cp);
    }
}

void tok_stream_feed(tok_stream_t *s, const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    if (s->finished || data == NULL) return;
    s->bytes_in += len;
    for (i = 0; i < len; i++) {
        s->pend[s->n_pend++] = p[i];
        stream_decode(s, false);
    }
}

size_t tok_stream_finish(tok_stream_t *s, tok_info_t *info)
{
    tok_ids_t *e = &s->out;
    if (!s->finished) {
        stream_decode(s, true);
        if (s->in_word) stream_end_word(s);
        stream_flush(s, s->len);
        unring(e);
        s->finished = true;
    }
    if (info != NULL) {
        info->n_ids = e->count;
        info->ids_truncated = e->count > e->max_ids;
        info->input_bytes_used = s->bytes_in;
        info->input_cut = false;
    }
    return e->count < e->max_ids ? e->count : e->max_ids;
}

uint32_t tok_stream_forced_splits(const tok_stream_t *s)
{
    return s->forced_splits;
}

size_t tok_stream_size(void)
{
    return sizeof(tok_stream_t);
}

size_t tok_stream_bytes(void)
{
    return TOK_STREAM_BYTES;
}
