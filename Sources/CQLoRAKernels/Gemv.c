#include "Gemv.h"
#include "BF16Rounding.h"
#include "BlockScales.h"
#include "CQLoRAKernels.h"
#include "NibbleLookup.h"
#include <math.h>
#include <string.h>

/* ---- the arithmetic (Gemv.h), one element at a time ---- */

static inline float bf16_value(uint32_t bits) { union { uint32_t u; float f; } v = { bits << 16 }; return v.f; }

static inline float reduce16(float *v) {
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) v[l] += v[l + width];
    return v[0];
}

/* The table of one block: codes16[c] * scale, bf16-rounded when asked. */
static inline void block_table(float *table, const float *codes16, float scale, int rounding) {
    for (int c = 0; c < 16; c++) {
        float w = codes16[c] * scale;
        table[c] = rounding == 1 ? bf16_value(bf16_round_bits(w)) : w;
    }
}

static void gemv4_scalar(float *y, const float *x, size_t rows, size_t cols, const uint8_t *bytes,
                         const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16, int rounding) {
    const size_t per_row = cols / (2 * bb);
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 }, table[16];
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                block_table(table, codes16, chunks.scales[k], rounding);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    const uint8_t *src = row + e0 / 2;
                    for (int l = 0; l < 16; l++) {
                        const uint8_t first = src[l / 2], second = src[8 + l / 2];
                        a[l] = fmaf(table[l % 2 ? first & 15 : first >> 4], x[e0 + l], a[l]);
                        b[l] = fmaf(table[l % 2 ? second & 15 : second >> 4], x[e0 + 16 + l], b[l]);
                    }
                }
            }
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = a[l] + b[l];
        y[r] = reduce16(v);
    }
}

/* A dense row (fp32, or bf16 bits when `bf16`), zero-padded to whole 32-element groups. */
static void gemv_dense_scalar(float *y, const float *x, size_t rows, size_t cols, const void *w, size_t ldw, int bf16) {
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 };
        const float *f32 = (const float *)w + r * ldw;
        const uint16_t *b16 = (const uint16_t *)w + r * ldw;
        for (size_t e0 = 0; e0 < cols; e0 += 32)
            for (int l = 0; l < 16; l++) {
                const size_t i = e0 + l, j = e0 + 16 + l;
                const float wi = i < cols ? (bf16 ? bf16_value(b16[i]) : f32[i]) : 0.0f;
                const float wj = j < cols ? (bf16 ? bf16_value(b16[j]) : f32[j]) : 0.0f;
                a[l] = fmaf(wi, i < cols ? x[i] : 0.0f, a[l]);
                b[l] = fmaf(wj, j < cols ? x[j] : 0.0f, b[l]);
            }
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = a[l] + b[l];
        y[r] = reduce16(v);
    }
}

static void gemv_bf16_scalar(float *y, const float *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    gemv_dense_scalar(y, x, rows, cols, w, ldw, 1);
}

static void gemv_f32_scalar(float *y, const float *x, size_t rows, size_t cols, const float *w, size_t ldw) {
    gemv_dense_scalar(y, x, rows, cols, w, ldw, 0);
}

/* ---- AVX2 + FMA: each 16-lane set as two ymm (lanes 0-7, 8-15) ---- */
#define AVX2 __attribute__((target("avx2,fma")))

/* The table of one block in two ymm, bf16-rounded when asked. */
AVX2 static inline void block_table_avx2(__m256 *lo, __m256 *hi, const float *codes16, float scale, int rounding) {
    const __m256 s = _mm256_set1_ps(scale);
    *lo = _mm256_mul_ps(_mm256_loadu_ps(codes16), s);
    *hi = _mm256_mul_ps(_mm256_loadu_ps(codes16 + 8), s);
    if (rounding == 1) {
        *lo = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(*lo), 16));
        *hi = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(*hi), 16));
    }
}

AVX2 static void gemv4_avx2(float *y, const float *x, size_t rows, size_t cols, const uint8_t *bytes,
                            const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16, int rounding) {
    const size_t per_row = cols / (2 * bb);
    const __m128i mask = _mm_set1_epi8(0x0f);
    for (size_t r = 0; r < rows; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, lo, hi;
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                block_table_avx2(&lo, &hi, codes16, chunks.scales[k], rounding);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    const __m128i raw = _mm_loadu_si128((const __m128i *)(row + e0 / 2));
                    const __m128i first = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
                    const __m128i second = _mm_unpackhi_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
                    a0 = _mm256_fmadd_ps(lookup8_avx2(lo, hi, first), _mm256_loadu_ps(x + e0), a0);
                    a1 = _mm256_fmadd_ps(lookup8_avx2(lo, hi, _mm_srli_si128(first, 8)), _mm256_loadu_ps(x + e0 + 8), a1);
                    b0 = _mm256_fmadd_ps(lookup8_avx2(lo, hi, second), _mm256_loadu_ps(x + e0 + 16), b0);
                    b1 = _mm256_fmadd_ps(lookup8_avx2(lo, hi, _mm_srli_si128(second, 8)), _mm256_loadu_ps(x + e0 + 24), b1);
                }
            }
        y[r] = reduce_avx2(a0, a1, b0, b1);
    }
}

AVX2 static inline __m256 bf16x8_avx2(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

AVX2 static void gemv_bf16_avx2(float *y, const float *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    const size_t whole = cols / 32 * 32;
    float xt[32] = { 0 };
    memcpy(xt, x + whole, (cols - whole) * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        const uint16_t *row = w + r * ldw;
        for (size_t e0 = 0; e0 < whole; e0 += 32) {
            a0 = _mm256_fmadd_ps(bf16x8_avx2(row + e0), _mm256_loadu_ps(x + e0), a0);
            a1 = _mm256_fmadd_ps(bf16x8_avx2(row + e0 + 8), _mm256_loadu_ps(x + e0 + 8), a1);
            b0 = _mm256_fmadd_ps(bf16x8_avx2(row + e0 + 16), _mm256_loadu_ps(x + e0 + 16), b0);
            b1 = _mm256_fmadd_ps(bf16x8_avx2(row + e0 + 24), _mm256_loadu_ps(x + e0 + 24), b1);
        }
        if (whole < cols) {   /* the zero-padded last group */
            uint16_t wt[32] = { 0 };
            memcpy(wt, row + whole, (cols - whole) * sizeof(uint16_t));
            a0 = _mm256_fmadd_ps(bf16x8_avx2(wt), _mm256_loadu_ps(xt), a0);
            a1 = _mm256_fmadd_ps(bf16x8_avx2(wt + 8), _mm256_loadu_ps(xt + 8), a1);
            b0 = _mm256_fmadd_ps(bf16x8_avx2(wt + 16), _mm256_loadu_ps(xt + 16), b0);
            b1 = _mm256_fmadd_ps(bf16x8_avx2(wt + 24), _mm256_loadu_ps(xt + 24), b1);
        }
        y[r] = reduce_avx2(a0, a1, b0, b1);
    }
}

AVX2 static void gemv_f32_avx2(float *y, const float *x, size_t rows, size_t cols, const float *w, size_t ldw) {
    const size_t whole = cols / 32 * 32;
    float xt[32] = { 0 };
    memcpy(xt, x + whole, (cols - whole) * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        const float *row = w + r * ldw;
        for (size_t e0 = 0; e0 < whole; e0 += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e0), _mm256_loadu_ps(x + e0), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e0 + 8), _mm256_loadu_ps(x + e0 + 8), a1);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e0 + 16), _mm256_loadu_ps(x + e0 + 16), b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e0 + 24), _mm256_loadu_ps(x + e0 + 24), b1);
        }
        if (whole < cols) {
            float wt[32] = { 0 };
            memcpy(wt, row + whole, (cols - whole) * sizeof(float));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wt), _mm256_loadu_ps(xt), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 8), _mm256_loadu_ps(xt + 8), a1);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 16), _mm256_loadu_ps(xt + 16), b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 24), _mm256_loadu_ps(xt + 24), b1);
        }
        y[r] = reduce_avx2(a0, a1, b0, b1);
    }
}

/* ---- AVX-512F: one zmm per 16-lane set, two rows at a time (four independent FMA chains) ---- */
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 block_table_avx512(__m512 codes, float scale, int rounding) {
    const __m512 t = _mm512_mul_ps(codes, _mm512_set1_ps(scale));
    return rounding == 1 ? bf16_round_keep_avx512(t) : t;
}

/* 16 bytes of codes -> the indices of elements 0..15 and 16..31 (high nibble first). */
AVX512 static inline void nibble_indices(const uint8_t *src, __m512i *first, __m512i *second) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i raw = _mm_loadu_si128((const __m128i *)src);
    const __m128i h = _mm_and_si128(_mm_srli_epi16(raw, 4), mask), l = _mm_and_si128(raw, mask);
    *first = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(h, l));
    *second = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(h, l));
}

AVX512 static void gemv4_avx512(float *y, const float *x, size_t rows, size_t cols, const uint8_t *bytes,
                                const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16, int rounding) {
    const size_t per_row = cols / (2 * bb);
    const __m512 codes = _mm512_loadu_ps(codes16);
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const uint8_t *row0 = bytes + r * cols / 2, *row1 = row0 + cols / 2;
        scale_chunks c0, c1;
        scale_chunks_init(&c0, scales, first_block + r * per_row, per_row);
        scale_chunks_init(&c1, scales, first_block + (r + 1) * per_row, per_row);
        while (scale_chunks_next(&c0) && scale_chunks_next(&c1))
            for (size_t k = 0; k < c0.count; k++) {
                const __m512 t0 = block_table_avx512(codes, c0.scales[k], rounding);
                const __m512 t1 = block_table_avx512(codes, c1.scales[k], rounding);
                const size_t block = c0.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    const __m512 xa = _mm512_loadu_ps(x + e0), xb = _mm512_loadu_ps(x + e0 + 16);
                    __m512i f0, s0, f1, s1;
                    nibble_indices(row0 + e0 / 2, &f0, &s0);
                    nibble_indices(row1 + e0 / 2, &f1, &s1);
                    a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(f0, t0), xa, a0);
                    b0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(s0, t0), xb, b0);
                    a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(f1, t1), xa, a1);
                    b1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(s1, t1), xb, b1);
                }
            }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv4_avx2(y + r, x, rows - r, cols, bytes + r * cols / 2, scales, first_block + r * per_row, bb, codes16, rounding);
}

AVX512 static inline __m512 bf16x16_avx512(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

AVX512 static void gemv_bf16_avx512(float *y, const float *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    const size_t whole = cols / 32 * 32;
    float xt[32] = { 0 };
    memcpy(xt, x + whole, (cols - whole) * sizeof(float));
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const uint16_t *row0 = w + r * ldw, *row1 = row0 + ldw;
        for (size_t e0 = 0; e0 < whole; e0 += 32) {
            const __m512 xa = _mm512_loadu_ps(x + e0), xb = _mm512_loadu_ps(x + e0 + 16);
            a0 = _mm512_fmadd_ps(bf16x16_avx512(row0 + e0), xa, a0);
            b0 = _mm512_fmadd_ps(bf16x16_avx512(row0 + e0 + 16), xb, b0);
            a1 = _mm512_fmadd_ps(bf16x16_avx512(row1 + e0), xa, a1);
            b1 = _mm512_fmadd_ps(bf16x16_avx512(row1 + e0 + 16), xb, b1);
        }
        if (whole < cols) {
            uint16_t w0[32] = { 0 }, w1[32] = { 0 };
            memcpy(w0, row0 + whole, (cols - whole) * sizeof(uint16_t));
            memcpy(w1, row1 + whole, (cols - whole) * sizeof(uint16_t));
            const __m512 xa = _mm512_loadu_ps(xt), xb = _mm512_loadu_ps(xt + 16);
            a0 = _mm512_fmadd_ps(bf16x16_avx512(w0), xa, a0);
            b0 = _mm512_fmadd_ps(bf16x16_avx512(w0 + 16), xb, b0);
            a1 = _mm512_fmadd_ps(bf16x16_avx512(w1), xa, a1);
            b1 = _mm512_fmadd_ps(bf16x16_avx512(w1 + 16), xb, b1);
        }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv_bf16_avx2(y + r, x, rows - r, cols, w + r * ldw, ldw);
}

AVX512 static void gemv_f32_avx512(float *y, const float *x, size_t rows, size_t cols, const float *w, size_t ldw) {
    const size_t groups = (cols + 31) / 32;
    const __mmask16 full = 0xffff;
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const float *row0 = w + r * ldw, *row1 = row0 + ldw;
        for (size_t g = 0; g < groups; g++) {
            const size_t e0 = 32 * g, left = cols - e0;
            const __mmask16 ma = left >= 16 ? full : (__mmask16)((1u << left) - 1);
            const __mmask16 mb = left >= 32 ? full : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            const __m512 xa = _mm512_maskz_loadu_ps(ma, x + e0), xb = _mm512_maskz_loadu_ps(mb, x + e0 + 16);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(ma, row0 + e0), xa, a0);
            b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mb, row0 + e0 + 16), xb, b0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(ma, row1 + e0), xa, a1);
            b1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mb, row1 + e0 + 16), xb, b1);
        }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv_f32_avx2(y + r, x, rows - r, cols, w + r * ldw, ldw);
}

/* ---- dispatch ---- */
static inline int usable(int level) {
    const int best = qlora_kernels_best_level();
    return level < 0 ? 0 : (level > best ? best : level);
}

void qlora_gemv4(int level, float *y, const float *x, size_t rows, size_t cols, const uint8_t *bytes,
                 const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16, int rounding) {
    if (rows == 0) return;
    switch (usable(level)) {
    case 2: gemv4_avx512(y, x, rows, cols, bytes, scales, first_block, bb, codes16, rounding); break;
    case 1: gemv4_avx2(y, x, rows, cols, bytes, scales, first_block, bb, codes16, rounding); break;
    default: gemv4_scalar(y, x, rows, cols, bytes, scales, first_block, bb, codes16, rounding); break;
    }
}

void qlora_gemv_bf16(int level, float *y, const float *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    if (rows == 0) return;
    switch (usable(level)) {
    case 2: gemv_bf16_avx512(y, x, rows, cols, w, ldw); break;
    case 1: gemv_bf16_avx2(y, x, rows, cols, w, ldw); break;
    default: gemv_bf16_scalar(y, x, rows, cols, w, ldw); break;
    }
}

void qlora_gemv_f32(int level, float *y, const float *x, size_t rows, size_t cols, const float *w, size_t ldw) {
    if (rows == 0) return;
    switch (usable(level)) {
    case 2: gemv_f32_avx512(y, x, rows, cols, w, ldw); break;
    case 1: gemv_f32_avx2(y, x, rows, cols, w, ldw); break;
    default: gemv_f32_scalar(y, x, rows, cols, w, ldw); break;
    }
}
