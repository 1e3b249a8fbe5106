/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 99b9c4aacd27adadb23a7230c3d4a26641ad89348059a5e6523eb6f8de721270)
 *     models/release/head.tflite (sha256 07f165759d98ec9ca16c68dcfa3626610e9c81e3995d568fc6a193b7a2799254)
 *     models/release/quant.json (sha256 c0a8218484006e935e47b57e5d28cee4f28ef5e6d1ac25dd802432f4ff063e38)
 *     models/release/tokenizer.model (sha256 fa2e3faddca76b94d8721b8ff965cbb71ae53fe9207f546fbda2121e79f50eda)
 *     models/release/tokenizer.json (sha256 cd2e9d9676a462baf9de550e69efd80fd5a1d5f1b38d4c2ff2d4104c1cb33e1a)
 * Constants of the device step loop; see pipeline/device/loop.py.
 */
#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H

/* model */
#define SENT_MODEL_DESC "models/release: student-int8 BiGRU student, embed 40, units 32"
#define SENT_STEP_SHA256 "99b9c4aacd27adadb23a7230c3d4a26641ad89348059a5e6523eb6f8de721270"
#define SENT_HEAD_SHA256 "07f165759d98ec9ca16c68dcfa3626610e9c81e3995d568fc6a193b7a2799254"
#define SENT_OPS "FULLY_CONNECTED LOGISTIC TINYSENT_BIGRU"
#define SENT_UNITS 32
#define SENT_EMBED_DIM 40
#define SENT_VOCAB_SIZE 6000
#define SENT_HAS_ID_MAP 0 /* 1: ids go through sent_id_map (pruned embedding rows dropped) */
#define SENT_TABLE_ROWS 6000
#define SENT_STEP_CUSTOM_OP "TINYSENT_BIGRU" /* the step model is this one custom operator */
#define SENT_GRU_SPEC_VERSION 3 /* gru_op.cc runs 1 to GRU_SPEC_VERSION */
#define SENT_GRU_EMBEDDING_BITS 2 /* 8: int8, 4 or 2: packed */
#define SENT_GRU_PACK_RU 2 /* must equal gru_step.h GRU_RU */
#define SENT_STEP_ARENA_ESTIMATED 1 /* 1: the step arena is an estimate, not host-measured */

/* tokenizer (tokenizer_tables.c holds the same values at run time) */
#define SENT_MAX_TOKENS 512 /* ids per review: Tokenizer.truncate */
#define SENT_TRUNCATE_TAIL 0 /* 0: keep the first ids */

/* tensor positions: interpreter->input(i) / output(i) */
#define SENT_STEP_IN_TOKENS 0
#define SENT_STEP_IN_H_FWD 1
#define SENT_STEP_IN_H_BWD 2
#define SENT_STEP_OUT_H_FWD 0
#define SENT_STEP_OUT_H_BWD 1
#define SENT_STEP_INPUTS 3
#define SENT_STEP_OUTPUTS 2
#define SENT_HEAD_IN_POOLED 0
#define SENT_HEAD_OUT_PROB 0
#define SENT_HEAD_INPUTS 1
#define SENT_HEAD_OUTPUTS 1

/* quantization (real = scale * (q - zero_point)); states out = states in */
#define SENT_H_FWD_ZERO_POINT 0
#define SENT_H_FWD_SCALE 0x1.0000000000000p-7f /* 0.0078125 */
#define SENT_H_BWD_ZERO_POINT 0
#define SENT_H_BWD_SCALE 0x1.0000000000000p-7f /* 0.0078125 */
#define SENT_POOLED_ZERO_POINT 1
#define SENT_POOLED_SCALE 0x1.e2c0000000000p-8f /* 0.007366180419921875 */
#define SENT_PROB_ZERO_POINT (-128)
#define SENT_PROB_SCALE 0x1.0000000000000p-8 /* 0.00390625, double */
#define SENT_M_FWD 0x1.0f82da0000000p+0f /* 1.060590386390686 */ /* h_fwd scale / pooled scale */
#define SENT_M_BWD 0x1.0f82da0000000p+0f /* 1.060590386390686 */ /* h_bwd scale / pooled scale */

/* tensor arena: measured minimum (step: 32-bit firmware build (riscv32); head: 32-bit firmware build (riscv32)) + max(10 %, 1024 B), multiple of 16 */
#define SENT_STEP_ARENA_MEASURED 1168
#define SENT_HEAD_ARENA_MEASURED 736
#define SENT_STEP_ARENA_BYTES_32BIT 2192
#define SENT_HEAD_ARENA_BYTES_32BIT 1760

/* a 64-bit host (the native build of this firmware, the TFLM Python interpreter) needs more: pointer-sized bookkeeping; its minimum (quant.json arena_bytes) + the same margin */
#define SENT_STEP_ARENA_BYTES_64BIT 3072
#define SENT_HEAD_ARENA_BYTES_64BIT 2464
#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ > 4
#define SENT_STEP_ARENA_BYTES SENT_STEP_ARENA_BYTES_64BIT
#define SENT_HEAD_ARENA_BYTES SENT_HEAD_ARENA_BYTES_64BIT
#else
#define SENT_STEP_ARENA_BYTES SENT_STEP_ARENA_BYTES_32BIT
#define SENT_HEAD_ARENA_BYTES SENT_HEAD_ARENA_BYTES_32BIT
#endif
#define SENT_ARENA_BYTES (SENT_STEP_ARENA_BYTES + SENT_HEAD_ARENA_BYTES)

/* flash (bytes) */
#define SENT_STEP_MODEL_BYTES 85024
#define SENT_HEAD_MODEL_BYTES 1456
#define SENT_ID_MAP_BYTES 0
#define SENT_TOKENIZER_TABLE_BYTES 54301

#endif /* MODEL_CONFIG_H */
