/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 93e6a34d5cc23c47372171835ff75bd266c22b00cfacd2a4d2bc650e85a70bee)
 *     models/release/head.tflite (sha256 419340931fbf21c40d24e89b9445102a4393044fa88353be543a2d2061c1e66f)
 *     models/release/quant.json (sha256 461e59d0db65808fe1a372fdab6b234d72dc14f7a33c531e9ec783fab7b2a6fa)
 *     models/release/tokenizer.model (sha256 ba1c82442b21ad9c1e9a086f9823c1aab8cef8969e95366a8a637b0c1aa248eb)
 *     models/release/tokenizer.json (sha256 635fa918a81ca680ef01564483d462bf81f595c074e6c5d86cd046babb6eecf5)
 * Constants of the device step loop; see pipeline/device/loop.py.
 */
#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H

/* model */
#define SENT_MODEL_DESC "models/release: student-int8 BiGRU student, embed 40, units 32"
#define SENT_STEP_SHA256 "93e6a34d5cc23c47372171835ff75bd266c22b00cfacd2a4d2bc650e85a70bee"
#define SENT_HEAD_SHA256 "419340931fbf21c40d24e89b9445102a4393044fa88353be543a2d2061c1e66f"
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
#define SENT_POOLED_ZERO_POINT (-2)
#define SENT_POOLED_SCALE 0x1.eae0000000000p-8f /* 0.0074901580810546875 */
#define SENT_PROB_ZERO_POINT (-128)
#define SENT_PROB_SCALE 0x1.0000000000000p-8 /* 0.00390625, double */
#define SENT_M_FWD 0x1.0b045e0000000p+0f /* 1.0430353879928589 */ /* h_fwd scale / pooled scale */
#define SENT_M_BWD 0x1.0b045e0000000p+0f /* 1.0430353879928589 */ /* h_bwd scale / pooled scale */

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
#define SENT_TOKENIZER_TABLE_BYTES 54901

#endif /* MODEL_CONFIG_H */
