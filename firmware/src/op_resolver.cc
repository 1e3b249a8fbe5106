/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 6e9acb96d157d82b317cb302cd762ca71d3fdc0a00f7386d48c104d3196a7413)
 *     models/release/head.tflite (sha256 31ab291dc468b9ea64ff5ab5e9b262ad51cffdf1c2e7e92619cfe5a25cc356ec)
 * Operators of step: ADD CAST FULLY_CONNECTED GATHER MUL SPLIT SUB UNPACK.
 * Operators of head: FULLY_CONNECTED LOGISTIC.
 */
#include "op_resolver.h"

TfLiteStatus sent_register_ops(SentOpResolver &resolver)
{
    if (resolver.AddAdd() != kTfLiteOk) return kTfLiteError; /* ADD (step) */
    if (resolver.AddCast() != kTfLiteOk) return kTfLiteError; /* CAST (step) */
    if (resolver.AddFullyConnected() != kTfLiteOk) return kTfLiteError; /* FULLY_CONNECTED (step+head) */
    if (resolver.AddGather() != kTfLiteOk) return kTfLiteError; /* GATHER (step) */
    if (resolver.AddLogistic() != kTfLiteOk) return kTfLiteError; /* LOGISTIC (head) */
    if (resolver.AddMul() != kTfLiteOk) return kTfLiteError; /* MUL (step) */
    if (resolver.AddSplit() != kTfLiteOk) return kTfLiteError; /* SPLIT (step) */
    if (resolver.AddSub() != kTfLiteOk) return kTfLiteError; /* SUB (step) */
    if (resolver.AddUnpack() != kTfLiteOk) return kTfLiteError; /* UNPACK (step) */
    return kTfLiteOk;
}
