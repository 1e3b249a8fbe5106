/* GENERATED FILE - DO NOT EDIT. Regenerate with:
 *     python -m pipeline.export firmware models/release --out firmware
 * from:
 *     models/release/step.tflite (sha256 6e9acb96d157d82b317cb302cd762ca71d3fdc0a00f7386d48c104d3196a7413)
 *     models/release/head.tflite (sha256 31ab291dc468b9ea64ff5ab5e9b262ad51cffdf1c2e7e92619cfe5a25cc356ec)
 *     models/release/quant.json (sha256 fe7709d688668cd6d3d505e1ac67b295082202cc4757711ef62cbca5e8b7d097)
 *     models/release/tokenizer.model (sha256 ec1668f0c4ffba82b3259a12f269c1a450e1e9c8df743cb0cf2467f4e2dd7ade)
 *     models/release/tokenizer.json (sha256 7e863ed7b0159c260a1b9221fcacd9482cb2f65e5cd7aad0cd38ef401d88f6c4)
 * Constants of the device step loop; see pipeline/device/loop.py.
 */
#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H

/* model */
#define SENT_MODEL_DESC "models/release: student-int8 BiGRU student, embed 32, units 32"
#define SENT_STEP_SHA256 "6e9acb96d157d82b317cb302cd762ca71d3fdc0a00f7386d48c104d3196a7413"
#define SENT_HEAD_SHA256 "31ab291dc468b9ea64ff5ab5e9b262ad51cffdf1c2e7e92619cfe5a25cc356ec"
#define SENT_OPS "ADD CAST FULLY_CONNECTED GATHER LOGISTIC MUL SPLIT SUB UNPACK"
#define SENT_UNITS 32
#define SENT_EMBED_DIM 32
#define SENT_VOCAB_SIZE 4000
#define SENT_HAS_ID_MAP 0 /* 1: ids go through sent_id_map (pruned embedding rows dropped) */
#define SENT_TABLE_ROWS 4000

/* tokenizer (tokenizer_tables.c holds the same values at run time) */
#define SENT_MAX_TOKENS 512 /* ids per review: Tokenizer.truncate */
#define SENT_TRUNCATE_TAIL 0 /* 0: keep the first ids */

/* tensor positions: interpreter->input(i) / output(i) */
#define SENT_STEP_IN_TOKENS 1
#define SENT_STEP_IN_H_FWD 0
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
#define SENT_H_FWD_SCALE 0x1.0013940000000p-7f /* 0.007814833894371986 */
#define SENT_H_BWD_ZERO_POINT (-1)
#define SENT_H_BWD_SCALE 0x1.00328a0000000p-7f /* 0.007818524725735188 */
#define SENT_POOLED_ZERO_POINT (-3)
#define SENT_POOLED_SCALE 0x1.e982ae0000000p-8f /* 0.0074693369679152966 */
#define SENT_PROB_ZERO_POINT (-128)
#define SENT_PROB_SCALE 0x1.0000000000000p-8 /* 0.00390625, double */
#define SENT_M_FWD 0x1.0bd7640000000p+0f /* 1.046255350112915 */ /* h_fwd scale / pooled scale */
#define SENT_M_BWD 0x1.0bf7c60000000p+0f /* 1.046749472618103 */ /* h_bwd scale / pooled scale */

/* tensor arena: measured minimum (step: 32-bit firmware build (riscv32); head: 32-bit firmware build (riscv32)) + max(10 %, 1024 B), multiple of 16 */
#define SENT_STEP_ARENA_MEASURED 11280
#define SENT_HEAD_ARENA_MEASURED 736
#define SENT_STEP_ARENA_BYTES_32BIT 12416
#define SENT_HEAD_ARENA_BYTES_32BIT 1760

/* a 64-bit host (the native build of this firmware, the TFLM Python interpreter) needs more: pointer-sized bookkeeping; its minimum (quant.json arena_bytes) + the same margin */
#define SENT_STEP_ARENA_BYTES_64BIT 16128
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
#define SENT_STEP_MODEL_BYTES 164720
#define SENT_HEAD_MODEL_BYTES 1424
#define SENT_ID_MAP_BYTES 0
#define SENT_TOKENIZER_TABLE_BYTES 35127

#endif /* MODEL_CONFIG_H */
