#pragma once
#define CONFIG_IDF_TARGET "esp32"
#define CONFIG_ESP_CONSOLE_UART_NUM 0
