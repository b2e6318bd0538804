#!/usr/bin/env python3
"""Writes Fixtures/gguf-blocks/: raw ggml blocks and their float32 dequantization by gguf-py.

    ~/peer-bench-venv/bin/python scripts/make-gguf-block-fixtures.py [--out DIR] [--ggml-lib PATH]

For each quantized type, <TYPE>.blocks holds 13 blocks as stored in GGUF and <TYPE>.f32 the little-endian
float32 output of gguf.quants.dequantize. F16 and BF16 hold single values, chosen to cover zeros,
subnormals, infinities and (signaling and quiet) NaNs. Needs numpy and gguf (0.19); deterministic (seeded).

--ggml-lib PATH (e.g. ~/llama-cpp/build/bin/libggml-base.so) also runs ggml's own dequantize_row_* on the
same bytes and reports, per type, whether it agrees with gguf-py bit for bit. It changes no file.
"""
import argparse
import ctypes
import importlib.metadata
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

SEED = 20250107
REALISTIC = 4   # blocks per type that look like real weights; 9 random-byte blocks follow

# Byte offsets of the fp16 super-block fields (ggml-common.h): "d" scales the codes, "m" is Q4_1/Q5_1's
# min and the K-quants' dmin. Random-byte blocks get these patched so the special values are chosen.
SCALE_FIELDS = {
    T.Q8_0: {"d": 0}, T.Q4_0: {"d": 0}, T.Q5_0: {"d": 0},
    T.Q4_1: {"d": 0, "m": 2}, T.Q5_1: {"d": 0, "m": 2},
    T.Q2_K: {"d": 80, "m": 82}, T.Q3_K: {"d": 108}, T.Q4_K: {"d": 0, "m": 2},
    T.Q5_K: {"d": 0, "m": 2}, T.Q6_K: {"d": 208},
}
# gguf-py 0.19 quantizes only these; the K-quant blocks are all random bytes with patched scales.
QUANTIZABLE = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}

F16_QNAN_PAYLOAD = 0x7E55   # quiet NaN, payload 0x255


def half(rng, scale):
    return int(np.float16(rng.standard_normal() * scale).view(np.uint16))


def scale_patterns(rng):
    """fp16 bit patterns (d, m) of the random-byte blocks (types without a min take the non-finite m as d).

    At most one of d and m is non-finite in a block: with two NaN operands x86 returns the first, so the
    result would depend on operand order, which neither ggml nor numpy promises.
    """
    subnormal = int(rng.integers(1, 0x400)) | int(rng.integers(0, 2)) << 15
    return [
        (half(rng, 0.01), half(rng, 0.01)), (subnormal, 0x8000), (0xFBFF, 0x7BFF),   # ±65504: largest finite
        (half(rng, 1.0), subnormal ^ 0x8000), (0x0000, half(rng, 0.01)),
        (0x7C00, half(rng, 0.01)), (half(rng, 0.01), 0xFC00),                        # +inf d, -inf m
        (F16_QNAN_PAYLOAD, half(rng, 0.01)), (half(rng, 0.01), F16_QNAN_PAYLOAD),
    ]


def quantized_blocks(qtype, rng):
    elements, size = gguf.GGML_QUANT_SIZES[qtype]
    fields = SCALE_FIELDS[qtype]
    patterns = scale_patterns(rng)
    if "m" not in fields:   # the non-finite min cases become non-finite d
        patterns = [(m, 0) if m in (0xFC00, F16_QNAN_PAYLOAD) else (d, m) for d, m in patterns]
    out = np.empty((REALISTIC + len(patterns), size), dtype=np.uint8)
    # Realistic blocks: gguf.quants.quantize of normal data at several scales (one offset, so mins matter)
    # where gguf-py can quantize; random bytes with weight-sized scales otherwise.
    for b in range(REALISTIC):
        if qtype in QUANTIZABLE:
            data = (rng.standard_normal(elements) * [0.02, 1.0, 300.0, 0.5][b] + [0, 0, 0, 3.0][b]).astype(np.float32)
            out[b] = quantize(data.reshape(1, -1), qtype).reshape(-1)
        else:
            out[b] = rng.integers(0, 256, size, dtype=np.uint8)
            for offset in fields.values():
                out[b, offset:offset + 2] = np.array([half(rng, 0.002)], dtype=np.uint16).view(np.uint8)
    # Then every bit of codes and sub-scales random, the super-block scales from scale_patterns.
    for b, (d, m) in enumerate(patterns, start=REALISTIC):
        out[b] = rng.integers(0, 256, size, dtype=np.uint8)
        out[b, fields["d"]:fields["d"] + 2] = np.array([d], dtype=np.uint16).view(np.uint8)
        if "m" in fields:
            out[b, fields["m"]:fields["m"] + 2] = np.array([m], dtype=np.uint16).view(np.uint8)
    return out.reshape(-1)


def f16_values(rng):
    """Every pattern with exponent 0 or 31 (zeros, subnormals, infinities, NaNs; both signs), then 1024 others."""
    h = np.arange(1024, dtype=np.uint16)
    special = np.concatenate([h, h | 0x7C00, h | 0x8000, h | 0xFC00])
    normal = rng.integers(0x0400, 0x7C00, 1024, dtype=np.uint16) | (rng.integers(0, 2, 1024, dtype=np.uint16) << 15)
    return np.concatenate([special, normal]).astype("<u2").view(np.uint8)


def bf16_values(rng):
    """Every pattern with exponent 0 or 255 (both signs), then 4608 random ones."""
    h = np.arange(128, dtype=np.uint16)
    special = np.concatenate([h, h | 0x7F80, h | 0x8000, h | 0xFF80])
    return np.concatenate([special, rng.integers(0, 0x10000, 4608, dtype=np.uint16)]).astype("<u2").view(np.uint8)


def ggml_dequantize(lib, qtype, raw):
    """ggml's to_float for `qtype` (libggml-base), for the cross-check only."""
    elements, size = gguf.GGML_QUANT_SIZES[qtype]
    n = raw.size // size * elements
    out = np.zeros(n, dtype=np.float32)
    src, dst = raw.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)
    if qtype == T.F16:
        lib.ggml_fp16_to_fp32_row(src, dst, ctypes.c_int64(n))
    elif qtype == T.BF16:
        lib.ggml_bf16_to_fp32_row(src, dst, ctypes.c_int64(n))
    else:
        getattr(lib, "dequantize_row_" + qtype.name.lower().replace("_k", "_K"))(src, dst, ctypes.c_int64(n))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "Fixtures", "gguf-blocks"))
    parser.add_argument("--ggml-lib", help="libggml-base.so to cross-check against (optional)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lib = ctypes.CDLL(os.path.expanduser(args.ggml_lib)) if args.ggml_lib else None

    rng = np.random.default_rng(SEED)
    cases = [(q, quantized_blocks(q, rng)) for q in SCALE_FIELDS]
    cases += [(T.F16, f16_values(rng)), (T.BF16, bf16_values(rng))]
    for qtype, raw in cases:
        with np.errstate(invalid="ignore"):   # inf * 0 in the non-finite cases, on purpose
            expected = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(-1)
        elements, size = gguf.GGML_QUANT_SIZES[qtype]
        assert expected.size == raw.size // size * elements
        with open(os.path.join(args.out, qtype.name + ".blocks"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(args.out, qtype.name + ".f32"), "wb") as f:
            f.write(expected.astype("<f4").tobytes())
        line = f"{qtype.name:5} {raw.size // size:5} blocks  {expected.size:5} values  {np.isnan(expected).sum():4} NaN"
        if lib is not None:
            theirs = ggml_dequantize(lib, qtype, raw).view(np.uint32)
            differ = np.nonzero(theirs != expected.view(np.uint32))[0]
            line += "  ggml: same bits" if differ.size == 0 else (
                f"  ggml: {differ.size} values differ, first at {differ[0]}: "
                f"gguf-py {expected.view(np.uint32)[differ[0]]:#010x}, ggml {theirs[differ[0]]:#010x}")
        print(line)
    print(f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}, seed {SEED}")


if __name__ == "__main__":
    main()
