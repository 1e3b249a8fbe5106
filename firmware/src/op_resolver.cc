/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 960f0008e7dc400e370ca766a36c8590dcccc0c51c60a7526a3f8a8ad87cc71a)
 *     models/release/head.tflite (sha256 2dee8e4a2404f05a825daa2c2bd109c8598408a1facf9b8629b5f9a4ae8012d1)
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
