/*
 * The device step loop of pipeline/device/loop.py in portable C99 (no heap, no platform headers):
 * the int8 step model runs once per token for both directions, the int8 states are summed in
 * int32, the sums are requantized to the head's int8 `pooled` input exactly as
 * pipeline.device.loop.requantize_pooled does, and the head gives the int8 P(positive).
 *
 * (With SENT_HAS_ID_MAP each id first becomes sent_id_map[id]: pruned embedding rows dropped.)
 *
 *     hf[:] = zp_fwd; hb[:] = zp_bwd; sum[:] = 0
 *     for t in 0..T-1: hf, hb = step({ids[t], ids[T-1-t]}, hf, hb); sum += (hf, hb)
 *     pooled[j] = T ? clamp(floor(float(sum[j] - T*zp) * m / float(T) + 0.5f) + zp_pooled) : zp_pooled
 *     P(positive) = prob_scale * (head(pooled) - prob_zero_point)
 *
 * The model itself is behind sent_model_t (two callbacks), so that the loop builds on the host:
 * firmware/src/tflm_model.cc implements them with TensorFlow Lite Micro on the device, and the
 * host twin (pipeline/device/console.py) with the TFLM Python interpreter.
 *
 * Worst cases: stack of sent_run is 4 * SENT_UNITS + 8 * SENT_UNITS bytes plus a few words
 * (384 B for 32 units); T <= SENT_MAX_TOKENS steps; int32 sums cannot overflow for
 * T < 2^24 (|state| <= 128).
 */
#ifndef SENTIMENT_H
#define SENTIMENT_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The two models. Each callback returns 0 on success, nonzero on failure. */
typedef struct {
    /* One step for both directions: tokens = {forward id, backward id}; h_fwd and h_bwd
     * (SENT_UNITS int8 each) are the states in and are overwritten with the states out. */
    int (*step)(void *ctx, const int32_t tokens[2], int8_t *h_fwd, int8_t *h_bwd);
    /* pooled: 2 * SENT_UNITS int8 (forward means, then backward); *prob: the int8 output. */
    int (*head)(void *ctx, const int8_t *pooled, int8_t *prob);
    void *ctx;
} sent_model_t;

/* Runs the loop over ids[0..n) (already truncated, no padding); *prob_q gets the head's int8
 * output. Returns 0, or -1 if a callback failed. */
int sent_run(const sent_model_t *model, const int32_t *ids, size_t n, int8_t *prob_q);

/* int32 state sums over n steps -> the head's int8 pooled input (loop.requantize_pooled). */
void sent_pool(const int32_t sums[2 * SENT_UNITS], uint32_t n, int8_t pooled[2 * SENT_UNITS]);

/* P(positive) of the head's int8 output: float32(prob_scale * (q - prob_zero_point)) computed in
 * double as Python does; positive when >= 0.5. */
float sent_probability(int8_t prob_q);

#ifdef __cplusplus
}
#endif

#endif /* SENTIMENT_H */
