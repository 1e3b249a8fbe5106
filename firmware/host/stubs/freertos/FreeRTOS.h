#pragma once
#include <stdint.h>
typedef uint32_t TickType_t;
typedef void *QueueHandle_t;
#define configTICK_RATE_HZ 100
#define pdMS_TO_TICKS(ms) ((TickType_t)(((TickType_t)(ms) * (TickType_t)configTICK_RATE_HZ) / (TickType_t)1000U))
