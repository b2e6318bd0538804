#ifndef CQLORA_BF16_ROUNDING_H
#define CQLORA_BF16_ROUNDING_H
#include <stdint.h>

/* fp32 -> bf16 bits, round to nearest-even; NaN stays a quiet NaN. Shared by dequantization and the GEMM. */
static inline uint32_t bf16_round_bits(float x) {
    union { float f; uint32_t u; } v = { x };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (v.u >> 16) | 0x40u;
    return (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
}

#endif
