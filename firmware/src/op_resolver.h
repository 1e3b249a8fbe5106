/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 70f0e61359101a603123e3cc675661c24e5350bf1d7b01cd8fbd1339123a797c)
 *     models/release/head.tflite (sha256 1ab1fd5fbac12aa8949292ad251171356f249901b06cd5aebbe483b3c3dcd7cc)
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
