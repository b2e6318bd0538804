#ifndef CQLORA_DOT_BF16_H
#define CQLORA_DOT_BF16_H
/* The arithmetic of AVX512-BF16 vdpbf16ps, one lane, in portable C: the scalar twins of the bf16 GEMM
 * and matrix-vector kernels. */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t bits_from_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* bf16 bits -> fp32, a denormal taken as a zero of the same sign (DAZ). */
static inline float bf16_daz(uint32_t h) {
    h &= 0xffffu;
    if ((h & 0x7f80u) == 0) h &= 0x8000u;
    return f32_from_bits(h << 16);
}

/* fp32 with denormals replaced by a zero of the same sign (DAZ on input, FTZ on output). */
static inline float flush(float x) {
    uint32_t u = bits_from_f32(x);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    return f32_from_bits(u);
}

/* One lane of vdpbf16ps: acc += a.hi * b.hi, then acc += a.lo * b.lo (each product of two bf16 values is
 * exact in fp32, so each step is one fused multiply-add with one rounding). */
static inline float dp_pair(float acc, uint32_t a, uint32_t b) {
    acc = flush(fmaf(bf16_daz(a >> 16), bf16_daz(b >> 16), flush(acc)));
    return flush(fmaf(bf16_daz(a), bf16_daz(b), acc));
}

/* The matrix-vector kernels' reduction (Gemv.h), one lane at a time: v = A + B, halved four times. */
static inline float reduce_lanes(const float *a, const float *b) {
    float v[16];
    for (int l = 0; l < 16; l++) v[l] = a[l] + b[l];
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) v[l] += v[l + width];
    return v[0];
}

#endif
