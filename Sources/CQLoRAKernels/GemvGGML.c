#include "GemvGGML.h"
#include "BF16Rounding.h"
#include "CQLoRAKernels.h"
#include "DotBF16.h"
#include "GGMLGroups.h"
#include "NibbleLookup.h"
#include <immintrin.h>
#include <string.h>

/* ---- which types ---- */

int qlora_ggml_fused(int type) {
    switch (type) {
    case QLORA_GGML_Q8_0: case QLORA_GGML_Q4_0: case QLORA_GGML_Q4_1: case QLORA_GGML_Q5_0:
    case QLORA_GGML_Q4_K: case QLORA_GGML_Q5_K: case QLORA_GGML_Q6_K: return 1;
    default: return 0;
    }
}

/* ---- the scalar twins: every type, one 32-element group at a time (GGMLGroups.h) ---- */

static void gemv_ggml_f32_scalar(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                 size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    const size_t bb = ggml_block_bytes(type), per_block = ggml_block_groups(type);
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 }, w[32];
        const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
        for (size_t g = 0; g < cols / 32; g++) {
            group_values(type, row + g / per_block * bb, (int)(g % per_block), w);
            if (rounding == 1)
                for (int j = 0; j < 32; j++) w[j] = f32_from_bits(bf16_round_bits(w[j]) << 16);
            for (int l = 0; l < 16; l++) {
                a[l] = fmaf(w[l], x[32 * g + l], a[l]);
                b[l] = fmaf(w[16 + l], x[32 * g + 16 + l], b[l]);
            }
        }
        y[r] = reduce_lanes(a, b);
    }
}

static void gemv_ggml_bf16dot_scalar(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                     size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows, size_t first_row) {
    const size_t bb = ggml_block_bytes(type), per_block = ggml_block_groups(type);
    for (size_t v = 0; v < nvec; v++)
        for (size_t r = 0; r < rows; r++) {
            float a[16] = { 0 }, b[16] = { 0 }, w[32];
            const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
            for (size_t g = 0; g < cols / 32; g++) {
                group_values(type, row + g / per_block * bb, (int)(g % per_block), w);
                float *acc = g % 2 == 0 ? a : b;
                for (int l = 0; l < 16; l++) {
                    const uint32_t pair = bf16_round_bits(w[2 * l]) | bf16_round_bits(w[2 * l + 1]) << 16;
                    acc[l] = dp_pair(acc[l], pair, x[v * ldx + 16 * g + l]);
                }
            }
            y[v * ldy + r] = reduce_lanes(a, b);
        }
}

/* ---- AVX2 + FMA: fp32 x, the 16-lane sets as two ymm each ---- */
#define AVX2 __attribute__((target("avx2,fma")))

/* The block's weights 0-7, 8-15, 16-23, 24-31. */
AVX2 static inline void block_avx2(int type, const uint8_t *b, __m256 *w) {
    const __m256 d = _mm256_set1_ps(half_at(b));
    if (type == QLORA_GGML_Q8_0) {
        for (int k = 0; k < 4; k++)
            w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k)))), d);
        return;
    }
    const __m128i raw = _mm_loadu_si128((const __m128i *)(b + (type == QLORA_GGML_Q4_1 ? 4 : type == QLORA_GGML_Q5_0 ? 6 : 2)));
    const __m256i q0 = _mm256_cvtepu8_epi32(raw), q1 = _mm256_cvtepu8_epi32(_mm_srli_si128(raw, 8));
    const __m256i mask = _mm256_set1_epi32(15);
    __m256i n[4] = { _mm256_and_si256(q0, mask), _mm256_and_si256(q1, mask), _mm256_srli_epi32(q0, 4), _mm256_srli_epi32(q1, 4) };
    if (type == QLORA_GGML_Q5_0) {
        /* In bytes: the 32 nibbles in element order, qh's bits spread to bytes (0xff where set, as
         * llama.cpp's bytes_from_bits_32), 16 subtracted where the fifth bit is clear, then widened. */
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        const __m128i low4 = _mm_set1_epi8(15);
        const __m256i nibbles = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(raw, low4)),
                                                        _mm_and_si128(_mm_srli_epi16(raw, 4), low4), 1);
        const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                                   _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
        const __m256i bits = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
        const __m256i codes = _mm256_sub_epi8(nibbles, _mm256_andnot_si256(bits, _mm256_set1_epi8(16)));
        const __m128i c0 = _mm256_castsi256_si128(codes), c1 = _mm256_extracti128_si256(codes, 1);
        const __m128i parts[4] = { c0, _mm_srli_si128(c0, 8), c1, _mm_srli_si128(c1, 8) };
        for (int k = 0; k < 4; k++) w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k])), d);
    } else if (type == QLORA_GGML_Q4_0) {
        for (int k = 0; k < 4; k++) w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(n[k], _mm256_set1_epi32(8))), d);
    } else {
        const __m256 m = _mm256_set1_ps(half_at(b + 2));
        for (int k = 0; k < 4; k++) w[k] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(n[k]), d), m);
    }
}

AVX2 static inline void gemv_ggml_f32_avx2_typed(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                                 size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    const size_t bb = ggml_block_bytes(type);
    for (size_t r = 0; r < rows; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, w[4];
        const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
        for (size_t g = 0; g < cols / 32; g++) {
            block_avx2(type, row + g * bb, w);
            if (rounding == 1)
                for (int k = 0; k < 4; k++) w[k] = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(w[k]), 16));
            const float *xg = x + 32 * g;
            a0 = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xg), a0);
            a1 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xg + 8), a1);
            b0 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xg + 16), b0);
            b1 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xg + 24), b1);
        }
        y[r] = reduce_avx2(a0, a1, b0, b1);
    }
}

AVX2 static void gemv_ggml_f32_avx2(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                    size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    switch (type) {   /* one specialized loop per type */
    case QLORA_GGML_Q8_0: gemv_ggml_f32_avx2_typed(QLORA_GGML_Q8_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q4_0: gemv_ggml_f32_avx2_typed(QLORA_GGML_Q4_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q5_0: gemv_ggml_f32_avx2_typed(QLORA_GGML_Q5_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    default: gemv_ggml_f32_avx2_typed(QLORA_GGML_Q4_1, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    }
}

/* ---- AVX-512F: fp32 x, one zmm per 16-lane set, two rows at a time ---- */
#define AVX512 __attribute__((target("avx512f")))

/* The block's weights 0-15 and 16-31. */
AVX512 static inline void block_avx512(int type, const uint8_t *b, __m512 *lo, __m512 *hi) {
    const __m512 d = _mm512_set1_ps(half_at(b));
    if (type == QLORA_GGML_Q8_0) {
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)))), d);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))), d);
        return;
    }
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + (type == QLORA_GGML_Q4_1 ? 4 : type == QLORA_GGML_Q5_0 ? 6 : 2))));
    const __m512i n0 = _mm512_and_si512(q, _mm512_set1_epi32(15)), n1 = _mm512_srli_epi32(q, 4);
    if (type == QLORA_GGML_Q5_0) {   /* (q | 16 * bit) - 16: minus 16 where the element's qh bit is clear */
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        const __m512i sixteen = _mm512_set1_epi32(16);
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mask_sub_epi32(n0, (__mmask16)~qh, n0, sixteen)), d);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mask_sub_epi32(n1, (__mmask16)~(qh >> 16), n1, sixteen)), d);
    } else if (type == QLORA_GGML_Q4_0) {
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(n0, _mm512_set1_epi32(8))), d);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(n1, _mm512_set1_epi32(8))), d);
    } else {
        const __m512 m = _mm512_set1_ps(half_at(b + 2));
        *lo = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(n0), d), m);
        *hi = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(n1), d), m);
    }
}

AVX512 static inline void gemv_ggml_f32_avx512_typed(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                                     size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    const size_t bb = ggml_block_bytes(type);
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, lo0, hi0, lo1, hi1;
        const uint8_t *row0 = row_at(data, row_bytes, stored_rows, first_row + r);
        const uint8_t *row1 = row_at(data, row_bytes, stored_rows, first_row + r + 1);
        for (size_t g = 0; g < cols / 32; g++) {
            _mm_prefetch((const char *)(row0 + g * bb + PREFETCH_BYTES), _MM_HINT_T0);
            _mm_prefetch((const char *)(row1 + g * bb + PREFETCH_BYTES), _MM_HINT_T0);
            block_avx512(type, row0 + g * bb, &lo0, &hi0);
            block_avx512(type, row1 + g * bb, &lo1, &hi1);
            if (rounding == 1) {
                lo0 = bf16_round_keep_avx512(lo0); hi0 = bf16_round_keep_avx512(hi0);
                lo1 = bf16_round_keep_avx512(lo1); hi1 = bf16_round_keep_avx512(hi1);
            }
            const __m512 xa = _mm512_loadu_ps(x + 32 * g), xb = _mm512_loadu_ps(x + 32 * g + 16);
            a0 = _mm512_fmadd_ps(lo0, xa, a0);
            b0 = _mm512_fmadd_ps(hi0, xb, b0);
            a1 = _mm512_fmadd_ps(lo1, xa, a1);
            b1 = _mm512_fmadd_ps(hi1, xb, b1);
        }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv_ggml_f32_avx2(type, y + r, x, rows - r, cols, data, row_bytes, stored_rows, first_row + r, rounding);
}

AVX512 static void gemv_ggml_f32_avx512(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                        size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    switch (type) {
    case QLORA_GGML_Q8_0: gemv_ggml_f32_avx512_typed(QLORA_GGML_Q8_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q4_0: gemv_ggml_f32_avx512_typed(QLORA_GGML_Q4_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q5_0: gemv_ggml_f32_avx512_typed(QLORA_GGML_Q5_0, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    default: gemv_ggml_f32_avx512_typed(QLORA_GGML_Q4_1, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    }
}

/* ---- AVX-512 BW + BF16: bf16 x pairs, vcvtne2ps2bf16 then vdpbf16ps ---- */
#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The block's 32 bf16 weights in element order (word k = element k, so dword p is pair p). vcvtne2ps2bf16
 * rounds as bf16_round_bits for every input but fp32 denormals, which these blocks cannot produce: a
 * nonzero q * d (+ m) is a multiple of 2^-24. */
BF16 static inline __m512i block_bf16(int type, const uint8_t *b) {
    __m512 lo, hi;
    block_avx512(type, b, &lo, &hi);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

#define DP(acc, w, xv) _mm512_dpbf16_ps((acc), (__m512bh)(w), (__m512bh)(xv))

enum { MAX_VECTORS = GGML_MAX_VECTORS };

BF16 static inline void gemv_ggml_bf16dot_avx512_typed(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec,
                                                       size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                                                       const int32_t *stored_rows, size_t first_row) {
    const size_t bb = ggml_block_bytes(type), groups = cols / 32;
    size_t r = 0;
    if (nvec == 1)   /* two rows at a time: four independent chains */
        for (; r + 2 <= rows; r += 2) {
            __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
            const uint8_t *row0 = row_at(data, row_bytes, stored_rows, first_row + r);
            const uint8_t *row1 = row_at(data, row_bytes, stored_rows, first_row + r + 1);
            size_t g = 0;
            for (; g + 2 <= groups; g += 2) {
                _mm_prefetch((const char *)(row0 + g * bb + PREFETCH_BYTES), _MM_HINT_T0);
                _mm_prefetch((const char *)(row1 + g * bb + PREFETCH_BYTES), _MM_HINT_T0);
                const __m512i xa = _mm512_loadu_si512(x + 16 * g), xb = _mm512_loadu_si512(x + 16 * g + 16);
                a0 = DP(a0, block_bf16(type, row0 + g * bb), xa);
                a1 = DP(a1, block_bf16(type, row1 + g * bb), xa);
                b0 = DP(b0, block_bf16(type, row0 + (g + 1) * bb), xb);
                b1 = DP(b1, block_bf16(type, row1 + (g + 1) * bb), xb);
            }
            if (g < groups) {
                const __m512i xa = _mm512_loadu_si512(x + 16 * g);
                a0 = DP(a0, block_bf16(type, row0 + g * bb), xa);
                a1 = DP(a1, block_bf16(type, row1 + g * bb), xa);
            }
            y[r] = reduce_avx512(a0, b0);
            y[r + 1] = reduce_avx512(a1, b1);
        }
    for (; r < rows; r++) {
        __m512 a[MAX_VECTORS], b[MAX_VECTORS];
        for (size_t v = 0; v < nvec; v++) { a[v] = _mm512_setzero_ps(); b[v] = a[v]; }
        const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
        for (size_t g = 0; g < groups; g++) {
            const __m512i w = block_bf16(type, row + g * bb);
            if (g % 2 == 0) for (size_t v = 0; v < nvec; v++) a[v] = DP(a[v], w, _mm512_loadu_si512(x + v * ldx + 16 * g));
            else for (size_t v = 0; v < nvec; v++) b[v] = DP(b[v], w, _mm512_loadu_si512(x + v * ldx + 16 * g));
        }
        for (size_t v = 0; v < nvec; v++) y[v * ldy + r] = reduce_avx512(a[v], b[v]);
    }
}

BF16 static void gemv_ggml_bf16dot_avx512(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                          size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows, size_t first_row) {
    switch (type) {
    case QLORA_GGML_Q8_0:
        gemv_ggml_bf16dot_avx512_typed(QLORA_GGML_Q8_0, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    case QLORA_GGML_Q4_0:
        gemv_ggml_bf16dot_avx512_typed(QLORA_GGML_Q4_0, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    case QLORA_GGML_Q5_0:
        gemv_ggml_bf16dot_avx512_typed(QLORA_GGML_Q5_0, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    default:
        gemv_ggml_bf16dot_avx512_typed(QLORA_GGML_Q4_1, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    }
}

/* ---- dispatch ---- */

void qlora_gemv_ggml_f32(int level, int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                         size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    if (rows == 0) return;
    const int best = qlora_kernels_best_level(), use = level < 0 ? 0 : level > best ? best : level;
    if (use == 2) (ggml_is_k(type) ? qlora_ggml_k_f32_avx512 : gemv_ggml_f32_avx512)(type, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding);
    else if (use == 1) (ggml_is_k(type) ? qlora_ggml_k_f32_avx2 : gemv_ggml_f32_avx2)(type, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding);
    else gemv_ggml_f32_scalar(type, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding);
}

void qlora_gemv_ggml_bf16dot(int level, int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec,
                             size_t rows, size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows,
                             size_t first_row) {
    if (rows == 0 || nvec == 0) return;
    for (size_t v0 = 0; v0 < nvec; v0 += MAX_VECTORS) {
        const size_t n = nvec - v0 < MAX_VECTORS ? nvec - v0 : MAX_VECTORS;
        if (level == 1 && qlora_bf16_best_level() >= 1)
            (ggml_is_k(type) ? qlora_ggml_k_bf16dot_avx512 : gemv_ggml_bf16dot_avx512)(type, y + v0 * ldy, ldy, x + v0 * ldx, ldx, n, rows, cols, data, row_bytes, stored_rows, first_row);
        else
            gemv_ggml_bf16dot_scalar(type, y + v0 * ldy, ldy, x + v0 * ldx, ldx, n, rows, cols, data, row_bytes, stored_rows, first_row);
    }
}
