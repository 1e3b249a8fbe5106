/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 93e6a34d5cc23c47372171835ff75bd266c22b00cfacd2a4d2bc650e85a70bee)
 *     models/release/head.tflite (sha256 419340931fbf21c40d24e89b9445102a4393044fa88353be543a2d2061c1e66f)
 * Operators of step: TINYSENT_BIGRU.
 * Operators of head: FULLY_CONNECTED LOGISTIC.
 */
#ifndef OP_RESOLVER_H
#define OP_RESOLVER_H

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

/* One registration per distinct operator of the step and head models. */
constexpr unsigned int kSentOpCount = 3;
using SentOpResolver = tflite::MicroMutableOpResolver<kSentOpCount>;

/* Registers every operator both models use: kTfLiteOk, or the first failure. */
TfLiteStatus sent_register_ops(SentOpResolver &resolver);

#endif /* OP_RESOLVER_H */
