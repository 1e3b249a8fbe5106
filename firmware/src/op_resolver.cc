/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 70f0e61359101a603123e3cc675661c24e5350bf1d7b01cd8fbd1339123a797c)
 *     models/release/head.tflite (sha256 1ab1fd5fbac12aa8949292ad251171356f249901b06cd5aebbe483b3c3dcd7cc)
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
