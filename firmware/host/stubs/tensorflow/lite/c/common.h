#pragma once
#include <stddef.h>
#include <stdint.h>
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteInt8 = 9 } TfLiteType;
typedef union {
    int32_t *i32;
    float *f;
    int8_t *int8;
    void *data;
} TfLitePtrUnion;
typedef struct {
    TfLiteType type;
    TfLitePtrUnion data;
    size_t bytes;
} TfLiteTensor;
