#ifndef CQLORA_GGML_GROUPS_H
#define CQLORA_GGML_GROUPS_H
/* The fused GGML types as the decode kernels walk them: rows of blocks, each block one 32-element group
 * (Q8_0, Q4_0, Q4_1, Q5_0) or eight (the 256-element K-quant super-blocks Q4_K, Q5_K, Q6_K), and the
 * scalar arithmetic of one group, which is GGMLBlocks.swift's (bit-exact with gguf-py) and which every
 * SIMD level reproduces. Shared by GemvGGML.c and GemvGGMLK.c. */
#include "DotBF16.h"
#include "GemvGGML.h"
#include <string.h>

static inline int ggml_is_k(int type) { return type == QLORA_GGML_Q4_K || type == QLORA_GGML_Q5_K || type == QLORA_GGML_Q6_K; }

static inline size_t ggml_block_bytes(int type) {
    switch (type) {
    case QLORA_GGML_Q8_0: return 34;
    case QLORA_GGML_Q4_1: return 20;
    case QLORA_GGML_Q5_0: return 22;
    case QLORA_GGML_Q4_K: return 144;
    case QLORA_GGML_Q5_K: return 176;
    case QLORA_GGML_Q6_K: return 210;
    default: return 18;   /* Q4_0 */
    }
}

/* 32-element groups per block. */
static inline size_t ggml_block_groups(int type) { return ggml_is_k(type) ? 8 : 1; }

/* IEEE half -> float, exact, a NaN's payload and quiet bit kept as they are (GGMLBlocks.fp16). */
static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 31u, mantissa = h & 0x3ffu;
    if (exponent == 0) {
        const float magnitude = (float)mantissa * 0x1p-24f;   /* zero or subnormal: exact */
        return sign ? -magnitude : magnitude;
    }
    const uint32_t bits = exponent == 31 ? sign | 0x7f800000u | mantissa << 13 : sign | (exponent + 112) << 23 | mantissa << 13;
    return f32_from_bits(bits);
}

static inline const uint8_t *row_at(const uint8_t *data, size_t row_bytes, const int32_t *stored_rows, size_t row) {
    return data + (stored_rows ? (size_t)stored_rows[row] : row) * row_bytes;
}

/* ggml's get_scale_min_k4: the 6-bit scale and min of group j (0-7) from Q4_K/Q5_K's 12 packed bytes. */
static inline void scale_min_k4(const uint8_t *s, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *min = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* The 32 weights of group g of block b, one at a time (fp32 products and sums, each rounded once: this
 * target is compiled with FP_CONTRACT OFF):
 *   Q8_0: q * d    Q4_0: (q - 8) * d    Q4_1: q * d + m    Q5_0: (q - 16) * d
 *   Q4_K, Q5_K: (d * scale) * q - dmin * min    Q6_K: (d * scale) * (q - 32)
 * Every product is exact (fp16's 11 significant bits times integers of at most 12 bits), so only the
 * add or subtract of a min rounds. */
static inline void group_values(int type, const uint8_t *b, int g, float *w) {
    switch (type) {
    case QLORA_GGML_Q8_0: {
        const float d = half_at(b);
        for (int j = 0; j < 32; j++) w[j] = (float)(int8_t)b[2 + j] * d;
        break;
    }
    case QLORA_GGML_Q4_0: {
        const float d = half_at(b);
        for (int j = 0; j < 16; j++) {
            w[j] = (float)((int)(b[2 + j] & 15) - 8) * d;
            w[j + 16] = (float)((int)(b[2 + j] >> 4) - 8) * d;
        }
        break;
    }
    case QLORA_GGML_Q4_1: {
        const float d = half_at(b), m = half_at(b + 2);
        for (int j = 0; j < 16; j++) {
            const float lo = (float)(b[4 + j] & 15) * d, hi = (float)(b[4 + j] >> 4) * d;
            w[j] = lo + m;
            w[j + 16] = hi + m;
        }
        break;
    }
    case QLORA_GGML_Q5_0: {   /* d, qh (u32: bit j = element j's fifth bit), qs[16] */
        const float d = half_at(b);
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        for (int j = 0; j < 16; j++) {
            const int lo = (b[6 + j] & 15) | ((qh >> j) & 1) << 4, hi = (b[6 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            w[j] = (float)(lo - 16) * d;
            w[j + 16] = (float)(hi - 16) * d;
        }
        break;
    }
    case QLORA_GGML_Q4_K:
    case QLORA_GGML_Q5_K: {   /* d, dmin, scales[12], (Q5_K: qh[32]), qs[128]: group g = nibble g % 2 of 32 qs bytes */
        int scale, min;
        scale_min_k4(b + 4, g, &scale, &min);
        const float ds = half_at(b) * (float)scale, dm = half_at(b + 2) * (float)min;
        const uint8_t *qs = b + (type == QLORA_GGML_Q4_K ? 16 : 48) + 32 * (g / 2);
        for (int l = 0; l < 32; l++) {
            int q = (qs[l] >> (4 * (g % 2))) & 15;
            if (type == QLORA_GGML_Q5_K) q |= ((b[16 + l] >> g) & 1) << 4;
            w[l] = ds * (float)q - dm;
        }
        break;
    }
    default: {   /* Q6_K: ql[128], qh[64], scales[16] (int8), d; group g = pass g % 4 of half g / 4 */
        const int half = g / 4, pass = g % 4;
        const uint8_t *ql = b + 64 * half + 32 * (pass % 2), *qh = b + 128 + 32 * half;
        const float d = half_at(b + 208);
        const float d_lo = d * (float)(int8_t)b[192 + 2 * g], d_hi = d * (float)(int8_t)b[192 + 2 * g + 1];   /* lanes 0-15, 16-31 */
        for (int l = 0; l < 32; l++) {
            const int q = ((ql[l] >> (4 * (pass / 2))) & 15) | ((qh[l] >> (2 * pass)) & 3) << 4;
            w[l] = (l < 16 ? d_lo : d_hi) * (float)(q - 32);
        }
        break;
    }
    }
}

/* Vectors per pass of the bf16dot kernels (their accumulators stay in registers). */
enum { GGML_MAX_VECTORS = 8 };

/* The K-quant SIMD loops (GemvGGMLK.c), as the 32-element ones of GemvGGML.c; `type` is a K type,
 * bf16dot at most GGML_MAX_VECTORS vectors. */
void qlora_ggml_k_f32_avx2(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                           const int32_t *stored_rows, size_t first_row, int rounding);
void qlora_ggml_k_f32_avx512(int type, float *y, const float *x, size_t rows, size_t cols, const uint8_t *data, size_t row_bytes,
                             const int32_t *stored_rows, size_t first_row, int rounding);
void qlora_ggml_k_bf16dot_avx512(int type, float *y, size_t ldy, const uint32_t *x, size_t ldx, size_t nvec, size_t rows,
                                 size_t cols, const uint8_t *data, size_t row_bytes, const int32_t *stored_rows, size_t first_row);

#endif
