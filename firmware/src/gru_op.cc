/*
 * TFLM registration of the custom operator TINYSENT_BIGRU (see gru_op.h). The tensors, their
 * packing and custom_options are specified in pipeline/device/gru.py (SPEC v1):
 *   inputs  0 tokens int32 [1,2], 1 h_fwd int8 [1,U], 2 h_bwd int8 [1,U],
 *           3 emb int8 [rows,E], 4 wx int8 [2,NB,E,3*RU], 5 wh int8 [2,NB,U,3*RU],
 *           6 gates int32 [2,4,3*NB*RU], 7 sig uint8 [256], 8 tanh int8 [256]
 *   outputs 0 h_fwd int8 [1,U], 1 h_bwd int8 [1,U]
 *   custom_options: 5 little-endian int32 (spec version, E, U, RU, S)
 * init parses the options, prepare checks every tensor and points the kernel's model at the
 * constants (in the flatbuffer), invoke checks the token rows and runs gru_step.
 */
#include "gru_op.h"

#include <cstdint>
#include <cstring>

#include "gru_step.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace {

enum { kTokens = 0, kHFwd, kHBwd, kEmb, kWx, kWh, kGates, kSig, kTanh, kNumInputs };
enum { kOutFwd = 0, kOutBwd, kNumOutputs };
constexpr size_t kOptionsBytes = 5 * sizeof(int32_t);

struct OpData {
    int32_t version, embed_dim, units, ru, shift;
    int32_t rows; /* embedding rows: token ids must be below */
    gru_model_t model;
};

int32_t read_le32(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                 ((uint32_t)p[3] << 24);
    int32_t out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}

void *Init(TfLiteContext *context, const char *buffer, size_t length)
{
    OpData *data = static_cast<OpData *>(context->AllocatePersistentBuffer(context, sizeof(OpData)));
    if (data == nullptr) return nullptr;
    std::memset(data, 0, sizeof *data);
    if (buffer == nullptr || length != kOptionsBytes) return data; /* version 0: refused in Prepare */
    const uint8_t *b = reinterpret_cast<const uint8_t *>(buffer);
    data->version = read_le32(b);
    data->embed_dim = read_le32(b + 4);
    data->units = read_le32(b + 8);
    data->ru = read_le32(b + 12);
    data->shift = read_le32(b + 16);
    return data;
}

bool has_shape(const TfLiteTensor *t, TfLiteType type, int n, const int32_t *dims)
{
    if (t == nullptr || t->type != type || t->dims == nullptr || t->dims->size != n) return false;
    for (int i = 0; i < n; i++)
        if (t->dims->data[i] != dims[i]) return false;
    return true;
}

TfLiteStatus Prepare(TfLiteContext *context, TfLiteNode *node)
{
    TF_LITE_ENSURE(context, node->user_data != nullptr);
    OpData *data = static_cast<OpData *>(node->user_data);
    TF_LITE_ENSURE_MSG(context, data->version == GRU_SPEC_VERSION,
                       "TINYSENT_BIGRU: custom_options missing or of another spec version");
    TF_LITE_ENSURE_MSG(context, data->ru == GRU_RU, "TINYSENT_BIGRU: packed for another GRU_RU");
    TF_LITE_ENSURE(context, data->shift >= 0 && data->shift <= 31);
    TF_LITE_ENSURE(context, data->embed_dim > 0 && data->units > 0);
    TF_LITE_ENSURE_EQ(context, tflite::NumInputs(node), static_cast<int>(kNumInputs));
    TF_LITE_ENSURE_EQ(context, tflite::NumOutputs(node), static_cast<int>(kNumOutputs));

    const int32_t E = data->embed_dim, U = data->units, R = 3 * GRU_RU;
    const int32_t nb = (U + GRU_RU - 1) / GRU_RU;
    const int32_t d_tokens[] = {1, 2}, d_state[] = {1, U}, d_wx[] = {2, nb, E, R},
                  d_wh[] = {2, nb, U, R}, d_gates[] = {2, 4, nb * R}, d_lut[] = {256};
    tflite::MicroContext *mc = tflite::GetMicroContext(context);
    TfLiteTensor *t[kNumInputs + kNumOutputs];
    for (int i = 0; i < kNumInputs; i++) t[i] = mc->AllocateTempInputTensor(node, i);
    for (int i = 0; i < kNumOutputs; i++) t[kNumInputs + i] = mc->AllocateTempOutputTensor(node, i);
    bool ok = has_shape(t[kTokens], kTfLiteInt32, 2, d_tokens) &&
              has_shape(t[kHFwd], kTfLiteInt8, 2, d_state) &&
              has_shape(t[kHBwd], kTfLiteInt8, 2, d_state) &&
              t[kEmb] != nullptr && t[kEmb]->type == kTfLiteInt8 && t[kEmb]->dims->size == 2 &&
              t[kEmb]->dims->data[1] == E && t[kEmb]->dims->data[0] > 0 &&
              has_shape(t[kWx], kTfLiteInt8, 4, d_wx) && has_shape(t[kWh], kTfLiteInt8, 4, d_wh) &&
              has_shape(t[kGates], kTfLiteInt32, 3, d_gates) &&
              has_shape(t[kSig], kTfLiteUInt8, 1, d_lut) && has_shape(t[kTanh], kTfLiteInt8, 1, d_lut) &&
              has_shape(t[kNumInputs + kOutFwd], kTfLiteInt8, 2, d_state) &&
              has_shape(t[kNumInputs + kOutBwd], kTfLiteInt8, 2, d_state);
    for (int i = kEmb; ok && i <= kTanh; i++) ok = tflite::IsConstantTensor(t[i]);
    if (ok) {
        data->rows = t[kEmb]->dims->data[0];
        gru_model_init(&data->model, E, U, data->shift, t[kEmb]->data.int8, t[kWx]->data.int8,
                       t[kWh]->data.int8, t[kGates]->data.i32, t[kSig]->data.uint8,
                       t[kTanh]->data.int8);
    }
    for (int i = 0; i < kNumInputs + kNumOutputs; i++)
        if (t[i] != nullptr) mc->DeallocateTempTfLiteTensor(t[i]);
    TF_LITE_ENSURE_MSG(context, ok, "TINYSENT_BIGRU: tensor types or shapes differ from the spec");
    return kTfLiteOk;
}

TfLiteStatus Invoke(TfLiteContext *context, TfLiteNode *node)
{
    const OpData *data = static_cast<const OpData *>(node->user_data);
    const int32_t *tok = tflite::micro::GetTensorData<int32_t>(tflite::micro::GetEvalInput(context, node, kTokens));
    if ((uint32_t)tok[0] >= (uint32_t)data->rows || (uint32_t)tok[1] >= (uint32_t)data->rows) {
        MicroPrintf("TINYSENT_BIGRU: token row out of range");
        return kTfLiteError;
    }
    gru_step(&data->model, tok,
             tflite::micro::GetTensorData<int8_t>(tflite::micro::GetEvalInput(context, node, kHFwd)),
             tflite::micro::GetTensorData<int8_t>(tflite::micro::GetEvalInput(context, node, kHBwd)),
             tflite::micro::GetTensorData<int8_t>(tflite::micro::GetEvalOutput(context, node, kOutFwd)),
             tflite::micro::GetTensorData<int8_t>(tflite::micro::GetEvalOutput(context, node, kOutBwd)));
    return kTfLiteOk;
}

}  // namespace

const TFLMRegistration *tinysent_register_bigru(void)
{
    static const TFLMRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Invoke);
    return &registration;
}
