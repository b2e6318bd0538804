#!/usr/bin/env python3
"""Makes Fixtures/gguf-model/tiny-smollm3.gguf and smollm3-reference.safetensors.

Not needed by the project or CI; run it to regenerate (needs torch, transformers >= 5, gguf, safetensors):

    python scripts/make-gguf-smollm3-fixture.py

A tiny random SmolLM3 (4 layers, so that llama.cpp's NoPE rule -- no RoPE where (layer + 1) % 4 == 0,
hard-coded for the `smollm3` architecture, with no GGUF key -- skips RoPE on the last layer, as
transformers' default `no_rope_layer_interval` 4 does) written as convert_hf_to_gguf.py writes a
SmolLM3ForCausalLM (SmolLM3Model extends LlamaModel: q/k rows permuted for llama.cpp's rotary layout),
q/k/v/gate in Q8_0, the others F32, tied embeddings. transformers cannot load a `smollm3` GGUF, so the
reference is transformers' SmolLM3ForCausalLM with the same (dequantized) weights.
"""
import os

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import SmolLM3Config, SmolLM3ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model")
IDS = [1, 17, 200, 5, 99, 42, 7, 7, 255, 3, 80, 64, 11, 130]
Q = gguf.GGMLQuantizationType
TYPES = {"q_proj": Q.Q8_0, "k_proj": Q.Q8_0, "v_proj": Q.Q8_0, "gate_proj": Q.Q8_0}


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute (n_head_kv already substituted for k).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    torch.manual_seed(3)
    cfg = SmolLM3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    assert cfg.no_rope_layers == [1, 1, 1, 0], cfg.no_rope_layers
    model = SmolLM3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(os.path.join(OUT, "tiny-smollm3.gguf"), "smollm3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)

    def add(gname, tensor, qtype=Q.F32):
        """Writes the tensor; returns what the file holds, as float32 (the reference's weight)."""
        array = tensor.detach().numpy().astype(np.float32)
        if qtype == Q.F32:
            w.add_tensor(gname, array)
            return array
        blocks = gguf.quants.quantize(array, qtype)
        w.add_tensor(gname, blocks, raw_dtype=qtype)
        return gguf.quants.dequantize(blocks, qtype).reshape(array.shape)

    with torch.no_grad():
        add("token_embd.weight", model.model.embed_tokens.weight)
        add("output_norm.weight", model.model.norm.weight)
        names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                 "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
        for i, layer in enumerate(model.model.layers):
            add(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
            add(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
            for hf, short in names.items():
                module = getattr(layer.self_attn if hf in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp, hf)
                weight = module.weight
                heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}.get(hf)
                stored = add(f"blk.{i}.{short}.weight", permute(weight, heads) if heads else weight, TYPES.get(hf, Q.F32))
                if heads:   # undo the permutation: the reference keeps HF's row order
                    inverse = np.empty_like(stored)
                    order = permute(torch.arange(weight.shape[0]), heads).numpy()
                    inverse[order] = stored
                    stored = inverse
                weight.copy_(torch.from_numpy(stored))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ids = torch.tensor([IDS])
    with torch.no_grad():
        out = model(ids, labels=ids)
    save_file({"ids": ids[0].to(torch.int32), "logits": out.logits[0].contiguous(), "loss": out.loss.reshape(1)},
              os.path.join(OUT, "smollm3-reference.safetensors"))
    print("loss", out.loss.item())


if __name__ == "__main__":
    main()
