/*
 * Fused int8 BiGRU step: the kernel of the TFLM custom operator TINYSENT_BIGRU (gru_op.cc).
 * Portable C99, no heap, no platform headers. The arithmetic is SPEC v3 in the module docstring of
 * pipeline/device/gru.py, whose NumPy reference it matches bit for bit (tests/test_gru.py).
 * Requires arithmetic right shift of negative int32 (GCC, Clang, the Xtensa and RISC-V toolchains).
 */
#ifndef GRU_STEP_H
#define GRU_STEP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* pipeline.device.gru.GRU_SPEC_VERSION; v2 = v3 with int16 row multipliers, v1 = an 8-bit table */
#define GRU_SPEC_VERSION 3
#define GRU_EMB_SHIFT 4             /* ES of the 4-bit embedding's uint8 row multipliers (v3) */
#define GRU_EMB_SHIFT_V2 10         /* ES of v2's int16 row multipliers */
#define GRU_EMB2_SHIFT 3            /* ES of the 2-bit embedding's uint8 row multipliers */
#define GRU_EMB_MULT_LIMIT_V2 16384 /* v2: 0 <= M < 2^14 (no clamp needed; v3: any uint8) */
#ifndef GRU_MAX_E
#define GRU_MAX_E 256 /* largest embedding width of a 4-bit table (a stack row buffer) */
#endif

#ifndef GRU_RU
#define GRU_RU 2 /* units per block of the packed layout (pipeline.device.gru.PACK_RU): 1, 2 or 4 */
#endif

/* One direction's constants in the packed layout (NB = ceil(U / GRU_RU) blocks of GRU_RU units;
 * row i of a block = 3 * unit-in-block + gate, gates z, r, h; padded units are all zero):
 *   wx int8 [NB][E][3*GRU_RU], wh int8 [NB][U][3*GRU_RU]
 *   bx, bh, mx, mh int32 [NB*GRU_RU][3] (unit-major): biases and requantization multipliers. */
typedef struct {
    const int8_t *wx, *wh;
    const int32_t *bx, *bh, *mx, *mh;
} gru_dir_t;

typedef struct {
    int32_t E, U, shift;  /* shift = S of the spec (0..31) */
    int32_t emb_bits;     /* 8: emb; 4 or 2: emb_packed + a multiplier per row
                           * (gru_model_set_packed, gru_model_set_emb4_v2) */
    const int8_t *emb;    /* [rows][E], raw int8 (the zero point is folded into bx) */
    const uint8_t *emb_packed; /* 4-bit: [rows][E/2], element 2i in the low nibble of byte i, 2i+1
                                * in the high; 2-bit: [rows][E/4], element 4i+j in bits 2j, 2j+1
                                * of byte i */
    const uint8_t *emb_mult8; /* [rows] (v3, ES = GRU_EMB_SHIFT) or */
    const int16_t *emb_mult;  /* [rows] (v2, ES = GRU_EMB_SHIFT_V2): code n -> e = ((n - 8) * M +
                               * 2^(ES-1)) >> ES; 2-bit: ((2n - 3) * M + 2^(ES-1)) >> ES */
    const uint8_t *sig;   /* [256] sigmoid table */
    const int8_t *tanh;   /* [256] tanh table */
    gru_dir_t dir[2];     /* forward, backward */
} gru_model_t;

/* Points m at the operator's constant tensors (pipeline/device/gru.py, "The operator"):
 * wx int8 [2][NB][E][3*GRU_RU], wh int8 [2][NB][U][3*GRU_RU], gates int32 [2][4][3*NB*GRU_RU]
 * (bx, bh, mx, mh per direction), sig uint8 [256], tanh int8 [256]. */
void gru_model_init(gru_model_t *m, int32_t E, int32_t U, int32_t shift, const int8_t *emb,
                    const int8_t *wx, const int8_t *wh, const int32_t *gates, const uint8_t *sig,
                    const int8_t *tanh);

/* Switches m to a packed embedding table of `bits` 4 or 2 (the caller checks which): rows of E/2
 * bytes (4-bit, E even) or E/4 (2-bit, E a multiple of 4), E <= GRU_MAX_E, and one uint8 multiplier
 * per row (v3; ES = GRU_EMB_SHIFT at 4 bits, GRU_EMB2_SHIFT at 2); gru_model_init's emb is then
 * unused. */
void gru_model_set_packed(gru_model_t *m, int32_t bits, const uint8_t *packed,
                          const uint8_t *emb_mult);

/* A v2 4-bit table: int16 multipliers, 0 <= M < 2^14 (checked by the caller: gru_op.cc Prepare),
 * ES = GRU_EMB_SHIFT_V2. */
void gru_model_set_emb4_v2(gru_model_t *m, const uint8_t *emb4, const int16_t *emb_mult);

/* The spec's int8 embedding row of table row `row` (4-bit or 2-bit table): out[0..E). */
void gru_emb_row(const gru_model_t *m, int32_t row, int8_t *out);

/* One token step of both directions: tok[0], tok[1] are the forward and backward embedding rows
 * (the caller checks the range). h_*_out must not alias h_*_in. */
void gru_step(const gru_model_t *m, const int32_t tok[2], const int8_t *h_fwd_in,
              const int8_t *h_bwd_in, int8_t *h_fwd_out, int8_t *h_bwd_out);

/* One direction: e = the token's embedding row, h_in -> h_out (U values each). */
void gru_step_dir(const gru_model_t *m, int d, const int8_t *e, const int8_t *h_in, int8_t *h_out);

#ifdef __cplusplus
}
#endif

#endif /* GRU_STEP_H */
