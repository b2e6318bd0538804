#ifndef CQLORA_GEMV_H
#define CQLORA_GEMV_H
#include <stddef.h>
#include <stdint.h>

struct qlora_block_scales;

/* Matrix-vector products for decoding one token: y[r] = W[r] . x for `rows` rows of W, read straight
 * from storage (4-bit codes or bf16 bits), nothing written but y.
 *
 * The arithmetic, the same at every level: per row, two sets of 16 fp32 accumulators A and B; the row is
 * taken 32 elements at a time (zero-padded at the end), element 32g + l goes into A[l] and 32g + 16 + l
 * into B[l], each a fused multiply-add w * x + acc. Then v[l] = A[l] + B[l], and v is halved four times,
 * v[l] += v[l + 8], v[l] += v[l + 4], v[l] += v[l + 2], v[l] += v[l + 1]; y[r] = v[0].
 *
 * Levels (as qlora_kernels_level): 0 = scalar (defines the arithmetic), 1 = AVX2 + FMA, 2 = AVX-512F;
 * a level the CPU lacks falls back to the best it has. */

/* 4-bit weight (NF4/FP4), rows of `cols` elements, cols a multiple of the block size (2 * block_bytes,
 * itself a multiple of 32): row r starts at byte r * cols / 2 of `bytes` and at block first_block +
 * r * cols / blocksize. The weight of code c in block b is codes16[c] * scale(b), rounded to bf16 when
 * `rounding` is 1 (as the dequantization kernels do). */
void qlora_gemv4(int level, float *y, const float *x, size_t rows, size_t cols, const uint8_t *bytes,
                 const struct qlora_block_scales *scales, size_t first_block, size_t block_bytes, const float *codes16,
                 int rounding);

/* bf16 weight: row r at w + r * ldw (bf16 bits), `cols` elements (any count). */
void qlora_gemv_bf16(int level, float *y, const float *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw);

/* fp32 weight: row r at w + r * ldw, `cols` elements (any count). */
void qlora_gemv_f32(int level, float *y, const float *x, size_t rows, size_t cols, const float *w, size_t ldw);

/* The same products with bf16 operands, the arithmetic of AVX512-BF16 vdpbf16ps (GemmBF16.h): x is bf16
 * pairs (word p = {x[2p] low, x[2p+1] high}), zero-padded to a multiple of 32 elements. Per row two sets
 * of 16 accumulators A and B; the 16 pairs of element group g (32 elements, zero-padded at the end) go
 * into lane p % 16 of A when g is even, of B when g is odd, each by the vdpbf16ps step (GemmBF16.h); then
 * the reduction above. Levels as GemmBF16.h: 0 = the scalar twin, 1 = AVX-512 BW + BF16. */

/* 4-bit weight, as qlora_gemv4; the weights are bf16(codes16[c] * scale(b)). With blocks of 64 elements or
 * more the row is taken in chunks of 64 (32 code bytes) instead of groups of 32: pair p (0-15) of a chunk
 * at element e goes into lane p of A as weights/x (e + 4p, e + 4p + 2) (the high nibbles of code bytes
 * 2p, 2p + 1) and into lane p of B as (e + 4p + 1, e + 4p + 3) (their low nibbles); then the reduction
 * above. Blocks of 32 keep the group order. */
void qlora_gemv4_bf16dot(int level, float *y, const uint32_t *x, size_t rows, size_t cols, const uint8_t *bytes,
                         const struct qlora_block_scales *scales, size_t first_block, size_t block_bytes, const float *codes16);

/* Several vectors against the same rows, each with exactly the single-vector arithmetic above (so
 * bit-identical to nvec separate calls) but every weight group decoded once: vector v is x + v * ldx words,
 * its result y + v * ldy. nvec >= 1. */
void qlora_gemv4_bf16dot_multi(int level, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                               size_t cols, const uint8_t *bytes, const struct qlora_block_scales *scales, size_t first_block,
                               size_t block_bytes, const float *codes16);
void qlora_gemv_bf16_bf16dot_multi(int level, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                   size_t cols, const uint16_t *w, size_t ldw);

/* bf16 weight, as qlora_gemv_bf16. */
void qlora_gemv_bf16_bf16dot(int level, float *y, const uint32_t *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw);

#endif
