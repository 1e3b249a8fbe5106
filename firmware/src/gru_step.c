/*
 * Fused int8 BiGRU step, portable C99; see gru_step.h. SPEC v2: pipeline/device/gru.py.
 *
 * Per block of GRU_RU units the 3*GRU_RU input-projection accumulators are formed first (weights
 * interleaved so one embedding value feeds 3*GRU_RU consecutive weight bytes), then the recurrent
 * ones and the gates. GRU_DOT=1 (default) unrolls the dot products fully for K in {8,16,...,64}.
 * Build with GCC -O2 -fno-schedule-insns (firmware/src/CMakeLists.txt): the default -O2
 * scheduling hoists loads and spills on RV32 (about 1.5x the instructions).
 */
#include "gru_step.h"

#define GRU_F_SIG 5  /* (p + 16) >> 5: sigmoid table input step 1/16 for Q9 pre-activations */
#define GRU_F_TANH 4 /* (p + 8) >> 4: tanh table input step 1/32 */

/* RQ(a, M) = (mulhi32(a, M) + R_S) >> S, R_S = 2^(S-1) (0 for S = 0) */
static inline int32_t rq(int32_t a, int32_t mult, int32_t shift, int32_t rnd)
{
    int32_t hi = (int32_t)(((int64_t)a * (int64_t)mult) >> 32);
    return (hi + rnd) >> shift;
}

static inline int32_t lut_index(int32_t p, int sh)
{
    int32_t i = ((p + (1 << (sh - 1))) >> sh) + 128;
    if ((uint32_t)i > 255u) i = (i < 0) ? 0 : 255;
    return i;
}

/* unit u's new state from its six int32 accumulators; gi = index of its z row in bx..mh */
#define GRU_GATES(u, axz, axr, axh, ahz, ahr, ahh, gi)                                        \
    do {                                                                                     \
        const int32_t *MX = mx + (gi), *MH = mh + (gi);                                      \
        int32_t pz = rq(axz, MX[0], S, rnd) + rq(ahz, MH[0], S, rnd);                        \
        int32_t pr = rq(axr, MX[1], S, rnd) + rq(ahr, MH[1], S, rnd);                        \
        int32_t xh = rq(axh, MX[2], S, rnd), hh = rq(ahh, MH[2], S, rnd);                    \
        int32_t z = sig[lut_index(pz, GRU_F_SIG)];                                           \
        int32_t r = sig[lut_index(pr, GRU_F_SIG)];                                           \
        int32_t c = th[lut_index(xh + ((r * hh + 128) >> 8), GRU_F_TANH)];                   \
        int32_t ho = h_in[u];                                                                \
        h_out[u] = (int8_t)(c + ((z * (ho - c) + 128) >> 8));                                \
    } while (0)

#define R (3 * GRU_RU)

#if GRU_RU == 1
#define DECL int32_t a0, a1, a2;
#define LOADB(b) a0 = (b)[0]; a1 = (b)[1]; a2 = (b)[2];
#define MAC(k) { int32_t xv = x[k]; const int8_t *wk = w + (k) * R;                          \
                 a0 += wk[0] * xv; a1 += wk[1] * xv; a2 += wk[2] * xv; }
#elif GRU_RU == 2
#define DECL int32_t a0, a1, a2, a3, a4, a5;
#define LOADB(b) a0 = (b)[0]; a1 = (b)[1]; a2 = (b)[2]; a3 = (b)[3]; a4 = (b)[4]; a5 = (b)[5];
#define MAC(k) { int32_t xv = x[k]; const int8_t *wk = w + (k) * R;                          \
                 a0 += wk[0] * xv; a1 += wk[1] * xv; a2 += wk[2] * xv;                        \
                 a3 += wk[3] * xv; a4 += wk[4] * xv; a5 += wk[5] * xv; }
#elif GRU_RU == 4
#define DECL int32_t a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
#define LOADB(b) a0 = (b)[0]; a1 = (b)[1]; a2 = (b)[2]; a3 = (b)[3]; a4 = (b)[4]; a5 = (b)[5]; \
                 a6 = (b)[6]; a7 = (b)[7]; a8 = (b)[8]; a9 = (b)[9]; a10 = (b)[10]; a11 = (b)[11];
#define MAC(k) { int32_t xv = x[k]; const int8_t *wk = w + (k) * R;                          \
                 a0 += wk[0] * xv; a1 += wk[1] * xv; a2 += wk[2] * xv;                        \
                 a3 += wk[3] * xv; a4 += wk[4] * xv; a5 += wk[5] * xv;                        \
                 a6 += wk[6] * xv; a7 += wk[7] * xv; a8 += wk[8] * xv;                        \
                 a9 += wk[9] * xv; a10 += wk[10] * xv; a11 += wk[11] * xv; }
#else
#error "GRU_RU must be 1, 2 or 4"
#endif

#define REP8(b) MAC(b) MAC(b + 1) MAC(b + 2) MAC(b + 3) MAC(b + 4) MAC(b + 5) MAC(b + 6) MAC(b + 7)

/* acc[0..R) += W_block[K][R] . x[K] */
#ifndef GRU_DOT
#define GRU_DOT 1
#endif
#if GRU_DOT == 1
#define DOT(K)                                                                               \
    switch (K) {                                                                             \
    case 64: REP8(56) /* fall through */                                                     \
    case 56: REP8(48) /* fall through */                                                     \
    case 48: REP8(40) /* fall through */                                                     \
    case 40: REP8(32) /* fall through */                                                     \
    case 32: REP8(24) /* fall through */                                                     \
    case 24: REP8(16) /* fall through */                                                     \
    case 16: REP8(8) /* fall through */                                                      \
    case 8: REP8(0) break;                                                                   \
    default: { int32_t k_; for (k_ = 0; k_ < (K); k_++) MAC(k_) } }
#else
#define DOT(K)                                                                               \
    { int32_t k_ = (K);                                                                      \
      for (; k_ >= 4; k_ -= 4, x += 4, w += 4 * R) { MAC(0) MAC(1) MAC(2) MAC(3) }          \
      for (; k_ > 0; k_--, x++, w += R) { MAC(0) } }
#endif

void gru_step_dir(const gru_model_t *m, int d, const int8_t *e, const int8_t *h_in, int8_t *h_out)
{
    const int32_t E = m->E, U = m->U, S = m->shift, rnd = ((int32_t)1 << m->shift) >> 1;
    const uint8_t *sig = m->sig;
    const int8_t *th = m->tanh;
    const gru_dir_t *D = &m->dir[d];
    const int8_t *wx = D->wx, *wh = D->wh;
    const int32_t *bx = D->bx, *bh = D->bh, *mx = D->mx, *mh = D->mh;
    int32_t u;
    for (u = 0; u < U; u += GRU_RU, wx += E * R, wh += U * R, bx += R, bh += R) {
        int32_t X0, X1, X2;
#if GRU_RU >= 2
        int32_t X3, X4, X5;
#endif
#if GRU_RU >= 4
        int32_t X6, X7, X8, X9, X10, X11;
#endif
        { /* input projection */
            DECL const int8_t *x = e, *w = wx;
            LOADB(bx)
            DOT(E)
            X0 = a0; X1 = a1; X2 = a2;
#if GRU_RU >= 2
            X3 = a3; X4 = a4; X5 = a5;
#endif
#if GRU_RU >= 4
            X6 = a6; X7 = a7; X8 = a8; X9 = a9; X10 = a10; X11 = a11;
#endif
        }
        { /* recurrent projection, then the gates (units past U are padding: skipped) */
            DECL const int8_t *x = h_in, *w = wh;
            LOADB(bh)
            DOT(U)
            GRU_GATES(u, X0, X1, X2, a0, a1, a2, 3 * u);
#if GRU_RU >= 2
            if (u + 1 < U) GRU_GATES(u + 1, X3, X4, X5, a3, a4, a5, 3 * u + 3);
#endif
#if GRU_RU >= 4
            if (u + 2 < U) GRU_GATES(u + 2, X6, X7, X8, a6, a7, a8, 3 * u + 6);
            if (u + 3 < U) GRU_GATES(u + 3, X9, X10, X11, a9, a10, a11, 3 * u + 9);
#endif
        }
    }
}

void gru_model_init(gru_model_t *m, int32_t E, int32_t U, int32_t shift, const int8_t *emb,
                    const int8_t *wx, const int8_t *wh, const int32_t *gates, const uint8_t *sig,
                    const int8_t *tanh)
{
    const int32_t up = (U + GRU_RU - 1) / GRU_RU * GRU_RU; /* units with padding */
    int d;
    m->E = E;
    m->U = U;
    m->emb_bits = 8;
    m->emb_packed = 0;
    m->emb_mult = 0;
    m->emb_mult8 = 0;
    m->shift = shift;
    m->emb = emb;
    m->sig = sig;
    m->tanh = tanh;
    for (d = 0; d < 2; d++) {
        const int32_t *g = gates + d * 4 * 3 * up;
        m->dir[d].wx = wx + d * up * E * 3;
        m->dir[d].wh = wh + d * up * U * 3;
        m->dir[d].bx = g;
        m->dir[d].bh = g + 3 * up;
        m->dir[d].mx = g + 6 * up;
        m->dir[d].mh = g + 9 * up;
    }
}

void gru_model_set_packed(gru_model_t *m, int32_t bits, const uint8_t *packed,
                          const uint8_t *emb_mult)
{
    m->emb_bits = bits;
    m->emb_packed = packed;
    m->emb_mult = 0;
    m->emb_mult8 = emb_mult;
}

void gru_model_set_emb4_v2(gru_model_t *m, const uint8_t *emb4, const int16_t *emb_mult)
{
    m->emb_bits = 4;
    m->emb_packed = emb4;
    m->emb_mult = emb_mult;
    m->emb_mult8 = 0;
}

/* 2-bit: e = ((2n - 3) * M + 2^(ES-1)) >> ES = (n * 2M + base) >> ES, base = 2^(ES-1) - 3 * M;
 * within [-96, 96] for M < 2^8 with ES = 3, so no clamp */
static void gru_emb_row2(const gru_model_t *m, int32_t row, int8_t *out)
{
    const int32_t quarter = m->E >> 2, mult = (int32_t)m->emb_mult8[row], m2 = 2 * mult;
    const int32_t base = ((int32_t)1 << (GRU_EMB2_SHIFT - 1)) - 3 * mult;
    const uint8_t *b = m->emb_packed + row * quarter, *end = b + quarter;
    for (; b < end; b++, out += 4) {
        const int32_t v = *b;
        out[0] = (int8_t)(((v & 3) * m2 + base) >> GRU_EMB2_SHIFT);
        out[1] = (int8_t)((((v >> 2) & 3) * m2 + base) >> GRU_EMB2_SHIFT);
        out[2] = (int8_t)((((v >> 4) & 3) * m2 + base) >> GRU_EMB2_SHIFT);
        out[3] = (int8_t)(((v >> 6) * m2 + base) >> GRU_EMB2_SHIFT);
    }
}

/* e = ((n - 8) * M + 2^(ES-1)) >> ES = (n * M + base) >> ES, base = 2^(ES-1) - 8 * M; within
 * [-128, 112] for M < 2^8 with ES = 4 and M < 2^14 with ES = 10, so no clamp */
void gru_emb_row(const gru_model_t *m, int32_t row, int8_t *out)
{
    if (m->emb_bits == 2) {
        gru_emb_row2(m, row, out);
        return;
    }
    const int32_t half = m->E >> 1, es = m->emb_mult8 != 0 ? GRU_EMB_SHIFT : GRU_EMB_SHIFT_V2;
    const int32_t mult = m->emb_mult8 != 0 ? (int32_t)m->emb_mult8[row] : (int32_t)m->emb_mult[row];
    const int32_t base = ((int32_t)1 << (es - 1)) - 8 * mult;
    const uint8_t *b = m->emb_packed + row * half, *end = b + half;
    for (; b < end; b++, out += 2) {
        const int32_t v = *b;
        out[0] = (int8_t)(((v & 15) * mult + base) >> es);
        out[1] = (int8_t)(((v >> 4) * mult + base) >> es);
    }
}

void gru_step(const gru_model_t *m, const int32_t tok[2], const int8_t *h_fwd_in,
              const int8_t *h_bwd_in, int8_t *h_fwd_out, int8_t *h_bwd_out)
{
    if (m->emb_bits != 8) {
        int8_t e[GRU_MAX_E];
        gru_emb_row(m, tok[0], e);
        gru_step_dir(m, 0, e, h_fwd_in, h_fwd_out);
        gru_emb_row(m, tok[1], e);
        gru_step_dir(m, 1, e, h_bwd_in, h_bwd_out);
        return;
    }
    gru_step_dir(m, 0, m->emb + tok[0] * m->E, h_fwd_in, h_fwd_out);
    gru_step_dir(m, 1, m->emb + tok[1] * m->E, h_bwd_in, h_bwd_out);
}
