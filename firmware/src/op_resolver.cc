/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 215fa7f08ba689a63a617b1afbf8364d2b2f5b0d5540153ca45babae35d89e16)
 *     models/release/head.tflite (sha256 5390550aa3473d46f750de2de9483c0feb9f206a42dfb6da11ffd7b7fff53d1e)
 * Operators of step: TINYSENT_BIGRU.
 * Operators of head: FULLY_CONNECTED LOGISTIC.
 */
#include "op_resolver.h"
#include "gru_op.h"

TfLiteStatus sent_register_ops(SentOpResolver &resolver)
{
    if (resolver.AddFullyConnected() != kTfLiteOk) return kTfLiteError; /* FULLY_CONNECTED (head) */
    if (resolver.AddLogistic() != kTfLiteOk) return kTfLiteError; /* LOGISTIC (head) */
    if (resolver.AddCustom("TINYSENT_BIGRU", tinysent_register_bigru()) != kTfLiteOk) return kTfLiteError; /* TINYSENT_BIGRU (step) */
    return kTfLiteOk;
}
