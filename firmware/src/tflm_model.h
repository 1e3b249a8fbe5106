/*
 * The TensorFlow Lite Micro side of the firmware behind a C interface: tflm_model.cc is the one
 * C++ file that calls TFLM (everything else is C).
 */
#ifndef TFLM_MODEL_H
#define TFLM_MODEL_H

#include <stddef.h>

#include "sentiment.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates the tensor arena (SENT_ARENA_BYTES, heap_caps_aligned_alloc in internal RAM, once),
 * builds one interpreter for the step model and one for the head model on their parts of it,
 * registers the operators of op_resolver.cc and checks every input/output tensor against
 * model_config.h. Returns the model for sent_run / the console, or NULL with the reason in err. */
const sent_model_t *tflm_model_init(char *err, size_t err_cap);

/* The same with the arena split into step_bytes + head_bytes instead of the SENT_*_ARENA_BYTES of
 * model_config.h (the host build's arena probe; step_bytes a multiple of 16). Only the first
 * tflm_model_init* call of a process sets up the models. */
const sent_model_t *tflm_model_init_sized(size_t step_bytes, size_t head_bytes, char *err,
                                          size_t err_cap);

/* Arena bytes each interpreter uses (0: step, 1: head), 0 before a successful init. */
size_t tflm_arena_used(int which);

#ifdef __cplusplus
}
#endif

#endif /* TFLM_MODEL_H */
