/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 99b9c4aacd27adadb23a7230c3d4a26641ad89348059a5e6523eb6f8de721270)
 *     models/release/head.tflite (sha256 07f165759d98ec9ca16c68dcfa3626610e9c81e3995d568fc6a193b7a2799254)
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
