#pragma once
const char *esp_get_idf_version(void);
