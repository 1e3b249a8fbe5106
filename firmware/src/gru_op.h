/*
 * The TFLM custom operator TINYSENT_BIGRU: one token step of the int8 BiGRU (gru_step.h), as the
 * step model's only operator (layout: pipeline/device/gru.py). The generated op_resolver.cc
 * registers it: resolver.AddCustom("TINYSENT_BIGRU", tinysent_register_bigru()).
 */
#ifndef GRU_OP_H
#define GRU_OP_H

#include "tensorflow/lite/micro/micro_common.h"

#define TINYSENT_BIGRU_NAME "TINYSENT_BIGRU"

/* The operator's registration (static storage; init, prepare, invoke). */
const TFLMRegistration *tinysent_register_bigru(void);

#endif /* GRU_OP_H */
