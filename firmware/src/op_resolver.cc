/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 93e6a34d5cc23c47372171835ff75bd266c22b00cfacd2a4d2bc650e85a70bee)
 *     models/release/head.tflite (sha256 419340931fbf21c40d24e89b9445102a4393044fa88353be543a2d2061c1e66f)
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
