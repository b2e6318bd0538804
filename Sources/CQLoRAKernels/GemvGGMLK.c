/* The fused decode kernels of the K-quant super-blocks Q4_K, Q5_K and Q6_K (GemvGGML.h): AVX2, AVX-512F
 * and AVX-512 BF16 loops; the scalar twins and the dispatch are GemvGGML.c's.
 *
 * A super-block is 256 elements, eight 32-element groups. Its scales are computed once (kscales_of) and
 * each group is decoded to 32 one-byte codes (kcodes), then to fp32 weights 16 lanes at a time. The
 * weights are bit for bit GGMLGroups.h's: d * scale and dmin * min are exact (11 x 6 bits; Q6_K 11 x 8),
 * and so is (d * scale) * q (at most 22 bits), so Q4_K/Q5_K's `(d * scale) * q - dmin * min` is one
 * rounding and equals fma(d * scale, q, -(dmin * min)). Groups are accumulated in order, element l of a
 * group into lane l of A (l < 16) or l - 16 of B, as the dense kernels do (Gemv.h). */
#include "BF16Rounding.h"
#include "GGMLGroups.h"
#include "NibbleLookup.h"
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f")))
#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The scales of a super-block's groups. Q4_K, Q5_K: group g is scaled by scale[g], then neg_min[g] is
 * added; Q6_K: lanes 0-15 of group g by scale[2 * g], lanes 16-31 by scale[2 * g + 1] (16-element
 * sub-blocks). */
typedef struct { float scale[16], neg_min[8]; } kscales;

/* Computed in SIMD for the 8 (16) groups at once: a scalar loop here cost as much as the group loop.
 * Q4_K/Q5_K's 6-bit fields unpacked as words (scale_min_k4 for all j: the low 6 bits of bytes 0-3 and
 * 4-7 are scales and mins 0-3; 4-7 take their low 4 bits from bytes 8-11, their high 2 from the top of
 * bytes 0-3 and 4-7). -(dmin * min) is computed as (-dmin) * min: the same bits (an exact product). */
AVX2 static inline void kscales_of(int type, const uint8_t *b, kscales *s) {
    if (type == QLORA_GGML_Q6_K) {
        const __m256 d = _mm256_set1_ps(half_at(b + 208));
        const __m128i sc = _mm_loadu_si128((const __m128i *)(b + 192));
        _mm256_storeu_ps(s->scale, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_storeu_ps(s->scale + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
        return;
    }
    uint32_t w[3];
    memcpy(w, b + 4, 12);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x30303030u;
    const uint64_t scales = (uint64_t)(w[0] & low6) | (uint64_t)((w[2] & low4) | ((w[0] >> 2) & top2)) << 32;
    const uint64_t mins = (uint64_t)(w[1] & low6) | (uint64_t)(((w[2] >> 4) & low4) | ((w[1] >> 2) & top2)) << 32;
    const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scales)));
    const __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mins)));
    _mm256_storeu_ps(s->scale, _mm256_mul_ps(_mm256_set1_ps(half_at(b)), sc));
    _mm256_storeu_ps(s->neg_min, _mm256_mul_ps(_mm256_set1_ps(-half_at(b + 2)), mn));
}

/* Group g's 32 codes, byte l = element l: Q4_K 0-15, Q5_K 0-31, Q6_K q - 32 (signed). Byte lanes, 16-bit
 * shifts: the masks drop what a shift brings over from the neighbouring byte. */
AVX2 static inline __m256i kcodes(int type, const uint8_t *b, int g) {
    const __m256i low4 = _mm256_set1_epi8(15);
    if (type == QLORA_GGML_Q6_K) {
        const int half = g / 4, pass = g % 4;
        __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * half + 32 * (pass % 2)));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half));
        ql = _mm256_and_si256(_mm256_srli_epi16(ql, 4 * (pass / 2)), low4);
        qh = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * pass), _mm256_set1_epi8(3));
        return _mm256_sub_epi8(_mm256_or_si256(ql, _mm256_slli_epi16(qh, 4)), _mm256_set1_epi8(32));
    }
    __m256i q = _mm256_loadu_si256((const __m256i *)(b + (type == QLORA_GGML_Q4_K ? 16 : 48) + 32 * (g / 2)));
    q = _mm256_and_si256(_mm256_srli_epi16(q, 4 * (g % 2)), low4);
    if (type == QLORA_GGML_Q5_K) {   /* fifth bit: bit g of qh[l] */
        const __m256i h = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(b + 16)), g), _mm256_set1_epi8(1));
        q = _mm256_or_si256(q, _mm256_slli_epi16(h, 4));
    }
    return q;
}

/* ---- AVX2 + FMA: fp32 x, one row at a time, each 16-lane set as two ymm ---- */

/* Group g's weights 0-7, 8-15, 16-23, 24-31. */
AVX2 static inline void kweights_avx2(int type, const uint8_t *b, int g, const kscales *s, __m256 *w) {
    const __m256i c = kcodes(type, b, g);
    const __m128i c0 = _mm256_castsi256_si128(c), c1 = _mm256_extracti128_si256(c, 1);
    const __m128i parts[4] = { c0, _mm_srli_si128(c0, 8), c1, _mm_srli_si128(c1, 8) };
    const __m256 lo = _mm256_set1_ps(s->scale[type == QLORA_GGML_Q6_K ? 2 * g : g]);
    const __m256 hi = type == QLORA_GGML_Q6_K ? _mm256_set1_ps(s->scale[2 * g + 1]) : lo;
    for (int k = 0; k < 4; k++) {
        const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k]));
        if (type == QLORA_GGML_Q6_K) w[k] = _mm256_mul_ps(k < 2 ? lo : hi, q);
        else w[k] = _mm256_fmadd_ps(lo, q, _mm256_set1_ps(s->neg_min[g]));
    }
}

AVX2 static inline void k_f32_avx2_typed(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                         size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    const size_t bb = ggml_block_bytes(type), blocks = cols / 256;
    for (size_t r = 0; r < rows; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, w[4];
        const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
        for (size_t sb = 0; sb < blocks; sb++) {
            const uint8_t *block = row + sb * bb;
            kscales s;
            kscales_of(type, block, &s);
            for (int g = 0; g < 8; g++) {
                kweights_avx2(type, block, g, &s, w);
                if (rounding == 1)
                    for (int k = 0; k < 4; k++) w[k] = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(w[k]), 16));
                const float *xg = x + 256 * sb + 32 * g;
                a0 = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xg), a0);
                a1 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xg + 8), a1);
                b0 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xg + 16), b0);
                b1 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xg + 24), b1);
            }
        }
        y[r] = reduce_avx2(a0, a1, b0, b1);
    }
}

AVX2 void qlora_ggml_k_f32_avx2(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                                const int32_t *stored_rows, size_t first_row, int rounding) {
    switch (type) {   /* one specialized loop per type */
    case QLORA_GGML_Q4_K: k_f32_avx2_typed(QLORA_GGML_Q4_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q5_K: k_f32_avx2_typed(QLORA_GGML_Q5_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    default: k_f32_avx2_typed(QLORA_GGML_Q6_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    }
}

/* ---- AVX-512F: fp32 x, one zmm per 16-lane set, two rows at a time ---- */

/* Group g's weights 0-15 and 16-31. */
AVX512 static inline void kweights_avx512(int type, const uint8_t *b, int g, const kscales *s, __m512 *lo, __m512 *hi) {
    const __m256i c = kcodes(type, b, g);
    const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(c)));
    const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(c, 1)));
    if (type == QLORA_GGML_Q6_K) {
        *lo = _mm512_mul_ps(_mm512_set1_ps(s->scale[2 * g]), q0);
        *hi = _mm512_mul_ps(_mm512_set1_ps(s->scale[2 * g + 1]), q1);
    } else {
        const __m512 scale = _mm512_set1_ps(s->scale[g]), neg_min = _mm512_set1_ps(s->neg_min[g]);
        *lo = _mm512_fmadd_ps(scale, q0, neg_min);
        *hi = _mm512_fmadd_ps(scale, q1, neg_min);
    }
}

/* The super-block's cache lines, PREFETCH_BYTES ahead. */
AVX512 static inline void prefetch_block(const uint8_t *block, size_t bb) {
    for (size_t off = 0; off < bb; off += 64) _mm_prefetch((const char *)(block + PREFETCH_BYTES + off), _MM_HINT_T0);
}

AVX512 static inline void k_f32_avx512_typed(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data,
                                             size_t row_bytes, const int32_t *stored_rows, size_t first_row, int rounding) {
    const size_t bb = ggml_block_bytes(type), blocks = cols / 256;
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, lo0, hi0, lo1, hi1;
        const uint8_t *row0 = row_at(data, row_bytes, stored_rows, first_row + r);
        const uint8_t *row1 = row_at(data, row_bytes, stored_rows, first_row + r + 1);
        for (size_t sb = 0; sb < blocks; sb++) {
            const uint8_t *block0 = row0 + sb * bb, *block1 = row1 + sb * bb;
            prefetch_block(block0, bb);
            prefetch_block(block1, bb);
            kscales s0, s1;
            kscales_of(type, block0, &s0);
            kscales_of(type, block1, &s1);
            for (int g = 0; g < 8; g++) {
                kweights_avx512(type, block0, g, &s0, &lo0, &hi0);
                kweights_avx512(type, block1, g, &s1, &lo1, &hi1);
                if (rounding == 1) {
                    lo0 = bf16_round_keep_avx512(lo0); hi0 = bf16_round_keep_avx512(hi0);
                    lo1 = bf16_round_keep_avx512(lo1); hi1 = bf16_round_keep_avx512(hi1);
                }
                const float *xg = x + 256 * sb + 32 * g;
                const __m512 xa = _mm512_loadu_ps(xg), xb = _mm512_loadu_ps(xg + 16);
                a0 = _mm512_fmadd_ps(lo0, xa, a0);
                b0 = _mm512_fmadd_ps(hi0, xb, b0);
                a1 = _mm512_fmadd_ps(lo1, xa, a1);
                b1 = _mm512_fmadd_ps(hi1, xb, b1);
            }
        }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) k_f32_avx2_typed(type, y + r, x, rows - r, cols, data, row_bytes, stored_rows, first_row + r, rounding);
}

AVX512 void qlora_ggml_k_f32_avx512(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                                    const int32_t *stored_rows, size_t first_row, int rounding) {
    switch (type) {
    case QLORA_GGML_Q4_K: k_f32_avx512_typed(QLORA_GGML_Q4_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    case QLORA_GGML_Q5_K: k_f32_avx512_typed(QLORA_GGML_Q5_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    default: k_f32_avx512_typed(QLORA_GGML_Q6_K, y, x, rows, cols, data, row_bytes, stored_rows, first_row, rounding); break;
    }
}

/* ---- AVX-512 BW + BF16: bf16 x pairs, vcvtne2ps2bf16 then vdpbf16ps ---- */

/* Group g's 32 bf16 weights in element order (word k = element k, so dword p is pair p). vcvtne2ps2bf16
 * rounds as bf16_round_bits for every input but fp32 denormals, which these blocks cannot produce: every
 * weight is a multiple of 2^-24. */
BF16 static inline __m512i kgroup_bf16(int type, const uint8_t *b, int g, const kscales *s) {
    __m512 lo, hi;
    kweights_avx512(type, b, g, s, &lo, &hi);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

#define DP(acc, w, xv) _mm512_dpbf16_ps((acc), (__m512bh)(w), (__m512bh)(xv))

/* Eight groups per super-block: group g of the row is even exactly when g of its block is, so A takes
 * the even groups, B the odd ones, as Gemv.h orders them. */
BF16 static inline void k_bf16dot_avx512_typed(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec,
                                               size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                                               const int32_t *stored_rows, size_t first_row) {
    const size_t bb = ggml_block_bytes(type), blocks = cols / 256;
    size_t r = 0;
    if (nvec == 1)   /* two rows at a time: four independent chains */
        for (; r + 2 <= rows; r += 2) {
            __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
            const uint8_t *row0 = row_at(data, row_bytes, stored_rows, first_row + r);
            const uint8_t *row1 = row_at(data, row_bytes, stored_rows, first_row + r + 1);
            for (size_t sb = 0; sb < blocks; sb++) {
                const uint8_t *block0 = row0 + sb * bb, *block1 = row1 + sb * bb;
                prefetch_block(block0, bb);
                prefetch_block(block1, bb);
                kscales s0, s1;
                kscales_of(type, block0, &s0);
                kscales_of(type, block1, &s1);
                for (int g = 0; g < 8; g += 2) {
                    const uint32_t *xg = x + 128 * sb + 16 * g;
                    const __m512i xa = _mm512_loadu_si512(xg), xb = _mm512_loadu_si512(xg + 16);
                    a0 = DP(a0, kgroup_bf16(type, block0, g, &s0), xa);
                    a1 = DP(a1, kgroup_bf16(type, block1, g, &s1), xa);
                    b0 = DP(b0, kgroup_bf16(type, block0, g + 1, &s0), xb);
                    b1 = DP(b1, kgroup_bf16(type, block1, g + 1, &s1), xb);
                }
            }
            y[r] = reduce_avx512(a0, b0);
            y[r + 1] = reduce_avx512(a1, b1);
        }
    for (; r < rows; r++) {   /* one row, every vector: each group decoded once */
        __m512 a[GGML_MAX_VECTORS], b[GGML_MAX_VECTORS];
        for (size_t v = 0; v < nvec; v++) { a[v] = _mm512_setzero_ps(); b[v] = a[v]; }
        const uint8_t *row = row_at(data, row_bytes, stored_rows, first_row + r);
        for (size_t sb = 0; sb < blocks; sb++) {
            const uint8_t *block = row + sb * bb;
            prefetch_block(block, bb);
            kscales s;
            kscales_of(type, block, &s);
            for (int g = 0; g < 8; g += 2) {
                const size_t word = 128 * sb + 16 * g;
                const __m512i even = kgroup_bf16(type, block, g, &s), odd = kgroup_bf16(type, block, g + 1, &s);
                for (size_t v = 0; v < nvec; v++) {
                    a[v] = DP(a[v], even, _mm512_loadu_si512(x + v * ldx + word));
                    b[v] = DP(b[v], odd, _mm512_loadu_si512(x + v * ldx + word + 16));
                }
            }
        }
        for (size_t v = 0; v < nvec; v++) y[v * ldy + r] = reduce_avx512(a[v], b[v]);
    }
}

BF16 void qlora_ggml_k_bf16dot_avx512(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                      size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows, size_t first_row) {
    switch (type) {
    case QLORA_GGML_Q4_K:
        k_bf16dot_avx512_typed(QLORA_GGML_Q4_K, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    case QLORA_GGML_Q5_K:
        k_bf16dot_avx512_typed(QLORA_GGML_Q5_K, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    default:
        k_bf16dot_avx512_typed(QLORA_GGML_Q6_K, y, ldy, x, ldx, nvec, rows, cols, data, row_bytes, stored_rows, first_row); break;
    }
}
