/*
 * The serial console of the firmware, in portable C99 (no heap, no platform headers): line
 * editing over a byte stream, the `help` and `info` commands, and one reply line per review:
 *
 *     > Great little speaker, works as described
 *     positive 0.9297 tokens=9 ms=21
 *
 * (label, P(positive) with 4 decimals as `python -m pipeline.predict` prints it, the ids the model
 * read, the milliseconds from the end of the line to the reply on this device).
 *
 * Input bytes
 *   - CR, LF or CR LF end a line. An empty line (or one of only ASCII spaces/tabs) prints nothing
 *     but a new prompt. `help` and `info` (surrounding spaces ignored) are commands; any other
 *     line is a review.
 *   - Backspace (0x08) and DEL (0x7F) delete the last character (a whole UTF-8 sequence);
 *     Ctrl-U clears the line; Ctrl-C abandons it. ESC [ ... and ESC O x sequences (arrow and
 *     function keys) are skipped; a lone ESC is dropped.
 *   - Every other byte is part of the review, including other control characters and invalid
 *     UTF-8: the tokenizer decodes exactly like Python's bytes.decode("utf-8", "replace") and
 *     drops control characters, so the reply equals predict's on that text.
 *   - A line longer than CONSOLE_MAX_LINE bytes is cut: the first CONSOLE_MAX_LINE bytes are kept
 *     (less an incomplete UTF-8 sequence at the cut), the rest up to the end of the line is
 *     dropped, and a `note:` line says so before the reply.
 *
 * Worst cases: sizeof(console_t) = CONSOLE_MAX_LINE + sizeof(tok_work_t) + 4 * SENT_MAX_TOKENS +
 * a few words (about 21.5 KB for the defaults): keep it in static storage. One review costs
 * the tokenizer's worst case (tokenizer.h) plus SENT_MAX_TOKENS step invokes.
 */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"
#include "sentiment.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest review line in bytes (the tokenizer's input limit, so it never cuts again). */
#ifndef CONSOLE_MAX_LINE
#define CONSOLE_MAX_LINE TOK_MAX_INPUT_BYTES
#endif
#if CONSOLE_MAX_LINE > TOK_MAX_INPUT_BYTES
#error "CONSOLE_MAX_LINE must not exceed TOK_MAX_INPUT_BYTES"
#endif

#define CONSOLE_PROMPT "> "

typedef struct {
    /* Output bytes (not NUL-terminated). */
    void (*write)(void *ctx, const char *data, size_t len);
    /* Monotonic time in microseconds (for ms=). */
    uint64_t (*now_us)(void *ctx);
    /* One line describing the runtime for `info` (chip, arena in use, ...); may be NULL. */
    void (*describe)(void *ctx, char *buf, size_t cap);
    void *ctx;
    int echo; /* 1: echo what is typed (serial terminals do not echo locally) */
    int crlf; /* 1: end lines with "\r\n" (serial terminals), 0: "\n" */
} console_io_t;

typedef struct {
    int positive;          /* P >= 0.5 */
    float p;               /* P(positive) */
    uint32_t tokens;       /* ids the model read (<= SENT_MAX_TOKENS) */
    uint32_t tokens_total; /* ids of the whole text */
    uint32_t ms;           /* tokenize + step loop + head */
} console_result_t;

typedef struct {
    console_io_t io;
    const sent_model_t *model; /* NULL: the model failed to load; reviews get an error */
    size_t len;                /* bytes of the line kept so far */
    size_t dropped;            /* bytes beyond CONSOLE_MAX_LINE */
    int esc;                   /* escape sequence state */
    int after_cr;              /* the previous byte was CR (swallow the LF of CR LF) */
    char line[CONSOLE_MAX_LINE];
    int32_t ids[SENT_MAX_TOKENS];
    tok_work_t work;
} console_t;

/* Sets up `con` (no output). io is copied; model must outlive the console (NULL allowed). */
void console_init(console_t *con, const console_io_t *io, const sent_model_t *model);

/* Prints the banner and the first prompt. */
void console_start(console_t *con);

/* Processes input bytes (any split of the stream gives the same output). */
void console_feed(console_t *con, const uint8_t *data, size_t len);

/* Classifies text[0..len) as the console does a review line (no output). Returns 0, or -1 when
 * there is no model or a model call failed. */
int console_classify(console_t *con, const char *text, size_t len, console_result_t *out);

/* p as `python -m pipeline.predict` prints it (Python's "%.4f": round half to even on the exact
 * binary value), NUL-terminated; needs at most 16 bytes for |p| < 400000. Returns the length. */
size_t console_format_prob(float p, char out[16]);

/* sizeof(console_t), for bindings. */
size_t console_size(void);

#ifdef __cplusplus
}
#endif

#endif /* CONSOLE_H */
