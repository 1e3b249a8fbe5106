/*
 * Host test driver of the console (firmware/src/console.c) and the step loop (sentiment.c), for
 * sanitizer builds; not part of the firmware. The model is a deterministic fake with the shapes of
 * model_config.h (tests/test_console.py computes the same numbers in Python and checks the loop
 * against pipeline.device.loop.step_loop_int8):
 *
 *     step: h_fwd[j] = (tok_fwd * 31 + j * 7 + (h_fwd[j] + 128) * 3) % 256 - 128
 *           h_bwd[j] = (tok_bwd * 17 + j * 5 + (h_bwd[j] + 128) * 5) % 256 - 128
 *     head: prob = (sum_j (pooled[j] + 128) * (j + 1)) % 256 - 128
 *
 * Usage: console_host [--echo] [--crlf] [--board] [--chunk N] < input > output
 * Reads stdin to the end, or up to a `quit`/`exit` command, feeding it to the console N bytes at a
 * time (default 7, so that lines and UTF-8 sequences straddle the chunks), then prints the output.
 * --board: `quit` does not end the session (io.can_quit = 0, as on the board). The clock is fake
 * (ms=0).
 * Lines may be of any length (the console tokenizes them as they arrive, in bounded RAM).
 *
 * gcc -std=c99 -Wall -Wextra -Werror -pedantic -fsanitize=address,undefined -Ifirmware/src \
 *     -IGEN/src firmware/host/console_host.c firmware/src/console.c firmware/src/sentiment.c \
 *     firmware/src/tokenizer.c GEN/src/tokenizer_tables.c -lm
 * (GEN: a folder written by `python -m pipeline.export firmware MODEL_DIR --out GEN`, or firmware/.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"

static console_t con;

static int fake_step(void *ctx, const int32_t tokens[2], int8_t *hf, int8_t *hb)
{
    uint32_t j;
    (void)ctx;
    for (j = 0; j < SENT_UNITS; j++) {
        uint32_t f = (uint32_t)tokens[0] * 31u + j * 7u + (uint32_t)(hf[j] + 128) * 3u;
        uint32_t b = (uint32_t)tokens[1] * 17u + j * 5u + (uint32_t)(hb[j] + 128) * 5u;
        hf[j] = (int8_t)((int32_t)(f % 256u) - 128);
        hb[j] = (int8_t)((int32_t)(b % 256u) - 128);
    }
    return 0;
}

static int fake_head(void *ctx, const int8_t *pooled, int8_t *prob)
{
    uint32_t j, s = 0;
    (void)ctx;
    for (j = 0; j < 2 * SENT_UNITS; j++) s += (uint32_t)(pooled[j] + 128) * (j + 1u);
    *prob = (int8_t)((int32_t)(s % 256u) - 128);
    return 0;
}

static void write_out(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    fwrite(data, 1, len, stdout);
}

static uint64_t clock_us(void *ctx)
{
    (void)ctx;
    return 0;
}

static void describe(void *ctx, char *buf, size_t cap)
{
    (void)ctx;
    snprintf(buf, cap, "host driver, fake model");
}

int main(int argc, char **argv)
{
    static const sent_model_t model = {fake_step, fake_head, NULL};
    console_io_t io;
    size_t chunk = 7, n;
    uint8_t *buf;
    int i, board = 0;

    memset(&io, 0, sizeof io);
    io.write = write_out;
    io.now_us = clock_us;
    io.describe = describe;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--echo") == 0) {
            io.echo = 1;
        } else if (strcmp(argv[i], "--crlf") == 0) {
            io.crlf = 1;
        } else if (strcmp(argv[i], "--board") == 0) {
            board = 1;
        } else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc) {
            chunk = strtoul(argv[++i], NULL, 10);
            if (chunk == 0) chunk = 1;
        } else {
            fprintf(stderr, "usage: %s [--echo] [--crlf] [--board] [--chunk N] < input\n", argv[0]);
            return 2;
        }
    }
    io.can_quit = !board;
    buf = malloc(chunk);
    if (buf == NULL) return 1;
    console_init(&con, &io, &model);
    console_start(&con);
    while ((n = fread(buf, 1, chunk, stdin)) > 0)
        if (console_feed(&con, buf, n)) break; /* `quit` */
    free(buf);
    return 0;
}
