#pragma once
#include <stdlib.h>
typedef int esp_err_t;
#define ESP_OK 0
#define ESP_ERROR_CHECK(x) do { esp_err_t err_ = (x); if (err_ != ESP_OK) abort(); } while (0)
