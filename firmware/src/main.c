/*
 * ESP-IDF entry point: the console (console.c) on the console UART. Bytes typed in the serial
 * monitor go to console_feed; its output goes back to the same UART. The tensor arena and the
 * interpreters are set up once here (tflm_model.cc), before the first prompt.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "console.h"
#include "driver/uart.h"
#include "esp_chip_info.h"
#include "esp_heap_caps.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"
#include "tflm_model.h"

#if ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 3, 0)
#error "tinysent needs ESP-IDF >= 5.3 (the esp_driver_uart component; see src/idf_component.yml)"
#endif

/* The console is the primary ESP-IDF console UART (sdkconfig.defaults: CONFIG_ESP_CONSOLE_UART_DEFAULT).
 * A primary console on USB-Serial-JTAG, USB CDC or none is not served: stop the build rather than
 * read a UART nobody is wired to. (A *secondary* USB-Serial-JTAG console, the ESP32-C3/S3 default,
 * is fine: the reviews come in on the UART.) */
#if !defined(CONFIG_ESP_CONSOLE_UART) || !defined(CONFIG_ESP_CONSOLE_UART_NUM)
#error "tinysent's console needs CONFIG_ESP_CONSOLE_UART (UART default or custom) as the primary console; USB-Serial-JTAG / USB CDC consoles are not supported (sdkconfig.defaults)"
#elif CONFIG_ESP_CONSOLE_UART_NUM < 0
#error "CONFIG_ESP_CONSOLE_UART_NUM is negative: no console UART to read reviews from"
#else
#define CONSOLE_UART CONFIG_ESP_CONSOLE_UART_NUM
#endif
#define RX_BUFFER 1024 /* a 2 KB pasted line at 115200 baud arrives while we read; no loss */

static const char *TAG = "tinysent";
static console_t con; /* about 4.2 KB on a 32-bit target (streaming tokenizer state, ids; console.h) */

static void uart_out(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    uart_write_bytes(CONSOLE_UART, data, len);
}

static uint64_t now_us(void *ctx)
{
    (void)ctx;
    return (uint64_t)esp_timer_get_time();
}

static void describe(void *ctx, char *buf, size_t cap)
{
    esp_chip_info_t chip;
    (void)ctx;
    esp_chip_info(&chip);
    snprintf(buf, cap,
             "%s rev %d.%d, %d core(s), ESP-IDF %s, TFLM with ESP-NN; arena in use: step %lu B, "
             "head %lu B; free heap %lu B",
             CONFIG_IDF_TARGET, chip.revision / 100, chip.revision % 100, chip.cores,
             esp_get_idf_version(), (unsigned long)tflm_arena_used(0),
             (unsigned long)tflm_arena_used(1), (unsigned long)esp_get_free_heap_size());
}

void app_main(void)
{
    static uint8_t rx[64];
    char err[160] = "";
    const sent_model_t *model;
    console_io_t io;

    ESP_ERROR_CHECK(uart_driver_install(CONSOLE_UART, RX_BUFFER, 0, 0, NULL, 0));
    model = tflm_model_init(err, sizeof err);
    if (model == NULL) ESP_LOGE(TAG, "model: %s", err);
    ESP_LOGI(TAG, "arena %lu B (step %lu + head %lu in use), free heap %lu B",
             (unsigned long)SENT_ARENA_BYTES, (unsigned long)tflm_arena_used(0),
             (unsigned long)tflm_arena_used(1), (unsigned long)esp_get_free_heap_size());
    fflush(stdout);

    memset(&io, 0, sizeof io);
    io.write = uart_out;
    io.now_us = now_us;
    io.describe = describe;
    io.echo = 1; /* pio device monitor does not echo locally */
    io.crlf = 1;
    io.can_quit = 0; /* `quit` prints how to leave the terminal: the board has nothing to exit to */
    console_init(&con, &io, model);
    console_start(&con);
    for (;;) {
        /* returns what arrived within 20 ms (at least one tick): echo stays prompt, and the
         * task blocks, so the idle task and the watchdog are served */
        int n = uart_read_bytes(CONSOLE_UART, rx, sizeof rx, pdMS_TO_TICKS(20) + 1);
        if (n > 0) console_feed(&con, rx, (size_t)n);
    }
}
