/*
 * The firmware on this machine (or on riscv32 under QEMU): the console, step loop and tokenizer of
 * firmware/src with tflm_model.cc on the real TensorFlow Lite Micro (+ esp-nn) sources; main.c's
 * UART loop replaced by stdin/stdout. Built by firmware/host/CMakeLists.txt; driven by
 * pipeline/device/native.py.
 *
 *   sent_host console [--echo] [--crlf]   stdin bytes -> console_feed -> stdout, what the board
 *                                          prints (banner and prompts included); `quit`/`exit`
 *                                          end it (exit 0), as does the end of stdin. Ctrl-C in
 *                                          a terminal (SIGINT, stdin a tty) drops the line: the
 *                                          console gets a 0x03 byte, as on the board
 *   sent_host console --framed ...         the same, one record in, one record out: "<n>\n" + n
 *                                          bytes each way (the banner is the first output record);
 *                                          the record of the input that ended the session with
 *                                          `quit` has the header "<n> quit\n", and the process ends
 *   sent_host batch                        records "<n>\n" + n bytes (any bytes, newlines too) on
 *                                          stdin; one line per record on stdout:
 *                                          label TAB p(%.9g) TAB p(4 decimals) TAB tokens TAB
 *                                          tokens_total TAB reason (console_classify: the console's
 *                                          own path; reason: why predict gives no verdict, or empty)
 *   sent_host probe STEP_BYTES HEAD_BYTES  sets the models up in an arena of that split and runs
 *                                          one review: prints "ok STEP_USED HEAD_USED", exit 0, or
 *                                          "fail REASON", exit 1
 *   sent_host info                         arena sizes, arena in use, build
 *   sent_host bench MODE [N]               for instruction counts (run - "none") under QEMU: reads
 *                                          stdin and sets the models up, then
 *                                          none: nothing more; tok: tokenizes stdin (<= the
 *                                          tokenizer's input limit); step N: N step invokes;
 *                                          run N: sent_run over N ids (step loop, pooling, head);
 *                                          head: one head invoke; review: console_classify(stdin)
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "console.h"
#include "model_config.h"
#include "sentiment.h"
#include "tflm_model.h"
#include "tokenizer.h"

#ifndef SENT_HOST_KERNELS
#define SENT_HOST_KERNELS "?"
#endif
#if defined(__riscv)
#define SENT_HOST_ARCH "riscv32"
#elif defined(__x86_64__)
#define SENT_HOST_ARCH "x86-64"
#elif defined(__aarch64__)
#define SENT_HOST_ARCH "aarch64"
#else
#define SENT_HOST_ARCH "host"
#endif

namespace {

console_t g_con; /* static as on the board (about 4.2 KB on 32-bit, 4.3 KB on 64-bit) */

/* Console output straight to fd 1 (unbuffered: the prompt shows at once), resumed after a
 * signal (the Ctrl-C handler has no SA_RESTART) or a partial write. */
void write_out(void *, const char *data, size_t len)
{
    while (len > 0) {
        const ssize_t n = write(1, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return; /* stdout closed: nothing to tell */
        data += n;
        len -= static_cast<size_t>(n);
    }
}

/* A growable byte buffer (malloc: the riscv32 build links without the C++ library). */
struct Bytes {
    char *data = nullptr;
    size_t size = 0, cap = 0;

    void reserve(size_t n)
    {
        if (n <= cap) return;
        size_t want = cap ? cap : 4096;
        while (want < n) want *= 2;
        char *grown = static_cast<char *>(std::realloc(data, want));
        if (grown == nullptr) {
            std::fprintf(stderr, "sent_host: out of memory\n");
            std::exit(3);
        }
        data = grown;
        cap = want;
    }
    void append(const char *p, size_t n)
    {
        reserve(size + n);
        if (n > 0) std::memcpy(data + size, p, n);
        size += n;
    }
    void resize(size_t n)
    {
        reserve(n);
        size = n;
    }
};

Bytes g_buffer; /* --framed: output of one record */

void write_buffer(void *, const char *data, size_t len)
{
    g_buffer.append(data, len);
}

uint64_t now_us(void *)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

void describe(void *, char *buf, size_t cap)
{
    std::snprintf(buf, cap,
                  "host build (%s) of the firmware: esp-tflite-micro with %s kernels; arena %lu B, "
                  "in use: step %lu B, head %lu B",
                  SENT_HOST_ARCH, SENT_HOST_KERNELS, static_cast<unsigned long>(SENT_ARENA_BYTES),
                  static_cast<unsigned long>(tflm_arena_used(0)),
                  static_cast<unsigned long>(tflm_arena_used(1)));
}

void read_all(FILE *f, Bytes &data)
{
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
}

/* One "<n>\n" + n bytes record; false at a clean end of input. Exits on malformed input. */
bool read_record(Bytes &out)
{
    unsigned long n = 0;
    int c, digits = 0;
    while ((c = std::getchar()) != EOF && c >= '0' && c <= '9') {
        n = n * 10 + static_cast<unsigned long>(c - '0');
        digits++;
    }
    if (c == EOF && digits == 0) return false;
    if (c != '\n' || digits == 0) {
        std::fprintf(stderr, "sent_host: bad record header\n");
        std::exit(2);
    }
    out.resize(n);
    if (n > 0 && std::fread(out.data, 1, n, stdin) != n) {
        std::fprintf(stderr, "sent_host: record cut short\n");
        std::exit(2);
    }
    return true;
}

void write_record(const Bytes &data, bool quit = false)
{
    std::printf(quit ? "%lu quit\n" : "%lu\n", static_cast<unsigned long>(data.size));
    if (data.size > 0) std::fwrite(data.data, 1, data.size, stdout);
    std::fflush(stdout);
}

const sent_model_t *init_model(void)
{
    char err[200] = "";
    const sent_model_t *model = tflm_model_init(err, sizeof err);
    if (model == nullptr) std::fprintf(stderr, "model: %s\n", err);
    return model;
}

volatile sig_atomic_t g_interrupted = 0;

void on_sigint(int)
{
    g_interrupted = 1;
}

void init_console(const sent_model_t *model, bool echo, bool crlf, bool framed)
{
    console_io_t io;
    std::memset(&io, 0, sizeof io);
    io.write = framed ? write_buffer : write_out;
    io.now_us = now_us;
    io.describe = describe;
    io.echo = echo ? 1 : 0;
    io.crlf = crlf ? 1 : 0;
    io.can_quit = 1; /* a process: `quit` ends it */
    console_init(&g_con, &io, model);
}

int run_console(int argc, char **argv)
{
    bool echo = false, crlf = false, framed = false;
    for (int i = 2; i < argc; i++) {
        if (!std::strcmp(argv[i], "--echo")) echo = true;
        else if (!std::strcmp(argv[i], "--crlf")) crlf = true;
        else if (!std::strcmp(argv[i], "--framed")) framed = true;
        else {
            std::fprintf(stderr, "sent_host console: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!framed && isatty(0)) {
        /* Ctrl-C in a terminal: the terminal dropped the typed line; the console drops what it
         * holds and prompts again, as the board does on 0x03. Installed before the first prompt
         * (a Ctrl-C typed at it must not kill the process); no SA_RESTART: read returns. */
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, nullptr);
    }
    init_console(init_model(), echo, crlf, framed);
    console_start(&g_con);
    if (framed) {
        write_record(g_buffer);
        Bytes in;
        while (read_record(in)) {
            g_buffer.size = 0;
            const int quit = console_feed(&g_con, reinterpret_cast<const uint8_t *>(in.data), in.size);
            write_record(g_buffer, quit != 0);
            if (quit) break;
        }
        return 0;
    }
    std::fflush(stdout);
    char buf[4096];
    static const uint8_t ctrl_c = 0x03;
    for (;;) {
        int quit;
        if (g_interrupted) {
            g_interrupted = 0;
            quit = console_feed(&g_con, &ctrl_c, 1);
        } else {
            /* read(2) returns what has arrived without waiting for a full buffer (interactive) */
            const ssize_t n = read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            quit = console_feed(&g_con, reinterpret_cast<const uint8_t *>(buf), static_cast<size_t>(n));
        }
        std::fflush(stdout);
        if (quit) break;
    }
    return 0;
}

int run_batch(void)
{
    const sent_model_t *model = init_model();
    init_console(model, false, false, false);
    Bytes in;
    char p4[16];
    while (read_record(in)) {
        console_result_t r;
        if (console_classify(&g_con, in.data, in.size, &r) != 0) {
            std::printf("error\n");
        } else {
            console_format_prob(r.p, p4);
            std::printf("%s\t%.9g\t%s\t%lu\t%lu\t%s\n", r.positive ? "positive" : "negative",
                        static_cast<double>(r.p), p4, static_cast<unsigned long>(r.tokens),
                        static_cast<unsigned long>(r.tokens_total),
                        r.reason != nullptr ? r.reason : "");
        }
    }
    std::fflush(stdout);
    return 0;
}

int run_probe(int argc, char **argv)
{
    if (argc < 4) return 2;
    char err[200] = "";
    const size_t step = std::strtoul(argv[2], nullptr, 10), head = std::strtoul(argv[3], nullptr, 10);
    const sent_model_t *model = tflm_model_init_sized(step, head, err, sizeof err);
    if (model == nullptr) {
        std::printf("fail %s\n", err);
        return 1;
    }
    init_console(model, false, false, false);
    static const char text[] = "Great little speaker, the sound is clear. Stopped charging after a week!";
    console_result_t r;
    if (console_classify(&g_con, text, sizeof text - 1, &r) != 0) {
        std::printf("fail invoke\n");
        return 1;
    }
    std::printf("ok %lu %lu\n", static_cast<unsigned long>(tflm_arena_used(0)),
                static_cast<unsigned long>(tflm_arena_used(1)));
    return 0;
}

int run_info(void)
{
    const sent_model_t *model = init_model();
    std::printf("arch %s\nkernels %s\narena_bytes %lu\nstep_arena_bytes %lu\nhead_arena_bytes %lu\n"
                "step_arena_used %lu\nhead_arena_used %lu\nconsole_bytes %lu\nmodel %s\n",
                SENT_HOST_ARCH, SENT_HOST_KERNELS, static_cast<unsigned long>(SENT_ARENA_BYTES),
                static_cast<unsigned long>(SENT_STEP_ARENA_BYTES),
                static_cast<unsigned long>(SENT_HEAD_ARENA_BYTES),
                static_cast<unsigned long>(tflm_arena_used(0)),
                static_cast<unsigned long>(tflm_arena_used(1)),
                static_cast<unsigned long>(sizeof(console_t)), model ? "ok" : "failed");
    return model ? 0 : 1;
}

int32_t bench_id(uint32_t t)
{
    return static_cast<int32_t>(1u + (t * 2654435761u >> 8) % (SENT_VOCAB_SIZE - 1u));
}

int run_bench(int argc, char **argv)
{
    if (argc < 3) return 2;
    const char *mode = argv[2];
    const unsigned long n = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 0;
    Bytes input;
    read_all(stdin, input);
    const sent_model_t *model = init_model();
    if (model == nullptr) return 1;
    static tok_work_t work;
    static int32_t ids[TOK_MAX_INPUT_BYTES + 1];
    int8_t hf[SENT_UNITS], hb[SENT_UNITS], pooled[2 * SENT_UNITS], prob = 0;
    unsigned long result = 0;
    std::memset(hf, 0, sizeof hf);
    std::memset(hb, 0, sizeof hb);
    std::memset(pooled, 0, sizeof pooled);
    if (!std::strcmp(mode, "none")) {
        result = input.size;
    } else if (!std::strcmp(mode, "tok")) {
        tok_info_t info;
        result = tok_encode(input.data, input.size, ids, TOK_MAX_INPUT_BYTES + 1, &work, &info);
    } else if (!std::strcmp(mode, "step")) {
        for (unsigned long t = 0; t < n; t++) {
            const int32_t tokens[2] = {bench_id(static_cast<uint32_t>(t)),
                                       bench_id(static_cast<uint32_t>(n - 1 - t))};
            if (model->step(model->ctx, tokens, hf, hb) != 0) return 1;
        }
        result = static_cast<unsigned long>(static_cast<uint8_t>(hf[0]));
    } else if (!std::strcmp(mode, "run")) {
        int32_t *run_ids = static_cast<int32_t *>(std::malloc((n ? n : 1) * sizeof(int32_t)));
        if (run_ids == nullptr) return 1;
        for (unsigned long t = 0; t < n; t++) run_ids[t] = bench_id(static_cast<uint32_t>(t));
        if (sent_run(model, run_ids, n, &prob) != 0) return 1;
        std::free(run_ids);
        result = static_cast<unsigned long>(static_cast<uint8_t>(prob));
    } else if (!std::strcmp(mode, "head")) {
        if (model->head(model->ctx, pooled, &prob) != 0) return 1;
        result = static_cast<unsigned long>(static_cast<uint8_t>(prob));
    } else if (!std::strcmp(mode, "review")) {
        init_console(model, false, false, false);
        console_result_t r;
        if (console_classify(&g_con, input.data, input.size, &r) != 0) return 1;
        result = r.tokens;
    } else {
        std::fprintf(stderr, "sent_host bench: unknown mode %s\n", mode);
        return 2;
    }
    std::printf("%s %lu\n", mode, result);
    return 0;
}

}  // namespace

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "console";
    if (!std::strcmp(mode, "console")) return run_console(argc, argv);
    if (!std::strcmp(mode, "batch")) return run_batch();
    if (!std::strcmp(mode, "probe")) return run_probe(argc, argv);
    if (!std::strcmp(mode, "info")) return run_info();
    if (!std::strcmp(mode, "bench")) return run_bench(argc, argv);
    std::fprintf(stderr, "usage: sent_host console|batch|probe|info|bench ... (see sent_host.cc)\n");
    return 2;
}
