#ifndef CQLORA_NIBBLE_LOOKUP_H
#define CQLORA_NIBBLE_LOOKUP_H
/* SIMD helpers shared by the dequantization and matrix-vector kernels. */
#include <immintrin.h>

/* How far ahead of each row stream the AVX-512 decode kernels prefetch: the one-row products are bound by
 * memory latency, and the hardware prefetcher alone leaves the two streams of a row pair short. */
#define PREFETCH_BYTES 1024

/* AVX2: 8 nibbles (one per byte of nibbles8) -> 8 floats of the 16-entry table lo | hi: vpermps on both
 * halves, blend on bit 3. */
__attribute__((target("avx2")))
static inline __m256 lookup8_avx2(__m256 lo, __m256 hi, __m128i nibbles8) {
    __m256i index = _mm256_cvtepu8_epi32(nibbles8);
    __m256 a = _mm256_permutevar8x32_ps(lo, index);
    __m256 b = _mm256_permutevar8x32_ps(hi, index);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}

/* bf16 rounding of 8 floats, result bits in the low 16 bits of each lane (NaN -> quiet NaN). */
__attribute__((target("avx2")))
static inline __m256i bf16_round_avx2(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}

/* bf16 rounding of 16 floats kept in the fp32 layout (low 16 bits zero; NaN -> quiet NaN), as
 * bf16_round_bits. */
__attribute__((target("avx512f")))
static inline __m512 bf16_round_keep_avx512(__m512 t) {
    const __m512i u = _mm512_castps_si512(t);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_mask_blend_epi32(nan, rounded, quiet), 16));
}

/* The matrix-vector kernels' reduction (Gemv.h) of the 16-lane sets A and B: v = A + B, then halved
 * four times; AVX2 holds each set as two ymm (lanes 0-7, 8-15). */
__attribute__((target("avx2")))
static inline float reduce_avx2(__m256 a0, __m256 a1, __m256 b0, __m256 b1) {
    __m256 v = _mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1));   /* v[l] + v[l + 8] */
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx512f")))
static inline float reduce_avx512(__m512 a, __m512 b) {
    __m512 v = _mm512_add_ps(a, b);
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

#endif
