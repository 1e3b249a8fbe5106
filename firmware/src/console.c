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

/* An empty line: nothing kept, a fresh tokenizer stream. */
static void line_reset(console_t *con)
{
    con->committed = 0;
    con->committed_text = 0;
    con->edit_start = 0;
    con->edit_len = 0;
    tok_stream_init(&con->tok, con->ids, SENT_MAX_TOKENS, SENT_TRUNCATE_TAIL != 0);
}

void console_init(console_t *con, const console_io_t *io, const sent_model_t *model)
{
    memset(con, 0, sizeof *con);
    con->io = *io;
    con->model = model;
    con->space_id = tok_space_id();
    line_reset(con);
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

/* Ends the line's token stream: the counts and predict's no-verdict reason (no model run). */
static void finish_tokens(console_t *con, console_result_t *res)
{
    tok_info_t info;
    size_t n;

    memset(res, 0, sizeof *res);
    n = tok_stream_finish(&con->tok, &info);
    res->tokens = (uint32_t)n;
    res->tokens_total = (uint32_t)info.n_ids;
    res->reason = tok_no_verdict_reason(con->ids, n, con->space_id);
}

/* Runs the model on the line's ids (after finish_tokens; t0: the end of the input). */
static int run_model(console_t *con, uint64_t t0, console_result_t *res)
{
    int8_t q;
    if (con->model == NULL) return -1;
    if (sent_run(con->model, con->ids, res->tokens, &q) != 0) return -1;
    res->p = sent_probability(q);
    res->positive = res->p >= 0.5f;
    res->ms = (uint32_t)((con->io.now_us(con->io.ctx) - t0 + 500u) / 1000u);
    return 0;
}

int console_classify(console_t *con, const char *text, size_t len, console_result_t *res)
{
    uint64_t t0 = con->io.now_us(con->io.ctx);
    int rc;
    line_reset(con);
    tok_stream_feed(&con->tok, text, len);
    finish_tokens(con, res);
    rc = run_model(con, t0, res);
    line_reset(con);
    return rc;
}

static void cmd_help(console_t *con)
{
    char buf[160];
    println(con, "Type a review (UTF-8; the model knows English only) and press Enter. The reply is");
    println(con, "  positive|negative P(positive) tokens=<ids read> ms=<time on this device>");
    println(con, "or, with nothing to judge, pipeline.predict's answer:");
    println(con, "  unknown " TOK_NO_WORDS "   (only control or zero-width characters)");
    println(con, "  unknown " TOK_ONLY_UNKNOWN);
    snprintf(buf, sizeof buf,
             "Lines of any length; the model reads the %s %u tokens. Backspace reaches back %u bytes.",
             SENT_TRUNCATE_TAIL ? "last" : "first", (unsigned)SENT_MAX_TOKENS,
             (unsigned)CONSOLE_EDIT_BYTES);
    println(con, buf);
    println(con, "Enter may be CR, LF or CR LF: one answer per line either way; a CR or LF inside");
    println(con, "a pasted review ends it there (paste each review as one line).");
    println(con, "Commands: help (this text), info (model, vocabulary, arena, flash),");
    println(con, "  quit or exit (end the session; the board itself runs on: leave the terminal).");
    println(con, "Editing: Backspace deletes a character, Ctrl-U clears the line, Ctrl-C drops it");
    println(con, "  (pio device monitor quits on Ctrl-C: Ctrl-T Ctrl-C sends it to the board).");
}

/* `quit`/`exit`: 1 if the session ended (no new prompt). */
static int cmd_quit(console_t *con)
{
    if (con->io.can_quit) {
        println(con, "bye");
        con->quit = 1;
        return 1;
    }
    println(con, "The board runs until it is reset: nothing to quit. Leave the terminal program");
    println(con, "instead (pio device monitor: Ctrl-C; screen: Ctrl-A k; picocom: Ctrl-A Ctrl-X).");
    return 0;
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
             "lines of any length (tokenized as they arrive)",
             (unsigned long)tok_tables.vocab_size, (unsigned long)tok_tables.normalization_version,
             SENT_TRUNCATE_TAIL ? "last" : "first", (unsigned)SENT_MAX_TOKENS);
    println(con, buf);
    snprintf(buf, sizeof buf,
             "arena: %lu B allocated at start-up (step %lu + head %lu; measured minimum %lu + %lu)",
             (unsigned long)SENT_ARENA_BYTES, (unsigned long)SENT_STEP_ARENA_BYTES,
             (unsigned long)SENT_HEAD_ARENA_BYTES, (unsigned long)SENT_STEP_ARENA_MEASURED,
             (unsigned long)SENT_HEAD_ARENA_MEASURED);
    println(con, buf);
    snprintf(buf, sizeof buf, "flash: model arrays %lu B + tokenizer tables %lu B = %lu B", arrays,
             (unsigned long)SENT_TOKENIZER_TABLE_BYTES,
             arrays + (unsigned long)SENT_TOKENIZER_TABLE_BYTES);
    println(con, buf);
    snprintf(buf, sizeof buf, "console RAM: %lu B static (line end %u B, ids %u B, tokenizer %lu B)",
             (unsigned long)sizeof(console_t), (unsigned)CONSOLE_EDIT_BYTES,
             (unsigned)sizeof con->ids, (unsigned long)sizeof(tok_stream_t));
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

/* Byte i (0 = oldest) of the editable end of the line. */
static unsigned char edit_at(const console_t *con, size_t i)
{
    return (unsigned char)con->edit[(con->edit_start + i) % CONSOLE_EDIT_BYTES];
}

/* Gives the editable bytes[0..k) to the tokenizer (at most two pieces of the ring). */
static void commit(console_t *con, size_t k)
{
    while (k > 0) {
        size_t n = CONSOLE_EDIT_BYTES - con->edit_start, i;
        if (n > k) n = k;
        for (i = 0; i < n && !con->committed_text; i++)
            con->committed_text = !is_blank(con->edit[con->edit_start + i]);
        tok_stream_feed(&con->tok, con->edit + con->edit_start, n);
        con->committed += n;
        con->edit_start = (con->edit_start + n) % CONSOLE_EDIT_BYTES;
        con->edit_len -= n;
        k -= n;
    }
}

/* Appends a byte to the line (the oldest editable one goes to the tokenizer when full). */
static void store(console_t *con, unsigned char c)
{
    if (con->edit_len == CONSOLE_EDIT_BYTES) commit(con, 1);
    con->edit[(con->edit_start + con->edit_len) % CONSOLE_EDIT_BYTES] = (char)c;
    con->edit_len++;
}

static void review(console_t *con)
{
    console_result_t r;
    char buf[160], p[16];
    uint64_t t0 = con->io.now_us(con->io.ctx);
    uint32_t forced;
    int rc = 0;
    commit(con, con->edit_len);
    finish_tokens(con, &r);
    if (r.reason == NULL) rc = run_model(con, t0, &r); /* nothing to judge: no model run */
    forced = tok_stream_forced_splits(&con->tok);
    if (forced > 0) {
        snprintf(buf, sizeof buf,
                 "note: %lu split(s) inside a word longer than %u bytes; ids there may differ "
                 "from predict's",
                 (unsigned long)forced, (unsigned)(TOK_STREAM_BYTES - 3));
        println(con, buf);
    }
    if (rc != 0) {
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
    if (r.reason != NULL) {
        puts_(con, "unknown ");
        println(con, r.reason);
        return;
    }
    console_format_prob(r.p, p);
    snprintf(buf, sizeof buf, "%s %s tokens=%lu ms=%lu", r.positive ? "positive" : "negative", p,
             (unsigned long)r.tokens, (unsigned long)r.ms);
    println(con, buf);
}

/* 1 if the line is exactly `word` between blanks. */
static int is_command(const console_t *con, size_t a, size_t b, const char *word)
{
    size_t i, n = strlen(word);
    if (con->committed_text || b - a != n) return 0;
    for (i = 0; i < n; i++)
        if (edit_at(con, a + i) != (unsigned char)word[i]) return 0;
    return 1;
}

static void end_line(console_t *con)
{
    size_t a = 0, b = con->edit_len;
    if (con->io.echo) newline(con);
    while (a < b && is_blank((char)edit_at(con, a))) a++;
    while (b > a && is_blank((char)edit_at(con, b - 1))) b--;
    if (is_command(con, a, b, "help")) {
        cmd_help(con);
    } else if (is_command(con, a, b, "info")) {
        cmd_info(con);
    } else if (is_command(con, a, b, "quit") || is_command(con, a, b, "exit")) {
        if (cmd_quit(con)) {
            line_reset(con);
            return; /* the session is over: no prompt */
        }
    } else if (b > a || con->committed_text) {
        review(con);
    }
    line_reset(con);
    prompt(con);
}

/* Deletes the last character (whole UTF-8 sequence) of the editable end of the line. */
static void erase_char(console_t *con)
{
    size_t i, n = con->edit_len;
    if (n == 0) return; /* nothing, or only bytes already tokenized */
    i = n - 1;
    while (i > 0 && n - i < 4 && (edit_at(con, i) & 0xC0) == 0x80) i--;
    if (seq_len(edit_at(con, i)) == n - i) {
        con->edit_len = i; /* a whole UTF-8 sequence */
    } else {
        con->edit_len--; /* a stray byte */
    }
    if (con->io.echo) puts_(con, "\b \b");
}

static void clear_line(console_t *con)
{
    if (con->committed == 0) {
        while (con->edit_len > 0) erase_char(con);
        return;
    }
    /* part of the line scrolled out of reach: start a fresh one on the screen */
    if (con->io.echo) {
        puts_(con, "^U");
        newline(con);
        prompt(con);
    }
    line_reset(con);
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
        line_reset(con);
        prompt(con);
        return;
    case 0x1B:
        con->esc = ESC_START;
        return;
    default:
        break;
    }
    store(con, c);
    if (con->io.echo) {
        char e = c < 0x20 ? '?' : (char)c; /* keep one screen cell per stored control byte */
        out(con, &e, 1);
    }
}

int console_feed(console_t *con, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len && !con->quit; i++) feed_byte(con, data[i]);
    return con->quit;
}
