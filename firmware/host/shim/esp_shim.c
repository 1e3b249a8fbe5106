/* Host implementations of the ESP-IDF calls declared in this folder (see esp_heap_caps.h,
 * esp_timer.h). */
#include <stdlib.h>

#include "esp_heap_caps.h"
#include "esp_timer.h"

void *heap_caps_malloc(size_t size, uint32_t caps)
{
    (void)caps;
    return malloc(size);
}

void *heap_caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps)
{
    /* malloc + manual alignment would leak the offset; C11 aligned_alloc wants size % alignment
     * == 0: round up (the arena is allocated once and never freed) */
    (void)caps;
    if (alignment < sizeof(void *)) alignment = sizeof(void *);
    return aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
}

/* The esp_nn kernels only add these up into their timing statistics (never printed here). A
 * counter instead of a clock: no system call, so instruction counts under QEMU stay close to
 * the board's (where esp_timer_get_time reads a hardware timer in a few dozen instructions). */
int64_t esp_timer_get_time(void)
{
    static int64_t ticks;
    return ++ticks;
}
