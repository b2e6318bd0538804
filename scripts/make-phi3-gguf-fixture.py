#!/usr/bin/env python3
"""Makes Fixtures/gguf-model/tiny-phi3.gguf: Fixtures/phi3/model (the tiny random Phi3ForCausalLM of
scripts/make-family-fixtures.py phi3) written as llama.cpp's convert_hf_to_gguf.py (Phi3MiniModel) writes
a `phi3` model: the fused attn_qkv and ffn_up (gate then up rows) as they are in the checkpoint, no q/k
permutation, rope.dimension_count = int(partial_rotary_factor * hidden) // heads, LongRoPE as the tensors
rope_factors_long / rope_factors_short with rope.scaling.original_context_length and
rope.scaling.attn_factor = sqrt(1 + ln(max / original) / ln(original)), attention.sliding_window, no
output.weight (tied). Every tensor F32, so the file holds exactly the checkpoint's values and
Tests/QLoRATests/Phi3Tests.swift can ask for transformers' logits of Fixtures/phi3/reference.safetensors.

Not needed by the project or CI (needs gguf, safetensors, numpy):

    ~/ref-venv/bin/python scripts/make-phi3-gguf-fixture.py
"""
import json
import math
import os

import gguf
import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "Fixtures", "phi3", "model")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model", "tiny-phi3.gguf")


def main():
    cfg = json.load(open(os.path.join(SOURCE, "config.json")))
    rope = cfg["rope_parameters"]
    t = load_file(os.path.join(SOURCE, "model.safetensors"))
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    max_pos, original = cfg["max_position_embeddings"], cfg["original_max_position_embeddings"]
    rope_dims = int(rope["partial_rotary_factor"] * hidden) // heads
    w = gguf.GGUFWriter(OUT, "phi3")
    w.add_context_length(max_pos)
    w.add_rope_scaling_orig_ctx_len(original)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(rope_dims)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_sliding_window(cfg.get("sliding_window") or 0)
    scale = max_pos / original
    w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])

    def add(name, array):
        w.add_tensor(name, np.ascontiguousarray(array.astype(np.float32)))

    add("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
    add("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    add("token_embd.weight", t["model.embed_tokens.weight"])
    add("output_norm.weight", t["model.norm.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"])
        add(f"blk.{i}.attn_qkv.weight", t[p + "self_attn.qkv_proj.weight"])
        add(f"blk.{i}.attn_output.weight", t[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.ffn_up.weight", t[p + "mlp.gate_up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", t[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
