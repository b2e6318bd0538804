#!/usr/bin/env python3
"""Makes Fixtures/gguf-model/tiny-rope-freqs.gguf and rope-freqs-reference.safetensors.

Not needed by the project or CI; run it to regenerate (needs torch, transformers >= 5, gguf, safetensors):

    python scripts/make-gguf-rope-freqs-fixture.py

Fixtures/tiny-llama/untied-fp32 given Llama 3.1's RoPE scaling (rope_type llama3, factor 8, low/high
frequency factors 1 and 4, original context 32 so that the 16 frequencies of head_dim 32 fall in all
three bands), written as llama.cpp's converter writes such a model: q/k rows permuted, every tensor F32,
and the scaling as the tensor `rope_freqs.weight` (one divisor per frequency, computed as
convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does), no scaling keys. The reference is
transformers' LlamaForCausalLM with the llama3 rope_parameters on the same weights (transformers' own
GGUF loader ignores rope_freqs).
"""
import importlib.util
import json
import math
import os

import gguf
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "Fixtures", "tiny-llama", "untied-fp32")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model")
IDS = [1, 17, 300, 5, 999, 42, 7, 7, 256, 3, 800, 64, 90, 91, 92, 93, 500, 2, 11, 700]
SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def rope_factors(theta, dim):
    # convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_type llama3).
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high, old = (SCALING[k] for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def main():
    cfg = json.load(open(os.path.join(SOURCE, "config.json")))
    theta = cfg["rope_parameters"]["rope_theta"]
    factors = rope_factors(theta, cfg["head_dim"])
    # The tiny Llama writer of make-gguf-model-fixtures.py, every tensor F32, rope_freqs first.
    spec = importlib.util.spec_from_file_location("gguf_model_fixtures", os.path.join(ROOT, "scripts", "make-gguf-model-fixtures.py"))
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    all_f32 = {k: gguf.GGMLQuantizationType.F32 for k in ("embed", "output", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    writer.write_tiny("tiny-rope-freqs.gguf", SOURCE, all_f32, extra={"rope_freqs.weight": factors.numpy()})

    hf_cfg = LlamaConfig.from_pretrained(SOURCE)
    hf_cfg.rope_parameters = {"rope_type": "llama3", "rope_theta": theta, **SCALING}
    model = LlamaForCausalLM.from_pretrained(SOURCE, config=hf_cfg, dtype=torch.float32).eval()
    plain = LlamaForCausalLM.from_pretrained(SOURCE, dtype=torch.float32).eval()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        out = model(ids, labels=ids)
        unscaled = plain(ids).logits[0]
    print("loss", out.loss.item(), "max |scaled - unscaled| logits", (out.logits[0] - unscaled).abs().max().item())
    save_file({"ids": ids[0].to(torch.int32), "logits": out.logits[0].contiguous(), "loss": out.loss.reshape(1),
               "rope_factors": factors}, os.path.join(OUT, "rope-freqs-reference.safetensors"))


if __name__ == "__main__":
    main()
