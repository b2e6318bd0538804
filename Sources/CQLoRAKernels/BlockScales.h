#ifndef CQLORA_BLOCK_SCALES_H
#define CQLORA_BLOCK_SCALES_H
/* The per-block scales of a 4-bit tensor computed from the stored statistics a chunk of blocks at a time
 * (shared by the dequantization and the matrix-vector kernels). The double-quantized scale is a multiply
 * THEN an add, each rounded to float32 (bitsandbytes): never contracted into an FMA. */
#include "CQLoRAKernels.h"
#pragma STDC FP_CONTRACT OFF

enum { SCALE_CHUNK = 64 };   /* blocks per chunk: the scales of a chunk live on the stack (256 bytes) */

typedef struct {
    const float *absmax;      /* plain: the next block's absmax; NULL when double-quantized */
    const uint8_t *codes;     /* double-quantized: the next block's code */
    const float *nested;      /* the nested absmax of the next block */
    const float *map;
    float offset;
    size_t left;              /* blocks left under *nested, the next one included */
    size_t nested_blocksize;
} scale_cursor;

static inline scale_cursor scale_cursor_at(const qlora_block_scales *s, size_t first) {
    scale_cursor c = { 0 };
    if (s->absmax) { c.absmax = s->absmax + first; return c; }
    c.codes = s->codes + first;
    c.nested = s->nested_absmax + first / s->nested_blocksize;
    c.map = s->dynamic_map;
    c.offset = s->offset;
    c.nested_blocksize = s->nested_blocksize;
    c.left = s->nested_blocksize - first % s->nested_blocksize;
    return c;
}

/* The scales of the next n (<= SCALE_CHUNK) blocks: the stored absmax itself when plain, else computed
 * into buffer. A separate tight loop, so the block kernels below stay as they were with precomputed scales. */
static inline const float *scale_chunk(scale_cursor *c, float *buffer, size_t n) {
    if (c->absmax) { const float *s = c->absmax; c->absmax += n; return s; }
    for (size_t done = 0; done < n;) {
        size_t run = n - done < c->left ? n - done : c->left;
        const float nested = *c->nested, offset = c->offset, *map = c->map;
        const uint8_t *codes = c->codes;
        for (size_t k = 0; k < run; k++) {
            float product = map[codes[k]] * nested;
            buffer[done + k] = product + offset;
        }
        c->codes += run;
        done += run;
        c->left -= run;
        if (c->left == 0) { c->nested++; c->left = c->nested_blocksize; }
    }
    return buffer;
}

/* Blocks first ..< first + count in chunks: while (scale_chunks_next(&chunks)) uses chunks.block (relative
 * to first), chunks.count and chunks.scales (count). */
typedef struct {
    scale_cursor cursor;
    size_t block, count, total;
    const float *scales;
    float buffer[SCALE_CHUNK];
} scale_chunks;

static inline void scale_chunks_init(scale_chunks *c, const qlora_block_scales *s, size_t first, size_t count) {
    c->cursor = scale_cursor_at(s, first);
    c->block = 0;
    c->count = 0;
    c->total = count;
}

static inline int scale_chunks_next(scale_chunks *c) {
    c->block += c->count;
    if (c->block >= c->total) return 0;
    c->count = c->total - c->block < SCALE_CHUNK ? c->total - c->block : SCALE_CHUNK;
    c->scales = scale_chunk(&c->cursor, c->buffer, c->count);
    return 1;
}

#endif
