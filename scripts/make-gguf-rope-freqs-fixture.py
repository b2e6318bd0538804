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
import json
import math
import os

import gguf
import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "Fixtures", "tiny-llama", "untied-fp32")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model")
IDS = [1, 17, 300, 5, 999, 42, 7, 7, 256, 3, 800, 64, 90, 91, 92, 93, 500, 2, 11, 700]
SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute (n_head_kv already substituted for k).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


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
    t = load_file(os.path.join(SOURCE, "model.safetensors"))
    theta = cfg["rope_parameters"]["rope_theta"]
    w = gguf.GGUFWriter(os.path.join(OUT, "tiny-rope-freqs.gguf"), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    factors = rope_factors(theta, cfg["head_dim"])
    w.add_tensor("rope_freqs.weight", factors.numpy())
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output.weight", t["lm_head.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w.add_tensor(f"blk.{layer}.attn_norm.weight", t[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{layer}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        for hf, short in names.items():
            group = "mlp" if hf in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            weight = t[f"{p}{group}.{hf}.weight"]
            if hf == "q_proj":
                weight = permute(weight, cfg["num_attention_heads"])
            if hf == "k_proj":
                weight = permute(weight, cfg["num_key_value_heads"])
            w.add_tensor(f"blk.{layer}.{short}.weight", np.ascontiguousarray(weight))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

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
