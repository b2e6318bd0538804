#ifndef CQLORA_KERNELS_H
#define CQLORA_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "GemmBF16.h"
#include "Gemv.h"
#include "GemvGGML.h"

/* 4-bit table decoding for NF4/FP4 dequantization. Each byte holds two codes, the first element in
 * the HIGH nibble: out[2j] = table[bytes[j] >> 4], out[2j+1] = table[bytes[j] & 15], j < byte_count.
 * The caller builds the 16-entry table per block (code * scale, already rounded to the output type),
 * so the result is bit-identical at every SIMD level. Dispatch at run time: AVX-512F, AVX2, scalar. */
void qlora_nibbles_to_f32(float *out, const uint8_t *bytes, size_t byte_count, const float *table16);
void qlora_nibbles_to_u16(uint16_t *out, const uint8_t *bytes, size_t byte_count, const uint16_t *table16);

/* The per-block scales of a tensor, as stored (nothing precomputed). Either plain: `absmax` holds one
 * float32 per block, which is the scale; or double-quantized (`absmax` NULL): the scale of block b is
 *     fp32(fp32(dynamic_map[codes[b]] * nested_absmax[b / nested_blocksize]) + offset)
 * (two roundings, never fused: this file is compiled with FP_CONTRACT OFF), as bitsandbytes computes it. */
typedef struct qlora_block_scales {
    const float *absmax;          /* plain: (block_count), else NULL */
    const uint8_t *codes;         /* double-quantized: (block_count) u8 codes into dynamic_map */
    const float *nested_absmax;   /* double-quantized: (ceil(block_count / nested_blocksize)) */
    const float *dynamic_map;     /* double-quantized: (256) the shared 8-bit dynamic map */
    float offset;                 /* double-quantized: added after the multiply */
    size_t nested_blocksize;      /* double-quantized: blocks per nested absmax (256); ignored when plain */
} qlora_block_scales;

/* The scales of blocks first_block ..< first_block + block_count into out (block_count). */
void qlora_block_scales_f32(float *out, const qlora_block_scales *scales, size_t first_block, size_t block_count);

/* Whole aligned blocks: block b (b < block_count) covers bytes[b * block_bytes ..< (b + 1) * block_bytes]
 * and is decoded with the table codes16[c] * scale(first_block + b) (one float32 multiply each; the scale
 * is computed on the fly from `scales`), rounded per `rounding`:
 * 0 = keep float32, 1 = round to bf16 (nearest-even) and keep the float32 layout. */
void qlora_dequant4_blocks_f32(float *out, const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block,
                               size_t block_count, size_t block_bytes, const float *codes16, int rounding);
/* Same, writing bf16 bit patterns (nearest-even). */
void qlora_dequant4_blocks_bf16(uint16_t *out, const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block,
                                size_t block_count, size_t block_bytes, const float *codes16);

/* A spin-wait hint (x86 `pause`), for the thread pool's workers between jobs. */
static inline void qlora_cpu_relax(void) { __builtin_ia32_pause(); }

/* 0 = scalar, 1 = AVX2, 2 = AVX-512F: the level in use. */
int qlora_kernels_level(void);
/* The best level this CPU supports. */
int qlora_kernels_best_level(void);
/* Forces a level (clamped to what the CPU supports); returns the level now in use. For tests/benchmarks. */
int qlora_kernels_set_level(int level);

#endif
