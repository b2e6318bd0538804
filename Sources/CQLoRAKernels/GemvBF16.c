#include "Gemv.h"
#include "BF16Rounding.h"
#include "BlockScales.h"
#include "DotBF16.h"
#include "NibbleLookup.h"
#include <immintrin.h>
#include <stdlib.h>

/* ---- the scalar twin ---- */

static inline uint32_t pair_word(uint16_t even, uint16_t odd) { return (uint32_t)even | (uint32_t)odd << 16; }

/* bf16 bits of element k of a pairs vector. */
static inline uint16_t pair_element(const uint32_t *x, size_t k) { return (uint16_t)(k % 2 == 0 ? x[k / 2] : x[k / 2] >> 16); }

/* Blocks of 64 elements or more (block_bytes a multiple of 32): chunks of 64 elements (32 code bytes).
 * Pair p of a chunk's "even" word set is elements (4p, 4p + 2), of its "odd" set (4p + 1, 4p + 3): the
 * high and the low nibbles of code bytes 2p and 2p + 1, the order vpermw reads them in (Gemv.h). */
static void gemv4_bf16dot_chunks64_scalar(float *y, const uint32_t *x, size_t rows, size_t cols, const uint8_t *bytes,
                                          const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16) {
    const size_t per_row = cols / (2 * bb);
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 };
        uint16_t table[16];
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                for (int c = 0; c < 16; c++) table[c] = (uint16_t)bf16_round_bits(codes16[c] * chunks.scales[k]);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 32; g++) {
                    const size_t e0 = block * 2 * bb + g * 64;
                    const uint8_t *src = row + e0 / 2;
                    for (int p = 0; p < 16; p++) {
                        const uint8_t first = src[2 * p], second = src[2 * p + 1];
                        const uint32_t xe = pair_word(pair_element(x, e0 + 4 * p), pair_element(x, e0 + 4 * p + 2));
                        const uint32_t xo = pair_word(pair_element(x, e0 + 4 * p + 1), pair_element(x, e0 + 4 * p + 3));
                        a[p] = dp_pair(a[p], pair_word(table[first >> 4], table[second >> 4]), xe);
                        b[p] = dp_pair(b[p], pair_word(table[first & 15], table[second & 15]), xo);
                    }
                }
            }
        y[r] = reduce_lanes(a, b);
    }
}

static void gemv4_bf16dot_scalar(float *y, const uint32_t *x, size_t rows, size_t cols, const uint8_t *bytes,
                                 const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16) {
    if (bb % 32 == 0) { gemv4_bf16dot_chunks64_scalar(y, x, rows, cols, bytes, scales, first_block, bb, codes16); return; }
    const size_t per_row = cols / (2 * bb);
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 };
        uint16_t table[16];
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                for (int c = 0; c < 16; c++) table[c] = (uint16_t)bf16_round_bits(codes16[c] * chunks.scales[k]);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    float *acc = (e0 / 32) % 2 == 0 ? a : b;
                    for (int l = 0; l < 16; l++) {   /* pair l: elements e0 + 2l (high nibble), e0 + 2l + 1 (low) */
                        const uint8_t code = row[e0 / 2 + l];
                        acc[l] = dp_pair(acc[l], pair_word(table[code >> 4], table[code & 15]), x[e0 / 2 + l]);
                    }
                }
            }
        y[r] = reduce_lanes(a, b);
    }
}

static void gemv_bf16_bf16dot_scalar(float *y, const uint32_t *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    for (size_t r = 0; r < rows; r++) {
        float a[16] = { 0 }, b[16] = { 0 };
        const uint16_t *row = w + r * ldw;
        for (size_t e0 = 0; e0 < cols; e0 += 32) {
            float *acc = (e0 / 32) % 2 == 0 ? a : b;
            for (int l = 0; l < 16; l++) {
                const size_t i = e0 + 2 * l;
                const uint16_t even = i < cols ? row[i] : 0, odd = i + 1 < cols ? row[i + 1] : 0;
                acc[l] = dp_pair(acc[l], pair_word(even, odd), x[e0 / 2 + l]);
            }
        }
        y[r] = reduce_lanes(a, b);
    }
}

/* ---- AVX-512 BW + BF16: vpermw looks up 32 weights at a time, vdpbf16ps multiplies 16 pairs ---- */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The block's 16 bf16 weights in the low 16 words of a zmm (for vpermw). */
TARGET static inline __m512i table_bf16(__m512 codes, float scale) {
    const __m512i u = _mm512_castps_si512(_mm512_mul_ps(codes, _mm512_set1_ps(scale)));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_castsi256_si512(_mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet)));
}

/* 16 bytes of codes -> the 32 word indices of their elements, in element order: byte j (elements 2j
 * high nibble, 2j + 1 low nibble) becomes dword j = (byte >> 4) | (byte & 15) << 16, a whole bf16 pair. */
TARGET static inline __m512i word_indices(const uint8_t *src) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)src));
    return _mm512_or_si512(_mm512_srli_epi32(b, 4), _mm512_slli_epi32(_mm512_and_si512(b, _mm512_set1_epi32(15)), 16));
}

#define DP(acc, w, xv) _mm512_dpbf16_ps((acc), (__m512bh)(w), (__m512bh)(xv))

/* The block's table twice over (words 0-15 and 16-31), so that vpermw's 5-bit index may keep a code
 * byte's high nibble bit: word (byte & 31) is table[byte & 15]. vcvtne2ps2bf16 rounds as bf16_round_bits
 * except for fp32 denormals (flushed) and NaN: scales that could give either take the integer rounding. */
TARGET static inline __m512i table32_bf16(__m512 codes, float scale) {
    const float magnitude = scale < 0 ? -scale : scale;
    if (magnitude == 0 || (magnitude >= 0x1p-100f && magnitude <= 0x1p100f)) {
        const __m512 t = _mm512_mul_ps(codes, _mm512_set1_ps(scale));
        return (__m512i)_mm512_cvtne2ps_pbh(t, t);
    }
    const __m512i t = table_bf16(codes, scale);
    return _mm512_inserti64x4(t, _mm512_castsi512_si256(t), 1);
}

/* x pairs in the order the chunk kernels read them: per 64-element chunk its even elements (16 words),
 * then its odd ones. Done once per call: every row takes the same x. */
TARGET static void split_x(uint32_t *out, const uint32_t *x, size_t cols) {
    const __m512i e = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32,
                                       30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i o = _mm512_add_epi16(e, _mm512_set1_epi16(1));
    for (size_t c = 0; c < cols / 64; c++) {
        const __m512i lo = _mm512_loadu_si512(x + 32 * c), hi = _mm512_loadu_si512(x + 32 * c + 16);
        _mm512_storeu_si512(out + 32 * c, _mm512_permutex2var_epi16(lo, e, hi));
        _mm512_storeu_si512(out + 32 * c + 16, _mm512_permutex2var_epi16(lo, o, hi));
    }
}

/* One vector (xs split by split_x, x the pairs for the scalar tail), two rows at a time. */
TARGET static void gemv4_bf16dot_chunks64_avx512(float *y, const uint32_t *x, const uint32_t *xs, size_t rows, size_t cols, const uint8_t *bytes,
                                                 const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16) {
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
                const __m512i t0 = table32_bf16(codes, c0.scales[k]), t1 = table32_bf16(codes, c1.scales[k]);
                const size_t block = c0.block + k;
                for (size_t g = 0; g < bb / 32; g++) {
                    const size_t e0 = block * 2 * bb + g * 64;
                    _mm_prefetch((const char *)(row0 + e0 / 2 + PREFETCH_BYTES), _MM_HINT_T0);
                    _mm_prefetch((const char *)(row1 + e0 / 2 + PREFETCH_BYTES), _MM_HINT_T0);
                    const __m512i xe = _mm512_loadu_si512(xs + e0 / 2), xo = _mm512_loadu_si512(xs + e0 / 2 + 16);
                    const __m512i q0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(row0 + e0 / 2)));
                    const __m512i q1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(row1 + e0 / 2)));
                    a0 = DP(a0, _mm512_permutexvar_epi16(_mm512_srli_epi16(q0, 4), t0), xe);
                    b0 = DP(b0, _mm512_permutexvar_epi16(q0, t0), xo);
                    a1 = DP(a1, _mm512_permutexvar_epi16(_mm512_srli_epi16(q1, 4), t1), xe);
                    b1 = DP(b1, _mm512_permutexvar_epi16(q1, t1), xo);
                }
            }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv4_bf16dot_chunks64_scalar(y + r, x, rows - r, cols, bytes + r * cols / 2, scales, first_block + r * per_row, bb, codes16);
}

TARGET static void gemv4_bf16dot_avx512(float *y, const uint32_t *x, size_t rows, size_t cols, const uint8_t *bytes,
                                        const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16) {
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
                const __m512i t0 = table_bf16(codes, c0.scales[k]), t1 = table_bf16(codes, c1.scales[k]);
                const size_t block = c0.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    const __m512i xv = _mm512_loadu_si512(x + e0 / 2);
                    const __m512i w0 = _mm512_permutexvar_epi16(word_indices(row0 + e0 / 2), t0);
                    const __m512i w1 = _mm512_permutexvar_epi16(word_indices(row1 + e0 / 2), t1);
                    if ((e0 / 32) % 2 == 0) { a0 = DP(a0, w0, xv); a1 = DP(a1, w1, xv); }
                    else { b0 = DP(b0, w0, xv); b1 = DP(b1, w1, xv); }
                }
            }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv4_bf16dot_scalar(y + r, x, rows - r, cols, bytes + r * cols / 2, scales, first_block + r * per_row, bb, codes16);
}

TARGET static void gemv_bf16_bf16dot_avx512(float *y, const uint32_t *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    const size_t groups = (cols + 31) / 32;
    const __mmask32 last = cols % 32 == 0 ? 0xffffffffu : (1u << (cols % 32)) - 1;
    size_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const uint16_t *row0 = w + r * ldw, *row1 = row0 + ldw;
        size_t g = 0;
        for (; g + 2 <= groups; g += 2) {   /* even group into A, odd into B */
            const __m512i xa = _mm512_loadu_si512(x + 16 * g), xb = _mm512_loadu_si512(x + 16 * g + 16);
            const __mmask32 mb = g + 2 == groups ? last : 0xffffffffu;
            a0 = DP(a0, _mm512_loadu_si512(row0 + 32 * g), xa);
            a1 = DP(a1, _mm512_loadu_si512(row1 + 32 * g), xa);
            b0 = DP(b0, _mm512_maskz_loadu_epi16(mb, row0 + 32 * g + 32), xb);
            b1 = DP(b1, _mm512_maskz_loadu_epi16(mb, row1 + 32 * g + 32), xb);
        }
        if (g < groups) {
            const __m512i xa = _mm512_loadu_si512(x + 16 * g);
            a0 = DP(a0, _mm512_maskz_loadu_epi16(last, row0 + 32 * g), xa);
            a1 = DP(a1, _mm512_maskz_loadu_epi16(last, row1 + 32 * g), xa);
        }
        y[r] = reduce_avx512(a0, b0);
        y[r + 1] = reduce_avx512(a1, b1);
    }
    if (r < rows) gemv_bf16_bf16dot_scalar(y + r, x, rows - r, cols, w + r * ldw, ldw);
}

/* Several vectors, one weight row at a time: the row's weights are built once per group, then each
 * vector's two accumulator sets take them exactly as the single-vector kernels do. */
enum { MAX_VECTORS = 8 };

TARGET static void gemv4_bf16dot_multi_avx512(float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                              size_t cols, const uint8_t *bytes, const qlora_block_scales *scales,
                                              size_t first_block, size_t bb, const float *codes16) {
    const size_t per_row = cols / (2 * bb);
    const __m512 codes = _mm512_loadu_ps(codes16);
    for (size_t r = 0; r < rows; r++) {
        __m512 a[MAX_VECTORS], b[MAX_VECTORS];
        for (size_t v = 0; v < nvec; v++) { a[v] = _mm512_setzero_ps(); b[v] = a[v]; }
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                const __m512i t = table_bf16(codes, chunks.scales[k]);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 16; g++) {
                    const size_t e0 = block * 2 * bb + g * 32;
                    const __m512i w = _mm512_permutexvar_epi16(word_indices(row + e0 / 2), t);
                    if ((e0 / 32) % 2 == 0)
                        for (size_t v = 0; v < nvec; v++) a[v] = DP(a[v], w, _mm512_loadu_si512(x + v * ldx + e0 / 2));
                    else
                        for (size_t v = 0; v < nvec; v++) b[v] = DP(b[v], w, _mm512_loadu_si512(x + v * ldx + e0 / 2));
                }
            }
        for (size_t v = 0; v < nvec; v++) y[v * ldy + r] = reduce_avx512(a[v], b[v]);
    }
}

/* nvec vectors split by split_x (vector v at xs + v * ldx), one row at a time. */
TARGET static void gemv4_bf16dot_chunks64_multi_avx512(float *y, size_t ldy, const uint32_t *xs, size_t ldx, size_t nvec, size_t rows,
                                                       size_t cols, const uint8_t *bytes, const qlora_block_scales *scales,
                                                       size_t first_block, size_t bb, const float *codes16) {
    const size_t per_row = cols / (2 * bb);
    const __m512 codes = _mm512_loadu_ps(codes16);
    for (size_t r = 0; r < rows; r++) {
        __m512 a[MAX_VECTORS], b[MAX_VECTORS];
        for (size_t v = 0; v < nvec; v++) { a[v] = _mm512_setzero_ps(); b[v] = a[v]; }
        const uint8_t *row = bytes + r * cols / 2;
        scale_chunks chunks;
        scale_chunks_init(&chunks, scales, first_block + r * per_row, per_row);
        while (scale_chunks_next(&chunks))
            for (size_t k = 0; k < chunks.count; k++) {
                const __m512i t = table32_bf16(codes, chunks.scales[k]);
                const size_t block = chunks.block + k;
                for (size_t g = 0; g < bb / 32; g++) {
                    const size_t e0 = block * 2 * bb + g * 64;
                    const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(row + e0 / 2)));
                    const __m512i we = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), t), wo = _mm512_permutexvar_epi16(q, t);
                    for (size_t v = 0; v < nvec; v++) {
                        a[v] = DP(a[v], we, _mm512_loadu_si512(xs + v * ldx + e0 / 2));
                        b[v] = DP(b[v], wo, _mm512_loadu_si512(xs + v * ldx + e0 / 2 + 16));
                    }
                }
            }
        for (size_t v = 0; v < nvec; v++) y[v * ldy + r] = reduce_avx512(a[v], b[v]);
    }
}

enum { SPLIT_STACK_WORDS = 16384 };   /* split x on the stack (64 KiB) for rows up to 32768 elements */

/* The chunk kernels for nvec vectors: each x split once, as many at a time as the stack holds. */
TARGET static void gemv4_bf16dot_chunks64(float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows, size_t cols,
                                          const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block, size_t bb,
                                          const float *codes16) {
    const size_t words = cols / 2;
    uint32_t stack[SPLIT_STACK_WORDS];
    uint32_t *xs = words > SPLIT_STACK_WORDS ? malloc(words * sizeof(uint32_t)) : stack;
    const size_t fits = words > SPLIT_STACK_WORDS ? 1 : SPLIT_STACK_WORDS / words;
    const size_t group = fits < MAX_VECTORS ? fits : MAX_VECTORS;
    for (size_t v0 = 0; v0 < nvec; v0 += group) {
        const size_t n = nvec - v0 < group ? nvec - v0 : group;
        for (size_t v = 0; v < n; v++) split_x(xs + v * words, x + (v0 + v) * ldx, cols);
        if (n == 1) gemv4_bf16dot_chunks64_avx512(y + v0 * ldy, x + v0 * ldx, xs, rows, cols, bytes, scales, first_block, bb, codes16);
        else gemv4_bf16dot_chunks64_multi_avx512(y + v0 * ldy, ldy, xs, words, n, rows, cols, bytes, scales, first_block, bb, codes16);
    }
    if (xs != stack) free(xs);
}

TARGET static void gemv_bf16_bf16dot_multi_avx512(float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                                  size_t cols, const uint16_t *w, size_t ldw) {
    const size_t groups = (cols + 31) / 32;
    const __mmask32 last = cols % 32 == 0 ? 0xffffffffu : (1u << (cols % 32)) - 1;
    for (size_t r = 0; r < rows; r++) {
        __m512 a[MAX_VECTORS], b[MAX_VECTORS];
        for (size_t v = 0; v < nvec; v++) { a[v] = _mm512_setzero_ps(); b[v] = a[v]; }
        const uint16_t *row = w + r * ldw;
        for (size_t g = 0; g < groups; g++) {
            const __m512i wv = _mm512_maskz_loadu_epi16(g + 1 == groups ? last : 0xffffffffu, row + 32 * g);
            if (g % 2 == 0) for (size_t v = 0; v < nvec; v++) a[v] = DP(a[v], wv, _mm512_loadu_si512(x + v * ldx + 16 * g));
            else for (size_t v = 0; v < nvec; v++) b[v] = DP(b[v], wv, _mm512_loadu_si512(x + v * ldx + 16 * g));
        }
        for (size_t v = 0; v < nvec; v++) y[v * ldy + r] = reduce_avx512(a[v], b[v]);
    }
}

void qlora_gemv4_bf16dot_multi(int level, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                               size_t cols, const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block,
                               size_t bb, const float *codes16) {
    if (rows == 0) return;
    for (size_t v0 = 0; v0 < nvec; v0 += MAX_VECTORS) {
        const size_t n = nvec - v0 < MAX_VECTORS ? nvec - v0 : MAX_VECTORS;
        if (level == 1 && qlora_bf16_best_level() >= 1 && bb % 32 == 0)
            gemv4_bf16dot_chunks64(y + v0 * ldy, ldy, x + v0 * ldx, ldx, n, rows, cols, bytes, scales, first_block, bb, codes16);
        else if (level == 1 && qlora_bf16_best_level() >= 1)
            gemv4_bf16dot_multi_avx512(y + v0 * ldy, ldy, x + v0 * ldx, ldx, n, rows, cols, bytes, scales, first_block, bb, codes16);
        else
            for (size_t v = v0; v < v0 + n; v++)
                gemv4_bf16dot_scalar(y + v * ldy, x + v * ldx, rows, cols, bytes, scales, first_block, bb, codes16);
    }
}

void qlora_gemv_bf16_bf16dot_multi(int level, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                   size_t cols, const uint16_t *w, size_t ldw) {
    if (rows == 0) return;
    for (size_t v0 = 0; v0 < nvec; v0 += MAX_VECTORS) {
        const size_t n = nvec - v0 < MAX_VECTORS ? nvec - v0 : MAX_VECTORS;
        if (level == 1 && qlora_bf16_best_level() >= 1)
            gemv_bf16_bf16dot_multi_avx512(y + v0 * ldy, ldy, x + v0 * ldx, ldx, n, rows, cols, w, ldw);
        else
            for (size_t v = v0; v < v0 + n; v++) gemv_bf16_bf16dot_scalar(y + v * ldy, x + v * ldx, rows, cols, w, ldw);
    }
}

/* ---- dispatch: level 1 only where the CPU has it (qlora_bf16_best_level) ---- */
void qlora_gemv4_bf16dot(int level, float *y, const uint32_t *x, size_t rows, size_t cols, const uint8_t *bytes,
                         const qlora_block_scales *scales, size_t first_block, size_t bb, const float *codes16) {
    if (rows == 0) return;
    if (level == 1 && qlora_bf16_best_level() >= 1 && bb % 32 == 0)
        gemv4_bf16dot_chunks64(y, rows, x, 0, 1, rows, cols, bytes, scales, first_block, bb, codes16);
    else if (level == 1 && qlora_bf16_best_level() >= 1) gemv4_bf16dot_avx512(y, x, rows, cols, bytes, scales, first_block, bb, codes16);
    else gemv4_bf16dot_scalar(y, x, rows, cols, bytes, scales, first_block, bb, codes16);
}

void qlora_gemv_bf16_bf16dot(int level, float *y, const uint32_t *x, size_t rows, size_t cols, const uint16_t *w, size_t ldw) {
    if (rows == 0) return;
    if (level == 1 && qlora_bf16_best_level() >= 1) gemv_bf16_bf16dot_avx512(y, x, rows, cols, w, ldw);
    else gemv_bf16_bf16dot_scalar(y, x, rows, cols, w, ldw);
}
