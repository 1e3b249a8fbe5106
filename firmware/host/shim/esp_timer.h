/*
 * Host shim of ESP-IDF's esp_timer.h for the native build (firmware/host): the esp_nn kernels of
 * esp-tflite-micro time themselves with esp_timer_get_time(); here a counter (esp_shim.c), as
 * they only sum it into timing statistics.
 */
#ifndef TINYSENT_SHIM_ESP_TIMER_H
#define TINYSENT_SHIM_ESP_TIMER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int64_t esp_timer_get_time(void);

#ifdef __cplusplus
}
#endif

#endif
