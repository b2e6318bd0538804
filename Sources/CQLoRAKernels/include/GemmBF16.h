#ifndef CQLORA_GEMM_BF16_H
#define CQLORA_GEMM_BF16_H
#include <stddef.h>
#include <stdint.h>

/* bf16 GEMM building blocks: C (M x N, fp32) (+)= A (M x K) B (K x N) with both operands in bf16 and fp32
 * accumulation, the arithmetic of AVX512-BF16 `vdpbf16ps`. Operands are laid out in "pairs": a 32-bit word
 * holds two bf16 values adjacent along K, the even k in the low half, the odd k in the high half.
 *
 *   A (activations): bf16 row-major, `lda` words per row: word p of row m = {A[m][2p], A[m][2p+1]}.
 *   B panel: QLORA_BF16_NR columns of B, word [p][j] = {B[2p][n0 + j], B[2p+1][n0 + j]}.
 *
 * For each output, in order p = 0, 1, ...: acc += a_hi * b_hi, then acc += a_lo * b_lo, each a single
 * fp32 rounding to nearest-even with denormal inputs treated as zero and denormal results flushed to zero
 * (Intel's definition of vdpbf16ps). acc starts at 0, or at C when accumulating. The result of an element
 * therefore depends only on its row of A and column of B, never on blocking or threads.
 *
 * Every function takes the level to run at: 0 = the portable scalar twin (defines the arithmetic), 1 = AVX-512
 * BW + BF16 (only where qlora_bf16_best_level() >= 1; the caller checks). Both give the same bits. */
enum { QLORA_BF16_NR = 32 };

/* fp32 rows -> bf16 rows (nearest-even, NaN -> quiet NaN), `cols` values each; an odd `cols` gets one zero
 * appended so that the row is whole words. out: (rows, ldo) u16, ldo >= cols rounded up to even. */
void qlora_bf16_from_f32_rows(int level, uint16_t *out, size_t ldo, const float *in, size_t ldi, size_t rows, size_t cols);

/* The panel of B = W^T for W stored as rows n (W is N x K, bf16 row-major, ldw elements per row; ldw even):
 * panel[p][j] = {W[j][2p], W[j][2p+1]} for j < nr_valid (W points at the panel's first row), zero for
 * nr_valid <= j < NR; an odd k gets a zero high half in its last word. panel: (ceil(k/2), NR) words. */
void qlora_bf16_pack_transposed(int level, uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr_valid, size_t k);

/* The panel of B = W for W stored as rows k (W is K x N, bf16 row-major, ldw elements per row):
 * panel[p][j] = {W[2p][j], W[2p+1][j]} for j < nr_valid, k rows (an odd k pairs its last row with zero).
 * w points at the first row of the block and the panel's first column. panel: (ceil(k/2), NR) words. */
void qlora_bf16_pack_rows(int level, uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr_valid, size_t k);

/* C (m, nr_valid) (+)= A (m, 2 * pairs) B-panel (2 * pairs, nr_valid): every row of A against one panel.
 * accumulate = 0 overwrites C, 1 adds to it. */
void qlora_bf16_gemm_panel(int level, float *c, size_t ldc, const uint32_t *a, size_t lda, const uint32_t *panel,
                           size_t m, size_t pairs, size_t nr_valid, int accumulate);

/* The best level this CPU supports. */
int qlora_bf16_best_level(void);

#endif
