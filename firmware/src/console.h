/*
 * The serial console of the firmware, in portable C99 (no heap, no platform headers): line
 * editing over a byte stream, the `help`, `info` and `quit` commands, and one reply line per
 * review:
 *
 *     > Great little speaker, works as described
 *     positive 0.9297 tokens=9 ms=21
 *
 * (label, P(positive) with 4 decimals as `python -m pipeline.predict` prints it, the ids the model
 * read, the milliseconds from the end of the line to the reply on this device), or, for a review
 * the model has nothing to judge in, predict's label and reason (the model does not run):
 *
 *     unknown no words to judge
 *     unknown no known words: every character is one the tokenizer does not know
 *
 * The rule is predict's (pipeline.text.tokenizer.no_verdict_reason, tok_no_verdict_reason here):
 * the ids the model would read hold nothing but <unk> and the bare "▁" piece; the first reason
 * when none is <unk> (the line is empty after normalization: only NUL, control or zero-width
 * characters), the second when one is (emoji, other scripts, invalid bytes).
 *
 * Input bytes
 *   - Enter is LF, CR LF or a lone CR, whichever the terminal sends: each ends the line, and the
 *     LF right after a CR is swallowed (also when the two arrive in different console_feed
 *     calls), so a CR LF is one line end, never two, and every terminal gets one answer per
 *     review. A lone CR has to end a line: PuTTY, screen, picocom and minicom send CR alone for
 *     Enter (`pio device monitor` sends CR LF, the Arduino monitor LF or CR LF). A CR or LF
 *     inside a review therefore ends it there; the host clients (pipeline.console --sim and
 *     --port) send one stdin line as one review with any CR in it replaced by a space, which
 *     gives the same ids (CR and LF are separators of normalization rule 3), and
 *     console_classify (no line framing) treats them as the tokenizer does, as spaces.
 *   - An empty line (or one of only ASCII spaces/tabs) prints nothing but a new prompt. `help`,
 *     `info`, `quit` and `exit` (surrounding spaces ignored) are commands; any other line is a
 *     review. `quit`/`exit` end the session where there is one to end (io.can_quit: the host
 *     builds; console_feed returns 1 and reads no further byte); the board prints how to leave
 *     the terminal instead and goes on.
 *   - Backspace (0x08) and DEL (0x7F) delete the last character (a whole UTF-8 sequence) of the
 *     last CONSOLE_EDIT_BYTES bytes of the line; Ctrl-U clears the line; Ctrl-C (0x03) drops it
 *     (the board prints ^C with echo on, then a new prompt; nothing is classified).
 *     ESC [ ... and ESC O x sequences (arrow and function keys) are skipped; a lone ESC is dropped.
 *   - Every other byte is part of the review, including other control characters and invalid
 *     UTF-8: the tokenizer decodes exactly like Python's bytes.decode("utf-8", "replace") and
 *     drops control characters, so the reply equals predict's on that text.
 *
 * Lines of any length: the console keeps the last CONSOLE_EDIT_BYTES bytes of the line it is
 * given (editable) and hands older bytes to the streaming tokenizer (tokenizer.h, tok_stream_*)
 * as the line grows; the tokenizer keeps the first SENT_MAX_TOKENS ids (the last ones when the
 * release truncates "tail") and counts all of them. So the reply to a line of any length is
 * predict's on the whole line (a note says when the model reads only part of the ids), and the
 * RAM does not grow with it. What this costs: Backspace cannot reach further back than
 * CONSOLE_EDIT_BYTES bytes (it then does nothing; Ctrl-U still clears the whole line), and a
 * word longer than TOK_STREAM_BYTES - 3 bytes that the tokenizer cannot split exactly (no real
 * review needs it; e.g. 300 letters "hahaha...") gets a `note:` that its ids may differ.
 *
 * RAM (static storage): sizeof(console_t) = CONSOLE_EDIT_BYTES + 4 * SENT_MAX_TOKENS +
 * sizeof(tok_stream_t) + ~64 B = 4,240 B on a 32-bit target for the defaults (256 + 2,048 +
 * 1,872 + 64; 4,304 B on a 64-bit host), whatever the line's length. Before (a 2,048-byte line
 * buffer and the one-shot tokenizer's 18,444-byte tok_work_t): 22,584 B. `info` prints it. One
 * review costs the tokenizer's per-byte work as the bytes arrive (tokenizer.h) plus, after the
 * line end, the last word's BPE and at most SENT_MAX_TOKENS step invokes.
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

/* Bytes at the end of a line that Backspace can still delete (older ones are tokenized). */
#ifndef CONSOLE_EDIT_BYTES
#define CONSOLE_EDIT_BYTES 256
#endif
#if CONSOLE_EDIT_BYTES < 8
#error "CONSOLE_EDIT_BYTES must be at least 8"
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
    int can_quit; /* 1: `quit`/`exit` end the session (host builds); 0: the board, which goes on */
} console_io_t;

typedef struct {
    int positive;          /* P >= 0.5 */
    float p;               /* P(positive) */
    uint32_t tokens;       /* ids the model read (<= SENT_MAX_TOKENS) */
    uint32_t tokens_total; /* ids of the whole text */
    uint32_t ms;           /* tokenize + step loop + head */
    /* NULL, or why predict gives no verdict for these ids: TOK_NO_WORDS or TOK_ONLY_UNKNOWN
     * (console_classify still runs the model: p is its answer, as predict's raw predictor). */
    const char *reason;
} console_result_t;

typedef struct {
    console_io_t io;
    const sent_model_t *model; /* NULL: the model failed to load; reviews get an error */
    int esc;                   /* escape sequence state */
    int after_cr;              /* the previous byte was CR (swallow the LF of CR LF) */
    int quit;                  /* a `quit` ended the session (io.can_quit) */
    int32_t space_id;          /* id of the bare "▁" piece (tok_space_id) */
    size_t committed;          /* bytes of the line already given to the tokenizer */
    int committed_text;        /* one of them was not a space or tab */
    size_t edit_start;         /* ring buffer `edit`: index of the oldest byte kept */
    size_t edit_len;           /* bytes kept in `edit` (the end of the line) */
    char edit[CONSOLE_EDIT_BYTES];
    int32_t ids[SENT_MAX_TOKENS];
    tok_stream_t tok; /* the line's tokenizer state */
} console_t;

/* Sets up `con` (no output). io is copied; model must outlive the console (NULL allowed). */
void console_init(console_t *con, const console_io_t *io, const sent_model_t *model);

/* Prints the banner and the first prompt. */
void console_start(console_t *con);

/* Processes input bytes (any split of the stream gives the same output). Returns 1 once a
 * `quit`/`exit` has ended the session (io.can_quit; the bytes after it are not read, and later
 * calls do nothing), else 0. */
int console_feed(console_t *con, const uint8_t *data, size_t len);

/* Classifies text[0..len) (any length) as the console does a review line with these bytes (no
 * line editing, no output): same ids, same answer (out->reason when there is nothing to judge;
 * the model runs anyway, so p is always set). Returns 0, or -1 when there is no model or a
 * model call failed. It shares the line's tokenizer state: a partly typed line is dropped. */
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
