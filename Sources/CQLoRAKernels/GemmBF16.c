#include "GemmBF16.h"
#include "BF16Rounding.h"
#include "DotBF16.h"
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Register tile of the SIMD kernel: MR rows of A x NR = 32 columns (two zmm) = 24 accumulators. */
enum { NR = QLORA_BF16_NR, MR = 12 };

static inline uint32_t load_word(const uint16_t *p) { uint32_t w; memcpy(&w, p, 4); return w; }

/* ---- the scalar twin: the arithmetic of vdpbf16ps, one product at a time ---- */

static void panel_scalar(float *c, size_t ldc, const uint32_t *a, size_t lda, const uint32_t *panel,
                         size_t m, size_t pairs, size_t nr, int accumulate) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < nr; j++) {
            float acc = accumulate ? c[i * ldc + j] : 0.0f;
            for (size_t p = 0; p < pairs; p++) acc = dp_pair(acc, a[i * lda + p], panel[p * NR + j]);
            c[i * ldc + j] = acc;
        }
}

static void from_f32_scalar(uint16_t *out, size_t ldo, const float *in, size_t ldi, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t k = 0; k < cols; k++) out[r * ldo + k] = (uint16_t)bf16_round_bits(in[r * ldi + k]);
        if (cols & 1) out[r * ldo + cols] = 0;
    }
}

static void pack_transposed_scalar(uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    const size_t whole = k / 2, pairs = (k + 1) / 2;
    for (size_t p = 0; p < pairs; p++)
        for (size_t j = 0; j < NR; j++) {
            uint32_t word = 0;
            if (j < nr) word = p < whole ? load_word(w + j * ldw + 2 * p) : w[j * ldw + 2 * p];
            panel[p * NR + j] = word;
        }
}

static void pack_rows_scalar(uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    const size_t pairs = (k + 1) / 2;
    for (size_t p = 0; p < pairs; p++) {
        const uint16_t *even = w + 2 * p * ldw, *odd = 2 * p + 1 < k ? even + ldw : NULL;
        for (size_t j = 0; j < NR; j++)
            panel[p * NR + j] = j < nr ? (uint32_t)even[j] | (odd ? (uint32_t)odd[j] << 16 : 0u) : 0u;
    }
}

/* ---- AVX-512 (F, BW, BF16) ---- */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* rows x 32 tile: acc[i][h] = columns 16h .. 16h+15 of row i. Inlined with a constant `rows`. */
TARGET __attribute__((always_inline))
static inline void tile_avx512(const int rows, float *c, size_t ldc, const uint32_t *a, size_t lda, const uint32_t *panel,
                               size_t pairs, __mmask16 mask0, __mmask16 mask1, int accumulate) {
    __m512 acc[MR][2];
    for (int i = 0; i < rows; i++) {
        acc[i][0] = accumulate ? _mm512_maskz_loadu_ps(mask0, c + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = accumulate ? _mm512_maskz_loadu_ps(mask1, c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (size_t p = 0; p < pairs; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + p * NR + 16);
        for (int i = 0; i < rows; i++) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * lda + p]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    for (int i = 0; i < rows; i++) {
        _mm512_mask_storeu_ps(c + i * ldc, mask0, acc[i][0]);
        _mm512_mask_storeu_ps(c + i * ldc + 16, mask1, acc[i][1]);
    }
}

TARGET
static void panel_avx512(float *c, size_t ldc, const uint32_t *a, size_t lda, const uint32_t *panel,
                         size_t m, size_t pairs, size_t nr, int accumulate) {
    const __mmask16 mask0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 mask1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    size_t i = 0;
    for (; i + MR <= m; i += MR) tile_avx512(MR, c + i * ldc, ldc, a + i * lda, lda, panel, pairs, mask0, mask1, accumulate);
    float *ct = c + i * ldc;
    const uint32_t *at = a + i * lda;
    switch (m - i) {
#define REST(R) case R: tile_avx512(R, ct, ldc, at, lda, panel, pairs, mask0, mask1, accumulate); break;
    REST(1) REST(2) REST(3) REST(4) REST(5) REST(6) REST(7) REST(8) REST(9) REST(10) REST(11)
#undef REST
    default: break;
    }
}

/* 16 fp32 -> 16 bf16 bits, the same integer rounding as bf16_round_bits. */
TARGET
static inline __m256i bf16_round16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

TARGET
static void from_f32_avx512(uint16_t *out, size_t ldo, const float *in, size_t ldi, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        const float *src = in + r * ldi;
        uint16_t *dst = out + r * ldo;
        size_t k = 0;
        for (; k + 16 <= cols; k += 16) _mm256_storeu_si256((__m256i *)(dst + k), bf16_round16(_mm512_loadu_ps(src + k)));
        if (k < cols) {
            const __mmask16 m = (__mmask16)((1u << (cols - k)) - 1);
            _mm256_mask_storeu_epi16(dst + k, m, bf16_round16(_mm512_maskz_loadu_ps(m, src + k)));
        }
        if (cols & 1) dst[cols] = 0;
    }
}

/* In-place transpose of a 16 x 16 matrix of 32-bit words, one row per register. */
TARGET
static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[g][c]: 128-bit lane L holds column c + 4L of rows 4g .. 4g+3 */
    __m512i u[4][4];
    for (int g = 0; g < 4; g++) {
        u[g][0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[g][1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[g][2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[g][3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    /* a 4 x 4 transpose of 128-bit lanes per c */
    for (int c = 0; c < 4; c++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[0][c], u[1][c], 0x88), v1 = _mm512_shuffle_i32x4(u[0][c], u[1][c], 0xdd);
        const __m512i v2 = _mm512_shuffle_i32x4(u[2][c], u[3][c], 0x88), v3 = _mm512_shuffle_i32x4(u[2][c], u[3][c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[c + 4] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[c + 8] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        r[c + 12] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
}

TARGET
static void pack_transposed_avx512(uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    const size_t whole = k / 2;
    size_t p = 0;
    if (nr == NR) {
        for (; p + 16 <= whole; p += 16)
            for (int half = 0; half < 2; half++) {
                __m512i r[16];
                for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_si512(w + (size_t)(16 * half + j) * ldw + 2 * p);
                transpose16(r);
                for (int q = 0; q < 16; q++) _mm512_storeu_si512(panel + (p + q) * NR + 16 * half, r[q]);
            }
    }
    if (p < (k + 1) / 2) {
        /* the rest (narrow panels, the last pairs): the scalar twin on what is left */
        uint32_t *rest = panel + p * NR;
        pack_transposed_scalar(rest, w + 2 * p, ldw, nr, k - 2 * p);
    }
}

TARGET
static void pack_rows_avx512(uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    const __mmask32 mask = nr >= 32 ? 0xffffffffu : (__mmask32)((1u << nr) - 1);
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24,
                                        55, 23, 54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    const size_t pairs = (k + 1) / 2;
    for (size_t p = 0; p < pairs; p++) {
        const __m512i even = _mm512_maskz_loadu_epi16(mask, w + 2 * p * ldw);
        const __m512i odd = 2 * p + 1 < k ? _mm512_maskz_loadu_epi16(mask, w + (2 * p + 1) * ldw) : _mm512_setzero_si512();
        _mm512_storeu_si512(panel + p * NR, _mm512_permutex2var_epi16(even, lo, odd));
        _mm512_storeu_si512(panel + p * NR + 16, _mm512_permutex2var_epi16(even, hi, odd));
    }
}

/* ---- dispatch ---- */
static int best(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bf16") ? 1 : 0;
}

int qlora_bf16_best_level(void) { return best(); }

void qlora_bf16_from_f32_rows(int level, uint16_t *out, size_t ldo, const float *in, size_t ldi, size_t rows, size_t cols) {
    if (level == 1) from_f32_avx512(out, ldo, in, ldi, rows, cols); else from_f32_scalar(out, ldo, in, ldi, rows, cols);
}

void qlora_bf16_pack_transposed(int level, uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    if (level == 1) pack_transposed_avx512(panel, w, ldw, nr, k); else pack_transposed_scalar(panel, w, ldw, nr, k);
}

void qlora_bf16_pack_rows(int level, uint32_t *panel, const uint16_t *w, size_t ldw, size_t nr, size_t k) {
    if (level == 1) pack_rows_avx512(panel, w, ldw, nr, k); else pack_rows_scalar(panel, w, ldw, nr, k);
}

void qlora_bf16_gemm_panel(int level, float *c, size_t ldc, const uint32_t *a, size_t lda, const uint32_t *panel,
                           size_t m, size_t pairs, size_t nr, int accumulate) {
    if (m == 0 || nr == 0) return;
    if (level == 1) panel_avx512(c, ldc, a, lda, panel, m, pairs, nr, accumulate);
    else panel_scalar(c, ldc, a, lda, panel, m, pairs, nr, accumulate);
}
