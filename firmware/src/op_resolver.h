/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 99b9c4aacd27adadb23a7230c3d4a26641ad89348059a5e6523eb6f8de721270)
 *     models/release/head.tflite (sha256 07f165759d98ec9ca16c68dcfa3626610e9c81e3995d568fc6a193b7a2799254)
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
