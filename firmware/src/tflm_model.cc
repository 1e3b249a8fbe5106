/*
 * All TensorFlow Lite Micro calls of the firmware (see tflm_model.h): two interpreters, one per
 * model, on one tensor arena allocated at start-up. Every input is set before every Invoke (TFLM
 * may reuse input memory for intermediate tensors) and outputs are copied out right after it.
 */
#include "tflm_model.h"

#include <cstdio>
#include <cstring>
#include <new>

#include "esp_heap_caps.h"
#include "model_config.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

SentOpResolver g_resolver;
tflite::MicroInterpreter *g_step = nullptr;
tflite::MicroInterpreter *g_head = nullptr;
sent_model_t g_model;

bool tensor_ok(const TfLiteTensor *t, TfLiteType type, size_t bytes)
{
    return t != nullptr && t->type == type && t->bytes == bytes;
}

int step(void *, const int32_t tokens[2], int8_t *h_fwd, int8_t *h_bwd)
{
    std::memcpy(g_step->input(SENT_STEP_IN_TOKENS)->data.i32, tokens, 2 * sizeof(int32_t));
    std::memcpy(g_step->input(SENT_STEP_IN_H_FWD)->data.int8, h_fwd, SENT_UNITS);
    std::memcpy(g_step->input(SENT_STEP_IN_H_BWD)->data.int8, h_bwd, SENT_UNITS);
    if (g_step->Invoke() != kTfLiteOk) return -1;
    std::memcpy(h_fwd, g_step->output(SENT_STEP_OUT_H_FWD)->data.int8, SENT_UNITS);
    std::memcpy(h_bwd, g_step->output(SENT_STEP_OUT_H_BWD)->data.int8, SENT_UNITS);
    return 0;
}

int head(void *, const int8_t *pooled, int8_t *prob)
{
    std::memcpy(g_head->input(SENT_HEAD_IN_POOLED)->data.int8, pooled, 2 * SENT_UNITS);
    if (g_head->Invoke() != kTfLiteOk) return -1;
    *prob = g_head->output(SENT_HEAD_OUT_PROB)->data.int8[0];
    return 0;
}

bool fail(char *err, size_t cap, const char *what)
{
    std::snprintf(err, cap, "%s", what);
    return false;
}

/* Builds the interpreter for one model in arena[0..size) and allocates its tensors. */
bool build(tflite::MicroInterpreter *&out, const unsigned char *data, uint8_t *arena, size_t size,
           const char *name, size_t inputs, size_t outputs, char *err, size_t cap)
{
    const tflite::Model *model = tflite::GetModel(data);
#ifdef TFLITE_SCHEMA_VERSION
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        std::snprintf(err, cap, "%s: schema version %lu, this TFLM reads %d", name,
                      static_cast<unsigned long>(model->version()), TFLITE_SCHEMA_VERSION);
        return false;
    }
#endif
    /* The interpreter object itself is small; it lives in the heap next to the arena. */
    void *mem = heap_caps_malloc(sizeof(tflite::MicroInterpreter), MALLOC_CAP_8BIT);
    if (mem == nullptr) return fail(err, cap, "out of memory for the interpreters");
    out = new (mem) tflite::MicroInterpreter(model, g_resolver, arena, size);
    if (out->AllocateTensors() != kTfLiteOk) {
        std::snprintf(err, cap, "%s: AllocateTensors failed in a %lu-byte arena", name,
                      static_cast<unsigned long>(size));
        return false;
    }
    if (out->inputs_size() != inputs || out->outputs_size() != outputs) {
        std::snprintf(err, cap, "%s: %lu inputs / %lu outputs, model_config.h says %lu / %lu", name,
                      static_cast<unsigned long>(out->inputs_size()),
                      static_cast<unsigned long>(out->outputs_size()),
                      static_cast<unsigned long>(inputs), static_cast<unsigned long>(outputs));
        return false;
    }
    return true;
}

}  // namespace

extern "C" const sent_model_t *tflm_model_init(char *err, size_t err_cap)
{
    return tflm_model_init_sized(SENT_STEP_ARENA_BYTES, SENT_HEAD_ARENA_BYTES, err, err_cap);
}

extern "C" const sent_model_t *tflm_model_init_sized(size_t step_bytes, size_t head_bytes,
                                                      char *err, size_t err_cap)
{
    static bool done = false;
    if (done) return g_step != nullptr && g_head != nullptr ? &g_model : nullptr;
    done = true;
    tflite::InitializeTarget();
    if (sent_register_ops(g_resolver) != kTfLiteOk) {
        fail(err, err_cap, "registering the operators failed (op_resolver.cc)");
        return nullptr;
    }
    uint8_t *arena = static_cast<uint8_t *>(
        heap_caps_aligned_alloc(16, step_bytes + head_bytes, MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT));
    if (arena == nullptr) {
        fail(err, err_cap, "cannot allocate the tensor arena");
        return nullptr;
    }
    if (!build(g_step, sent_step_model, arena, step_bytes, "step", SENT_STEP_INPUTS,
               SENT_STEP_OUTPUTS, err, err_cap) ||
        !build(g_head, sent_head_model, arena + step_bytes, head_bytes, "head", SENT_HEAD_INPUTS,
               SENT_HEAD_OUTPUTS, err, err_cap)) {
        g_step = g_head = nullptr;
        return nullptr;
    }
    const bool shapes_ok =
        tensor_ok(g_step->input(SENT_STEP_IN_TOKENS), kTfLiteInt32, 2 * sizeof(int32_t)) &&
        tensor_ok(g_step->input(SENT_STEP_IN_H_FWD), kTfLiteInt8, SENT_UNITS) &&
        tensor_ok(g_step->input(SENT_STEP_IN_H_BWD), kTfLiteInt8, SENT_UNITS) &&
        tensor_ok(g_step->output(SENT_STEP_OUT_H_FWD), kTfLiteInt8, SENT_UNITS) &&
        tensor_ok(g_step->output(SENT_STEP_OUT_H_BWD), kTfLiteInt8, SENT_UNITS) &&
        tensor_ok(g_head->input(SENT_HEAD_IN_POOLED), kTfLiteInt8, 2 * SENT_UNITS) &&
        tensor_ok(g_head->output(SENT_HEAD_OUT_PROB), kTfLiteInt8, 1);
    if (!shapes_ok) {
        g_step = g_head = nullptr;
        fail(err, err_cap, "tensor types/sizes differ from model_config.h (regenerate the firmware)");
        return nullptr;
    }
    g_model.step = step;
    g_model.head = head;
    g_model.ctx = nullptr;
    return &g_model;
}

extern "C" size_t tflm_arena_used(int which)
{
    tflite::MicroInterpreter *it = which == 0 ? g_step : g_head;
    return it != nullptr ? it->arena_used_bytes() : 0;
}
