/*
 * Host shim of ESP-IDF's esp_heap_caps.h for the native build of the firmware (firmware/host):
 * the two allocation calls tflm_model.cc makes, on the C library's heap. Capabilities are ignored.
 */
#ifndef TINYSENT_SHIM_ESP_HEAP_CAPS_H
#define TINYSENT_SHIM_ESP_HEAP_CAPS_H

#include <stddef.h>
#include <stdint.h>

#define MALLOC_CAP_8BIT (1u << 2)
#define MALLOC_CAP_INTERNAL (1u << 11)

#ifdef __cplusplus
extern "C" {
#endif

void *heap_caps_malloc(size_t size, uint32_t caps);
void *heap_caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps);

#ifdef __cplusplus
}
#endif

#endif
