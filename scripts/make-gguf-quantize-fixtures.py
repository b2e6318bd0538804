#!/usr/bin/env python3
"""Fixtures/gguf-quantize/: random fp32 rows and gguf.quants.quantize's bytes for each type qlora
writes (F16, BF16, Q8_0, Q4_0). Not needed by the project; regenerate with
`python scripts/make-gguf-quantize-fixtures.py` (needs gguf, numpy)."""
import os
import gguf
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fixtures", "gguf-quantize")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(7)
values = (rng.standard_normal((16, 64)) * rng.uniform(0.001, 10, size=(16, 1))).astype(np.float32)
values[3, :32] = 0          # an all-zero block
values[5, 7] = -values[5].max() * 3  # a negative extreme
values.tofile(os.path.join(OUT, "values.f32"))
Q = gguf.GGMLQuantizationType
for name, qtype in [("F16", Q.F16), ("BF16", Q.BF16), ("Q8_0", Q.Q8_0), ("Q4_0", Q.Q4_0)]:
    gguf.quants.quantize(values, qtype).tofile(os.path.join(OUT, f"{name}.bytes"))
with open(os.path.join(OUT, "README.md"), "w") as f:
    f.write(f"# Fixtures/gguf-quantize\n\nMade by `scripts/make-gguf-quantize-fixtures.py` with gguf {gguf.__version__ if hasattr(gguf, '__version__') else '0.19'}:\n"
            "`values.f32` is 16 x 64 float32 (seeded normal, per-row scales, an all-zero block, a negative extreme);\n"
            "`<TYPE>.bytes` is `gguf.quants.quantize(values, TYPE)`.\n")
