#pragma once
#include <stdint.h>
#include "esp_err.h"
uint32_t esp_get_free_heap_size(void);
