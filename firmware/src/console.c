/* The serial console; see console.h. */
#include "console.h"

#include <stdio.h>
#include <string.h>

#include "tokenizer_tables.h"

enum { ESC_NONE, ESC_START, ESC_CSI, ESC_SS3 };

static void out(console_t *con, const char *s, size_t n)
{
    if (n > 0) con->io.write(con->io.ctx, s, n);
}

static void puts_(console_t *con, const char *s)
{
    out(con, s, strlen(s));
}

static void newline(console_t *con)
{
    puts_(con, con->io.crlf ? "\r\n" : "\n");
}

static void println(console_t *con, const char *s)
{
    puts_(con, s);
    newline(con);
}

static void prompt(console_t *con)
{
    puts_(con, CONSOLE_PROMPT);
}

size_t console_size(void)
{
    return sizeof(console_t);
}

void console_init(console_t *con, const console_io_t *io, const sent_model_t *model)
{
    memset(con, 0, sizeof *con);
    con->io = *io;
    con->model = model;
}

void console_start(console_t *con)
{
    println(con, "tinysent: review sentiment on " SENT_MODEL_DESC);
    println(con, "Type a review and press Enter ('help' for commands).");
    if (con->model == NULL) println(con, "error: the model did not load (see the boot log)");
    prompt(con);
}

size_t console_format_prob(float p, char buf[16])
{
    /* p has 24 significant bits and 10000 < 2^14, so y is exact in double: the rounding below
     * is Python's (correctly rounded, ties to even) without relying on printf's float support. */
    double y = (double)p * 10000.0;
    int neg = y < 0;
    double a = neg ? -y : y;
    unsigned long whole = (unsigned long)a; /* floor for a >= 0 */
    double frac = a - (double)whole;
    unsigned long units;
    if (frac > 0.5 || (frac == 0.5 && (whole & 1u))) whole++;
    units = whole / 10000u;
    return (size_t)snprintf(buf, 16, "%s%lu.%04lu", neg ? "-" : "", units,
                            whole % 10000u);
}

int console_classify(console_t *con, const char *text, size_t len, console_result_t *res)
{
    tok_info_t info;
    size_t n;
    int8_t q;
    uint64_t t0 = con->io.now_us(con->io.ctx);

    memset(res, 0, sizeof *res);
    if (con->model == NULL) return -1;
    n = SENT_TRUNCATE_TAIL
            ? tok_encode_tail(text, len, con->ids, SENT_MAX_TOKENS, &con->work, &info)
            : tok_encode(text, len, con->ids, SENT_MAX_TOKENS, &con->work, &info);
    if (sent_run(con->model, con->ids, n, &q) != 0) return -1;
    res->p = sent_probability(q);
    res->positive = res->p >= 0.5f;
    res->tokens = (uint32_t)n;
    res->tokens_total = (uint32_t)info.n_ids;
    res->ms = (uint32_t)((con->io.now_us(con->io.ctx) - t0 + 500u) / 1000u);
    return 0;
}

static void cmd_help(console_t *con)
{
    char buf[160];
    println(con, "Type a review (UTF-8) and press Enter; the reply is");
    println(con, "  positive|negative P(positive) tokens=<ids read> ms=<time on this device>");
    snprintf(buf, sizeof buf,
             "The model reads the %s %u tokens; lines are cut at %u bytes.",
             SENT_TRUNCATE_TAIL ? "last" : "first", (unsigned)SENT_MAX_TOKENS,
             (unsigned)CONSOLE_MAX_LINE);
    println(con, buf);
    println(con, "Commands: help (this text), info (model, vocabulary, arena, flash).");
    println(con, "Editing: Backspace deletes a character, Ctrl-U clears the line, Ctrl-C drops it.");
}

static void cmd_info(console_t *con)
{
    char buf[256];
    unsigned long arrays = (unsigned long)SENT_STEP_MODEL_BYTES + SENT_HEAD_MODEL_BYTES;
    println(con, "model: " SENT_MODEL_DESC);
    snprintf(buf, sizeof buf, "  step.tflite %lu B (sha256 %.16s...), head.tflite %lu B (sha256 %.16s...)",
             (unsigned long)SENT_STEP_MODEL_BYTES, SENT_STEP_SHA256,
             (unsigned long)SENT_HEAD_MODEL_BYTES, SENT_HEAD_SHA256);
    println(con, buf);
    println(con, "  ops: " SENT_OPS);
    snprintf(buf, sizeof buf,
             "vocab: %lu pieces (SentencePiece BPE, normalization v%lu); %s %u tokens read; "
             "lines up to %u bytes",
             (unsigned long)tok_tables.vocab_size, (unsigned long)tok_tables.normalization_version,
             SENT_TRUNCATE_TAIL ? "last" : "first", (unsigned)SENT_MAX_TOKENS,
             (unsigned)CONSOLE_MAX_LINE);
    println(con, buf);
    snprintf(buf, sizeof buf,
             "arena: %lu B allocated at start-up (step %lu + head %lu; host-measured minimum %lu + %lu)",
             (unsigned long)SENT_ARENA_BYTES, (unsigned long)SENT_STEP_ARENA_BYTES,
             (unsigned long)SENT_HEAD_ARENA_BYTES, (unsigned long)SENT_STEP_ARENA_MEASURED,
             (unsigned long)SENT_HEAD_ARENA_MEASURED);
    println(con, buf);
    snprintf(buf, sizeof buf, "flash: model arrays %lu B + tokenizer tables %lu B = %lu B", arrays,
             (unsigned long)SENT_TOKENIZER_TABLE_BYTES,
             arrays + (unsigned long)SENT_TOKENIZER_TABLE_BYTES);
    println(con, buf);
    if (con->io.describe != NULL) {
        buf[0] = '\0';
        con->io.describe(con->io.ctx, buf, sizeof buf);
        buf[sizeof buf - 1] = '\0';
        puts_(con, "runtime: ");
        println(con, buf);
    }
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Length of the UTF-8 sequence a lead byte starts (1 for ASCII and invalid bytes). */
static size_t seq_len(unsigned char b)
{
    if (b >= 0xF0 && b <= 0xF4) return 4;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    return 1;
}

/* Drops an incomplete UTF-8 sequence at the end of a cut line; returns the bytes dropped. */
static size_t trim_partial(console_t *con)
{
    size_t i, back;
    for (back = 1; back <= 3 && back <= con->len; back++) {
        unsigned char b = (unsigned char)con->line[con->len - back];
        if ((b & 0xC0) != 0x80) { /* a lead (or ASCII) byte */
            i = con->len - back;
            if (seq_len(b) > back) {
                con->len = i;
                return back;
            }
            return 0;
        }
    }
    return 0;
}

static void review(console_t *con, size_t cut)
{
    console_result_t r;
    char buf[160], p[16];
    if (cut > 0) {
        snprintf(buf, sizeof buf, "note: line cut to its first %lu bytes (%lu more dropped; limit %u)",
                 (unsigned long)con->len, (unsigned long)cut, (unsigned)CONSOLE_MAX_LINE);
        println(con, buf);
    }
    if (console_classify(con, con->line, con->len, &r) != 0) {
        println(con, con->model == NULL ? "error: no model (it did not load at start-up)"
                                        : "error: the model failed (see the log)");
        return;
    }
    if (r.tokens_total > r.tokens) {
        snprintf(buf, sizeof buf, "note: %lu tokens, the model reads the %s %lu",
                 (unsigned long)r.tokens_total, SENT_TRUNCATE_TAIL ? "last" : "first",
                 (unsigned long)r.tokens);
        println(con, buf);
    }
    console_format_prob(r.p, p);
    snprintf(buf, sizeof buf, "%s %s tokens=%lu ms=%lu", r.positive ? "positive" : "negative", p,
             (unsigned long)r.tokens, (unsigned long)r.ms);
    println(con, buf);
}

static void end_line(console_t *con)
{
    size_t a = 0, b, cut = con->dropped;
    if (con->io.echo) newline(con);
    if (cut > 0) cut += trim_partial(con);
    b = con->len;
    while (a < b && is_blank(con->line[a])) a++;
    while (b > a && is_blank(con->line[b - 1])) b--;
    if (cut == 0 && b - a == 4 && memcmp(con->line + a, "help", 4) == 0) {
        cmd_help(con);
    } else if (cut == 0 && b - a == 4 && memcmp(con->line + a, "info", 4) == 0) {
        cmd_info(con);
    } else if (b > a) {
        review(con, cut);
    }
    con->len = 0;
    con->dropped = 0;
    prompt(con);
}

static void erase_char(console_t *con)
{
    size_t i;
    if (con->dropped > 0) { /* dropped bytes were never echoed */
        con->dropped--;
        return;
    }
    if (con->len == 0) return;
    i = con->len - 1;
    while (i > 0 && con->len - i < 4 && ((unsigned char)con->line[i] & 0xC0) == 0x80) i--;
    if (seq_len((unsigned char)con->line[i]) == con->len - i) {
        con->len = i; /* a whole UTF-8 sequence */
    } else {
        con->len--; /* a stray byte */
    }
    if (con->io.echo) puts_(con, "\b \b");
}

static void clear_line(console_t *con)
{
    con->dropped = 0;
    while (con->len > 0) erase_char(con);
}

static void feed_byte(console_t *con, unsigned char c)
{
    int after_cr = con->after_cr;
    con->after_cr = 0;
    /* ESC [ params final (CSI) and ESC O final (SS3) are skipped; any other byte after ESC, and
     * a byte that cannot continue the sequence (a line end, ...), is ordinary input. */
    if (con->esc == ESC_START) {
        con->esc = c == '[' ? ESC_CSI : c == 'O' ? ESC_SS3 : ESC_NONE;
        if (con->esc != ESC_NONE) return;
    } else if (con->esc != ESC_NONE) {
        if (c >= 0x40 && c <= 0x7E) { /* final byte */
            con->esc = ESC_NONE;
            return;
        }
        if (con->esc == ESC_CSI && c >= 0x20 && c <= 0x3F) return; /* parameters */
        con->esc = ESC_NONE;
    }
    switch (c) {
    case '\n':
        if (after_cr) return;
        end_line(con);
        return;
    case '\r':
        con->after_cr = 1;
        end_line(con);
        return;
    case 0x08:
    case 0x7F:
        erase_char(con);
        return;
    case 0x15: /* Ctrl-U */
        clear_line(con);
        return;
    case 0x03: /* Ctrl-C */
        if (con->io.echo) puts_(con, "^C");
        newline(con);
        con->len = 0;
        con->dropped = 0;
        prompt(con);
        return;
    case 0x1B:
        con->esc = ESC_START;
        return;
    default:
        break;
    }
    if (con->len < CONSOLE_MAX_LINE) {
        con->line[con->len++] = (char)c;
        if (con->io.echo) {
            char e = c < 0x20 ? '?' : (char)c; /* keep one screen cell per stored control byte */
            out(con, &e, 1);
        }
    } else {
        con->dropped++;
    }
}

void console_feed(console_t *con, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) feed_byte(con, data[i]);
}
