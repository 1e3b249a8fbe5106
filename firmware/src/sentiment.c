/* The device step loop; see sentiment.h. */
#include "sentiment.h"

#include "model_data.h"

#include <math.h>
#include <string.h>

#if SENT_HAS_ID_MAP
#define SENT_ROW(id) ((int32_t)sent_id_map[(id)]) /* ids < SENT_VOCAB_SIZE (the tokenizer's) */
#else
#define SENT_ROW(id) (id)
#endif

static int8_t requantize(int32_t sum, uint32_t n, int32_t zp, float m)
{
    /* float32 throughout, in this order, as numpy does in quantize.requantize_pooled: no
     * multiply feeds an add directly, so no fused multiply-add can change the rounding. */
    float centred = (float)((int64_t)sum - (int64_t)n * (int64_t)zp);
    float x = centred * m;
    long q;
    x = x / (float)n;
    x = x + 0.5f;
    q = (long)floorf(x) + SENT_POOLED_ZERO_POINT;
    if (q < -128) q = -128;
    if (q > 127) q = 127;
    return (int8_t)q;
}

void sent_pool(const int32_t sums[2 * SENT_UNITS], uint32_t n, int8_t pooled[2 * SENT_UNITS])
{
    size_t j;
    for (j = 0; j < 2 * SENT_UNITS; j++) {
        if (n == 0) {
            pooled[j] = (int8_t)SENT_POOLED_ZERO_POINT;
        } else if (j < SENT_UNITS) {
            pooled[j] = requantize(sums[j], n, SENT_H_FWD_ZERO_POINT, SENT_M_FWD);
        } else {
            pooled[j] = requantize(sums[j], n, SENT_H_BWD_ZERO_POINT, SENT_M_BWD);
        }
    }
}

int sent_run(const sent_model_t *model, const int32_t *ids, size_t n, int8_t *prob_q)
{
    int8_t hf[SENT_UNITS], hb[SENT_UNITS], pooled[2 * SENT_UNITS];
    int32_t sums[2 * SENT_UNITS];
    int32_t tokens[2];
    size_t t, j;

    memset(hf, SENT_H_FWD_ZERO_POINT, sizeof hf);
    memset(hb, SENT_H_BWD_ZERO_POINT, sizeof hb);
    memset(sums, 0, sizeof sums);
    for (t = 0; t < n; t++) {
        tokens[0] = SENT_ROW(ids[t]);
        tokens[1] = SENT_ROW(ids[n - 1 - t]);
        if (model->step(model->ctx, tokens, hf, hb) != 0) return -1;
        for (j = 0; j < SENT_UNITS; j++) {
            sums[j] += hf[j];
            sums[SENT_UNITS + j] += hb[j];
        }
    }
    sent_pool(sums, (uint32_t)n, pooled);
    return model->head(model->ctx, pooled, prob_q) != 0 ? -1 : 0;
}

float sent_probability(int8_t prob_q)
{
    return (float)((double)SENT_PROB_SCALE * (double)((int32_t)prob_q - SENT_PROB_ZERO_POINT));
}
