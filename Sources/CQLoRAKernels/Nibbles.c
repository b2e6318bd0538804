#include "CQLoRAKernels.h"
#include <immintrin.h>
#include "BF16Rounding.h"
#include "NibbleLookup.h"

/* Bit-exactness with bitsandbytes: the double-quantized scale is a multiply THEN an add, each rounded to
 * float32. Clang may contract a * b + c into an FMA where the target has one (AVX-512F does); this pragma
 * and -ffp-contract=off (Package.swift) forbid it. */
#pragma STDC FP_CONTRACT OFF

#include "BlockScales.h"

void qlora_block_scales_f32(float *out, const qlora_block_scales *scales, size_t first_block, size_t block_count) {
    scale_chunks chunks;
    scale_chunks_init(&chunks, scales, first_block, block_count);
    while (scale_chunks_next(&chunks))
        for (size_t k = 0; k < chunks.count; k++) out[chunks.block + k] = chunks.scales[k];
}

/* ---- scalar ---- */
static void f32_scalar(float *out, const uint8_t *bytes, size_t n, const float *table) {
    for (size_t j = 0; j < n; j++) {
        uint8_t b = bytes[j];
        out[2 * j] = table[b >> 4];
        out[2 * j + 1] = table[b & 15];
    }
}

static void u16_scalar(uint16_t *out, const uint8_t *bytes, size_t n, const uint16_t *table) {
    for (size_t j = 0; j < n; j++) {
        uint8_t b = bytes[j];
        out[2 * j] = table[b >> 4];
        out[2 * j + 1] = table[b & 15];
    }
}

/* ---- AVX2: vpermps on the two halves of the table, blend on bit 3; u16 via pshufb on byte tables ---- */
__attribute__((target("avx2")))
static inline void decode16_f32_avx2(float *o, const uint8_t *src, __m256 lo, __m256 hi) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i b = _mm_loadu_si128((const __m128i *)src);
    __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    __m128i l = _mm_and_si128(b, mask);
    __m128i first = _mm_unpacklo_epi8(h, l);   /* elements 0..15 of these 32 */
    __m128i second = _mm_unpackhi_epi8(h, l);  /* elements 16..31 */
    _mm256_storeu_ps(o, lookup8_avx2(lo, hi, first));
    _mm256_storeu_ps(o + 8, lookup8_avx2(lo, hi, _mm_srli_si128(first, 8)));
    _mm256_storeu_ps(o + 16, lookup8_avx2(lo, hi, second));
    _mm256_storeu_ps(o + 24, lookup8_avx2(lo, hi, _mm_srli_si128(second, 8)));
}

/* 16 bytes -> 32 u16 from byte tables tl (low bytes) / th (high bytes) */
__attribute__((target("avx2")))
static inline void decode16_u16_avx2(uint16_t *out, const uint8_t *src, __m128i tl, __m128i th) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i b = _mm_loadu_si128((const __m128i *)src);
    __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    __m128i l = _mm_and_si128(b, mask);
    __m128i first = _mm_unpacklo_epi8(h, l), second = _mm_unpackhi_epi8(h, l);
    __m128i fl = _mm_shuffle_epi8(tl, first), fh = _mm_shuffle_epi8(th, first);
    __m128i sl = _mm_shuffle_epi8(tl, second), sh = _mm_shuffle_epi8(th, second);
    __m128i *o = (__m128i *)out;
    _mm_storeu_si128(o, _mm_unpacklo_epi8(fl, fh));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi8(fl, fh));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi8(sl, sh));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi8(sl, sh));
}

__attribute__((target("avx2")))
static void f32_avx2(float *out, const uint8_t *bytes, size_t n, const float *table) {
    const __m256 lo = _mm256_loadu_ps(table), hi = _mm256_loadu_ps(table + 8);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) decode16_f32_avx2(out + 2 * j, bytes + j, lo, hi);
    f32_scalar(out + 2 * j, bytes + j, n - j, table);
}

__attribute__((target("avx2")))
static void u16_avx2(uint16_t *out, const uint8_t *bytes, size_t n, const uint16_t *table) {
    uint8_t low[16], high[16];
    for (int k = 0; k < 16; k++) { low[k] = (uint8_t)(table[k] & 0xff); high[k] = (uint8_t)(table[k] >> 8); }
    const __m128i tl = _mm_loadu_si128((const __m128i *)low), th = _mm_loadu_si128((const __m128i *)high);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) decode16_u16_avx2(out + 2 * j, bytes + j, tl, th);
    u16_scalar(out + 2 * j, bytes + j, n - j, table);
}

/* ---- AVX-512F: one vpermps over the whole 16-entry table ---- */
__attribute__((target("avx512f")))
static inline void decode16_f32_avx512(float *o, const uint8_t *src, __m512 table) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i b = _mm_loadu_si128((const __m128i *)src);
    __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    __m128i l = _mm_and_si128(b, mask);
    _mm512_storeu_ps(o, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(h, l)), table));
    _mm512_storeu_ps(o + 16, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(h, l)), table));
}

__attribute__((target("avx512f")))
static void f32_avx512(float *out, const uint8_t *bytes, size_t n, const float *table) {
    const __m512 t = _mm512_loadu_ps(table);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) decode16_f32_avx512(out + 2 * j, bytes + j, t);
    f32_scalar(out + 2 * j, bytes + j, n - j, table);
}

/* ---- whole blocks: the per-block table is computed in registers ---- */

static void blocks_f32_scalar(float *out, const uint8_t *bytes, const float *scales, size_t nb, size_t bb,
                              const float *codes, int rounding) {
    float table[16];
    for (size_t b = 0; b < nb; b++) {
        for (int c = 0; c < 16; c++) {
            float w = codes[c] * scales[b];
            if (rounding == 1) { union { uint32_t u; float f; } r = { bf16_round_bits(w) << 16 }; w = r.f; }
            table[c] = w;
        }
        f32_scalar(out + 2 * b * bb, bytes + b * bb, bb, table);
    }
}

static void blocks_bf16_scalar(uint16_t *out, const uint8_t *bytes, const float *scales, size_t nb, size_t bb,
                               const float *codes) {
    uint16_t table[16];
    for (size_t b = 0; b < nb; b++) {
        for (int c = 0; c < 16; c++) table[c] = (uint16_t)bf16_round_bits(codes[c] * scales[b]);
        u16_scalar(out + 2 * b * bb, bytes + b * bb, bb, table);
    }
}

__attribute__((target("avx2")))
static void blocks_f32_avx2(float *out, const uint8_t *bytes, const float *scales, size_t nb, size_t bb,
                            const float *codes, int rounding) {
    if (bb % 16 != 0) { blocks_f32_scalar(out, bytes, scales, nb, bb, codes, rounding); return; }
    const __m256 code_lo = _mm256_loadu_ps(codes), code_hi = _mm256_loadu_ps(codes + 8);
    for (size_t b = 0; b < nb; b++) {
        __m256 s = _mm256_set1_ps(scales[b]);
        __m256 lo = _mm256_mul_ps(code_lo, s), hi = _mm256_mul_ps(code_hi, s);
        if (rounding == 1) {
            lo = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(lo), 16));
            hi = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(hi), 16));
        }
        for (size_t j = 0; j < bb; j += 16) decode16_f32_avx2(out + 2 * (b * bb + j), bytes + b * bb + j, lo, hi);
    }
}

__attribute__((target("avx2")))
static void blocks_bf16_avx2(uint16_t *out, const uint8_t *bytes, const float *scales, size_t nb, size_t bb,
                             const float *codes) {
    if (bb % 16 != 0) { blocks_bf16_scalar(out, bytes, scales, nb, bb, codes); return; }
    const __m256 code_lo = _mm256_loadu_ps(codes), code_hi = _mm256_loadu_ps(codes + 8);
    for (size_t b = 0; b < nb; b++) {
        __m256 s = _mm256_set1_ps(scales[b]);
        /* table entries: bf16 bits in the low half of each 32-bit lane -> 16 u16 in order -> byte tables */
        __m256i lo = bf16_round_avx2(_mm256_mul_ps(code_lo, s));
        __m256i hi = bf16_round_avx2(_mm256_mul_ps(code_hi, s));
        __m256i t16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);   /* t0..7 | t8..15 */
        const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                               0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        __m256i bytes8 = _mm256_shuffle_epi8(t16, split);   /* per lane: 8 low bytes, 8 high bytes */
        __m128i lane0 = _mm256_castsi256_si128(bytes8), lane1 = _mm256_extracti128_si256(bytes8, 1);
        __m128i tl = _mm_unpacklo_epi64(lane0, lane1), th = _mm_unpackhi_epi64(lane0, lane1);
        for (size_t j = 0; j < bb; j += 16) decode16_u16_avx2(out + 2 * (b * bb + j), bytes + b * bb + j, tl, th);
    }
}

__attribute__((target("avx512f")))
static void blocks_f32_avx512(float *out, const uint8_t *bytes, const float *scales, size_t nb, size_t bb,
                              const float *codes, int rounding) {
    if (bb % 16 != 0 || rounding != 0) { blocks_f32_avx2(out, bytes, scales, nb, bb, codes, rounding); return; }
    const __m512 code = _mm512_loadu_ps(codes);
    for (size_t b = 0; b < nb; b++) {
        __m512 t = _mm512_mul_ps(code, _mm512_set1_ps(scales[b]));
        for (size_t j = 0; j < bb; j += 16) decode16_f32_avx512(out + 2 * (b * bb + j), bytes + b * bb + j, t);
    }
}

/* ---- dispatch ---- */
static int best_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
    return 0;
}

static int current_level = -1;

static inline int level(void) {
    int l = __atomic_load_n(&current_level, __ATOMIC_RELAXED);
    if (l < 0) { l = best_level(); __atomic_store_n(&current_level, l, __ATOMIC_RELAXED); }
    return l;
}

int qlora_kernels_level(void) { return level(); }
int qlora_kernels_best_level(void) { return best_level(); }

int qlora_kernels_set_level(int wanted) {
    int best = best_level();
    int l = wanted < 0 ? 0 : (wanted > best ? best : wanted);
    __atomic_store_n(&current_level, l, __ATOMIC_RELAXED);
    return l;
}

void qlora_nibbles_to_f32(float *out, const uint8_t *bytes, size_t n, const float *table) {
    switch (level()) {
    case 2: f32_avx512(out, bytes, n, table); break;
    case 1: f32_avx2(out, bytes, n, table); break;
    default: f32_scalar(out, bytes, n, table); break;
    }
}

void qlora_nibbles_to_u16(uint16_t *out, const uint8_t *bytes, size_t n, const uint16_t *table) {
    /* 16-bit outputs: the 128-bit pshufb kernel is already store-bound; AVX-512 uses it too. */
    if (level() >= 1) u16_avx2(out, bytes, n, table); else u16_scalar(out, bytes, n, table);
}

/* The public whole-block entry points: scales a chunk at a time, then the kernel of the current level. */
void qlora_dequant4_blocks_f32(float *out, const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block,
                               size_t block_count, size_t bb, const float *codes, int rounding) {
    const int l = level();
    scale_chunks c;
    scale_chunks_init(&c, scales, first_block, block_count);
    while (scale_chunks_next(&c)) {
        float *o = out + 2 * c.block * bb;
        const uint8_t *in = bytes + c.block * bb;
        switch (l) {
        case 2: blocks_f32_avx512(o, in, c.scales, c.count, bb, codes, rounding); break;
        case 1: blocks_f32_avx2(o, in, c.scales, c.count, bb, codes, rounding); break;
        default: blocks_f32_scalar(o, in, c.scales, c.count, bb, codes, rounding); break;
        }
    }
}

void qlora_dequant4_blocks_bf16(uint16_t *out, const uint8_t *bytes, const qlora_block_scales *scales, size_t first_block,
                                size_t block_count, size_t bb, const float *codes) {
    const int l = level();
    scale_chunks c;
    scale_chunks_init(&c, scales, first_block, block_count);
    while (scale_chunks_next(&c)) {
        if (l >= 1) blocks_bf16_avx2(out + 2 * c.block * bb, bytes + c.block * bb, c.scales, c.count, bb, codes);
        else blocks_bf16_scalar(out + 2 * c.block * bb, bytes + c.block * bb, c.scales, c.count, bb, codes);
    }
}
