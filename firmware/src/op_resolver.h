/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 6e9acb96d157d82b317cb302cd762ca71d3fdc0a00f7386d48c104d3196a7413)
 *     models/release/head.tflite (sha256 31ab291dc468b9ea64ff5ab5e9b262ad51cffdf1c2e7e92619cfe5a25cc356ec)
 * Operators of step: ADD CAST FULLY_CONNECTED GATHER MUL SPLIT SUB UNPACK.
 * Operators of head: FULLY_CONNECTED LOGISTIC.
 */
#ifndef OP_RESOLVER_H
#define OP_RESOLVER_H

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

/* One registration per distinct operator of the step and head models. */
constexpr unsigned int kSentOpCount = 9;
using SentOpResolver = tflite::MicroMutableOpResolver<kSentOpCount>;

/* Registers every operator both models use: kTfLiteOk, or the first failure. */
TfLiteStatus sent_register_ops(SentOpResolver &resolver);

#endif /* OP_RESOLVER_H */
