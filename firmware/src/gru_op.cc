/*
 * TFLM registration of the custom operator TINYSENT_BIGRU (see gru_op.h). The tensors, their
 * packing and custom_options are specified in pipeline/device/gru.py (SPEC v3):
 *   inputs  0 tokens int32 [1,2], 1 h_fwd int8 [1,U], 2 h_bwd int8 [1,U],
 *           3 emb (EB 8: int8 [rows,E]; EB 4: uint8 [rows,E/2]; EB 2: uint8 [rows,E/4]),
 *           4 wx int8 [2,NB,E,3*RU], 5 wh int8 [2,NB,U,3*RU], 6 gates int32 [2,4,3*NB*RU],
 *           7 sig uint8 [256], 8 tanh int8 [256], EB 4 and 2: 9 mult uint8 [rows] (spec v2: int16)
 *   outputs 0 h_fwd int8 [1,U], 1 h_bwd int8 [1,U]
 *   custom_options: 6 little-endian int32 (spec version 3, E, U, RU, S, EB); version 2 the same;
 *   version 1: the first 5 (EB = 8)
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

enum { kTokens = 0, kHFwd, kHBwd, kEmb, kWx, kWh, kGates, kSig, kTanh, kMult, kMaxInputs };
enum { kOutFwd = 0, kOutBwd, kNumOutputs };
constexpr size_t kOptionsBytesV1 = 5 * sizeof(int32_t), kOptionsBytes = 6 * sizeof(int32_t);

struct OpData {
    int32_t version, embed_dim, units, ru, shift, emb_bits;
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
    if (buffer == nullptr || length < kOptionsBytesV1) return data; /* version 0: refused in Prepare */
    const uint8_t *b = reinterpret_cast<const uint8_t *>(buffer);
    const int32_t version = read_le32(b);
    if (length != (version == 1 ? kOptionsBytesV1 : kOptionsBytes)) return data;
    data->version = version;
    data->embed_dim = read_le32(b + 4);
    data->units = read_le32(b + 8);
    data->ru = read_le32(b + 12);
    data->shift = read_le32(b + 16);
    data->emb_bits = version == 1 ? 8 : read_le32(b + 20);
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
    TF_LITE_ENSURE_MSG(context, data->version >= 1 && data->version <= GRU_SPEC_VERSION,
                       "TINYSENT_BIGRU: custom_options missing or of another spec version");
    const int32_t eb = data->emb_bits;
    TF_LITE_ENSURE_MSG(context, eb == 8 || ((eb == 4 || eb == 2) &&
                                            data->embed_dim % (8 / eb) == 0 &&
                                            data->embed_dim <= GRU_MAX_E),
                       "TINYSENT_BIGRU: embedding bits not 8, 4 or 2 (4: E even, 2: E a multiple "
                       "of 4, E <= GRU_MAX_E)");
    TF_LITE_ENSURE_MSG(context, eb != 2 || data->version == GRU_SPEC_VERSION,
                       "TINYSENT_BIGRU: a 2-bit embedding needs spec v3");
    const int num_inputs = eb != 8 ? kMaxInputs : kTanh + 1;
    TF_LITE_ENSURE_MSG(context, data->ru == GRU_RU, "TINYSENT_BIGRU: packed for another GRU_RU");
    TF_LITE_ENSURE(context, data->shift >= 0 && data->shift <= 31);
    TF_LITE_ENSURE(context, data->embed_dim > 0 && data->units > 0);
    TF_LITE_ENSURE_EQ(context, tflite::NumInputs(node), num_inputs);
    TF_LITE_ENSURE_EQ(context, tflite::NumOutputs(node), static_cast<int>(kNumOutputs));

    const int32_t E = data->embed_dim, U = data->units, R = 3 * GRU_RU;
    const int32_t nb = (U + GRU_RU - 1) / GRU_RU;
    const int32_t d_tokens[] = {1, 2}, d_state[] = {1, U}, d_wx[] = {2, nb, E, R},
                  d_wh[] = {2, nb, U, R}, d_gates[] = {2, 4, nb * R}, d_lut[] = {256};
    tflite::MicroContext *mc = tflite::GetMicroContext(context);
    TfLiteTensor *t[kMaxInputs + kNumOutputs] = {};
    for (int i = 0; i < num_inputs; i++) t[i] = mc->AllocateTempInputTensor(node, i);
    for (int i = 0; i < kNumOutputs; i++) t[kMaxInputs + i] = mc->AllocateTempOutputTensor(node, i);
    bool ok = has_shape(t[kTokens], kTfLiteInt32, 2, d_tokens) &&
              has_shape(t[kHFwd], kTfLiteInt8, 2, d_state) &&
              has_shape(t[kHBwd], kTfLiteInt8, 2, d_state) &&
              t[kEmb] != nullptr && t[kEmb]->type == (eb != 8 ? kTfLiteUInt8 : kTfLiteInt8) &&
              t[kEmb]->dims->size == 2 && t[kEmb]->dims->data[1] == E * eb / 8 &&
              t[kEmb]->dims->data[0] > 0 &&
              has_shape(t[kWx], kTfLiteInt8, 4, d_wx) && has_shape(t[kWh], kTfLiteInt8, 4, d_wh) &&
              has_shape(t[kGates], kTfLiteInt32, 3, d_gates) &&
              has_shape(t[kSig], kTfLiteUInt8, 1, d_lut) && has_shape(t[kTanh], kTfLiteInt8, 1, d_lut) &&
              has_shape(t[kMaxInputs + kOutFwd], kTfLiteInt8, 2, d_state) &&
              has_shape(t[kMaxInputs + kOutBwd], kTfLiteInt8, 2, d_state);
    if (ok && eb != 8) {
        const int32_t d_mult[] = {t[kEmb]->dims->data[0]};
        ok = has_shape(t[kMult], data->version == 2 ? kTfLiteInt16 : kTfLiteUInt8, 1, d_mult);
    }
    for (int i = kEmb; ok && i < num_inputs; i++) ok = tflite::IsConstantTensor(t[i]);
    for (int32_t v = 0; ok && eb == 4 && data->version == 2 && v < t[kEmb]->dims->data[0]; v++)
        ok = t[kMult]->data.i16[v] >= 0 && t[kMult]->data.i16[v] < GRU_EMB_MULT_LIMIT_V2; /* spec */
    if (ok) {
        data->rows = t[kEmb]->dims->data[0];
        gru_model_init(&data->model, E, U, data->shift, t[kEmb]->data.int8, t[kWx]->data.int8,
                       t[kWh]->data.int8, t[kGates]->data.i32, t[kSig]->data.uint8,
                       t[kTanh]->data.int8);
        if (eb == 4 && data->version == 2)
            gru_model_set_emb4_v2(&data->model, t[kEmb]->data.uint8, t[kMult]->data.i16);
        else if (eb != 8)
            gru_model_set_packed(&data->model, eb, t[kEmb]->data.uint8, t[kMult]->data.uint8);
    }
    for (int i = 0; i < kMaxInputs + kNumOutputs; i++)
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
