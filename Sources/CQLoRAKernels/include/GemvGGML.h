#ifndef CQLORA_GEMV_GGML_H
#define CQLORA_GEMV_GGML_H
#include <stddef.h>
#include <stdint.h>

/* Matrix-vector products straight from GGUF blocks (decoding one token): each block is decoded in
 * registers and used at once, nothing written but y.
 *
 * The weights are exactly what the dequantizer writes (GGUF/GGMLBlocks.swift, bit-exact with gguf-py):
 *   Q8_0 (34 bytes: fp16 d, 32 int8 q):        w[j] = q[j] * d
 *   Q4_0 (18 bytes: fp16 d, 16 bytes qs):      w[j] = ((qs[j] & 15) - 8) * d,  w[j + 16] = ((qs[j] >> 4) - 8) * d
 *   Q4_1 (20 bytes: fp16 d, fp16 m, 16 bytes): w[j] = (qs[j] & 15) * d + m,    w[j + 16] = (qs[j] >> 4) * d + m
 *   Q5_0 (22 bytes: fp16 d, u32 qh, 16 bytes): as Q4_0 with bit j of qh the fifth bit of element j, minus 16
 *   Q4_K (144 bytes per 256: fp16 d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes qs),
 *   Q5_K (176: the same plus qh[32] before qs):  w = (d * scale) * q - dmin * min, one scale/min per 32
 *   Q6_K (210: ql[128], qh[64], int8 scales[16], fp16 d):  w = (d * scale) * (q - 32), one scale per 16
 * (fp32 products and sums, each rounded once: this target is compiled with FP_CONTRACT OFF; the
 * K-quant layouts are GGMLGroups.h's), then bf16-rounded when asked. The accumulation is that of the
 * dense kernels of Gemv.h on those values (32-element groups in order), so a fused product equals
 * dequantize-then-multiply bit for bit.
 *
 * Rows: row r of the call is stored row (stored_rows ? stored_rows[first_row + r] : first_row + r),
 * at data + stored * row_bytes; cols is a multiple of the block's elements (32, or 256 for K-quants). */

enum {
    QLORA_GGML_Q4_0 = 2, QLORA_GGML_Q4_1 = 3, QLORA_GGML_Q5_0 = 6, QLORA_GGML_Q8_0 = 8,
    QLORA_GGML_Q4_K = 12, QLORA_GGML_Q5_K = 13, QLORA_GGML_Q6_K = 14
};

/* 1 when the kernels below take GGML type `type` (its GGUF type id). */
int qlora_ggml_fused(int type);

/* fp32 x, as qlora_gemv_f32 on the dequantized rows (bf16-rounded first when `rounding` is 1).
 * Levels as qlora_kernels_level: 0 scalar, 1 AVX2 + FMA, 2 AVX-512F. */
void qlora_gemv_ggml_f32(int level, int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                         size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding);

/* bf16 x pairs, as qlora_gemv_bf16_bf16dot on the bf16-rounded rows; nvec vectors at x + v * ldx (words)
 * into y + v * ldy, each bit-identical to a call of its own, every block decoded once for all of them.
 * Levels as GemmBF16.h: 0 the scalar twin, 1 AVX-512 BW + BF16 (where qlora_bf16_best_level() >= 1). */
void qlora_gemv_ggml_bf16dot(int level, int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec,
                             size_t rows, size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows,
                             size_t first_row);

#endif
