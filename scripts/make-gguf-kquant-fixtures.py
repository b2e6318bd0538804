#!/usr/bin/env python3
"""Makes Fixtures/gguf-model/tiny-kquant.gguf (a tiny random Llama whose weights are K-quant and Q5_0 blocks)
and kquant-reference.safetensors (what transformers computes from it); optionally a SmolLM2 GGUF with
Q4_K_M's block types, for the decode benchmarks and the greedy-output check.

Not needed by the project or CI; run it to regenerate the fixtures (needs torch, transformers >= 5, gguf,
safetensors, numpy):

    python scripts/make-gguf-kquant-fixtures.py [--smollm2 SmolLM2-135M-Instruct.Q4_1.gguf OUT.gguf]

gguf-py (0.19) dequantizes K-quants but cannot quantize them, so the K-quant blocks here come from a
simple round-to-nearest quantizer below (per-sub-block min/max, 6-bit sub-scales against an fp16 super-
block scale), not llama.cpp's iterative one: valid blocks that transformers/gguf-py and llama.cpp decode,
with a weight-like error, which is all the fixtures need.

1. tiny-kquant.gguf: hidden 256, intermediate 512, 2 layers, 4 heads of 64 (2 KV heads), vocab 512,
   untied; q/k rows permuted as llama.cpp's converter does. Each fused type a Q4_K_M file uses besides
   Q8_0 (Q4_K, Q5_K, Q6_K, Q5_0) holds attention and MLP weights; token_embd is Q4_K, output Q6_K.
2. kquant-reference.safetensors: transformers' fp32 logits for IDS (from_pretrained(gguf_file=...)), its
   greedy continuation of PROMPT (12 tokens, generate(do_sample=False)) and the smallest gap between the
   best and second-best logit over those steps (a tie would make greedy ambiguous).
3. --smollm2 IN OUT: IN's tensors dequantized (gguf-py) and written again as llama.cpp's Q4_K_M mix does
   for SmolLM2-135M's widths: ffn_down (1536 wide) Q4_K, every fourth layer Q6_K; the 576-wide linears
   Q5_0 (llama.cpp's fallback for Q4_K when a row is not whole 256-blocks), attn_v Q8_0 (Q6_K's
   fallback), token_embd Q8_0; metadata (tokenizer included) copied.
"""
import os
import sys

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model")
Q = gguf.GGMLQuantizationType
IDS = [1, 17, 300, 5, 499, 42, 7, 7, 256, 3, 200, 64]
PROMPT = [1, 37, 312, 9, 480, 41, 7]


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def pack_scale_min_k4(sc, m):
    """Inverse of ggml's get_scale_min_k4: (n, 8) 6-bit scales and mins -> (n, 12) bytes."""
    s = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        s[:, j] = (sc[:, j] & 63) | ((sc[:, j + 4] >> 4) << 6)
        s[:, j + 4] = (m[:, j] & 63) | ((m[:, j + 4] >> 4) << 6)
        s[:, j + 8] = (sc[:, j + 4] & 15) | ((m[:, j + 4] & 15) << 4)
    return s


def quantize_k_min(x, levels):
    """Q4_K (levels 15) / Q5_K (31) codes of (n, 256) values: (d, dmin, sc, m, q)."""
    sub = x.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0)
    scale = (sub.max(axis=2) - lo) / levels
    mins = -lo
    d = f16(scale.max(axis=1) / 63).astype(np.float32)
    dmin = f16(mins.max(axis=1) / 63).astype(np.float32)
    sc = np.clip(np.rint(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(np.divide(mins, dmin[:, None], out=np.zeros_like(mins), where=dmin[:, None] > 0)), 0, 63).astype(np.uint8)
    s_eff = (d[:, None] * sc).astype(np.float32)
    m_eff = (dmin[:, None] * m).astype(np.float32)
    q = np.divide(sub + m_eff[:, :, None], s_eff[:, :, None], out=np.zeros_like(sub), where=s_eff[:, :, None] > 0)
    q = np.clip(np.rint(q), 0, levels).astype(np.uint8).reshape(-1, 256)
    return d, dmin, sc, m, q


def quantize_q4_k(x):
    d, dmin, sc, m, q = quantize_k_min(x, 15)
    q = q.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(-1, 128)
    return np.concatenate([f16(d).view(np.uint8).reshape(-1, 2), f16(dmin).view(np.uint8).reshape(-1, 2),
                           pack_scale_min_k4(sc, m), qs], axis=1)


def quantize_q5_k(x):
    d, dmin, sc, m, q = quantize_k_min(x, 31)
    q = q.reshape(-1, 8, 32)   # group g = 2 * chunk + nibble
    low = q & 15
    qs = (low[:, 0::2, :] | (low[:, 1::2, :] << 4)).reshape(-1, 128)
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for g in range(8):
        qh |= ((q[:, g, :] >> 4) & 1) << g
    return np.concatenate([f16(d).view(np.uint8).reshape(-1, 2), f16(dmin).view(np.uint8).reshape(-1, 2),
                           pack_scale_min_k4(sc, m), qh, qs], axis=1)


def quantize_q6_k(x):
    sub = x.reshape(-1, 16, 16)
    scale = np.abs(sub).max(axis=2) / 31
    d = f16(scale.max(axis=1) / 127).astype(np.float32)
    sc = np.clip(np.rint(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)), -128, 127).astype(np.int8)
    s_eff = (d[:, None] * sc.astype(np.float32)).astype(np.float32)
    q = np.divide(sub, s_eff[:, :, None], out=np.zeros_like(sub), where=s_eff[:, :, None] != 0)
    q = (np.clip(np.rint(q), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 128)   # per half
    ql = np.zeros((q.shape[0], 2, 64), dtype=np.uint8)
    qh = np.zeros((q.shape[0], 2, 32), dtype=np.uint8)
    for p in range(4):
        codes = q[:, :, 32 * p:32 * p + 32]
        ql[:, :, 32 * (p % 2):32 * (p % 2) + 32] |= (codes & 15) << (4 * (p // 2))
        qh |= (codes >> 4) << (2 * p)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8),
                           f16(d).view(np.uint8).reshape(-1, 2)], axis=1)


K_QUANTIZERS = {Q.Q4_K: quantize_q4_k, Q.Q5_K: quantize_q5_k, Q.Q6_K: quantize_q6_k}


def quantize(array, qtype):
    """(rows, cols) float32 -> raw block bytes (rows, bytes per row) of qtype."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if qtype in K_QUANTIZERS:
        blocks = K_QUANTIZERS[qtype](array.reshape(-1, 256))
        out = blocks.reshape(array.shape[0], -1)
    else:
        out = gguf.quants.quantize(array, qtype)
    # The blocks decode (gguf-py) to values close to the input: the layouts above are right.
    back = gguf.quants.dequantize(out, qtype).reshape(array.shape)
    error = np.abs(back - array).max() / max(np.abs(array).max(), 1e-30)
    assert error < (0.2 if qtype == Q.Q4_K else 0.1), (qtype, error)
    return out


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute (n_head_kv already substituted for k).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny():
    hidden, inter, layers, heads, kv, head_dim, vocab = 256, 512, 2, 4, 2, 64, 512
    rng = np.random.default_rng(20251207)
    w = gguf.GGUFWriter(os.path.join(OUT, "tiny-kquant.gguf"), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)

    def add(name, array, qtype):
        if qtype == Q.F32:
            w.add_tensor(name, array.astype(np.float32))
        else:
            w.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)

    def normal(*shape, std=0.08):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    add("token_embd.weight", normal(vocab, hidden, std=0.5), Q.Q4_K)
    add("output.weight", normal(vocab, hidden, std=0.3), Q.Q6_K)
    add("output_norm.weight", 1 + normal(hidden, std=0.1), Q.F32)
    types = [{"attn_q": Q.Q4_K, "attn_k": Q.Q5_K, "attn_v": Q.Q6_K, "attn_output": Q.Q5_0,
              "ffn_gate": Q.Q4_K, "ffn_up": Q.Q5_K, "ffn_down": Q.Q6_K},
             {"attn_q": Q.Q6_K, "attn_k": Q.Q5_0, "attn_v": Q.Q4_K, "attn_output": Q.Q5_K,
              "ffn_gate": Q.Q5_0, "ffn_up": Q.Q6_K, "ffn_down": Q.Q4_K}]
    shapes = {"attn_q": (heads * head_dim, hidden), "attn_k": (kv * head_dim, hidden), "attn_v": (kv * head_dim, hidden),
              "attn_output": (hidden, heads * head_dim), "ffn_gate": (inter, hidden), "ffn_up": (inter, hidden),
              "ffn_down": (hidden, inter)}
    for layer in range(layers):
        add(f"blk.{layer}.attn_norm.weight", 1 + normal(hidden, std=0.1), Q.F32)
        add(f"blk.{layer}.ffn_norm.weight", 1 + normal(hidden, std=0.1), Q.F32)
        for short, shape in shapes.items():
            weight = normal(*shape)
            if short == "attn_q":
                weight = permute(weight, heads)
            if short == "attn_k":
                weight = permute(weight, kv)
            add(f"blk.{layer}.{short}.weight", weight, types[layer][short])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference():
    model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny-kquant.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].contiguous()
        prompt = torch.tensor([PROMPT])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    generated = out.sequences[0, len(PROMPT):].to(torch.int32)
    print("greedy", generated.tolist(), "smallest top-2 gap", min(gaps))
    save_file({"ids": torch.tensor(IDS, dtype=torch.int32), "logits": logits, "prompt": torch.tensor(PROMPT, dtype=torch.int32),
               "greedy": generated.contiguous(), "min_gap": torch.tensor([min(gaps)])},
              os.path.join(OUT, "kquant-reference.safetensors"))


def write_smollm2(source, destination):
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(destination, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(field.name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(field.name, field.contents(), vtype)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))   # (rows, cols)
        values = values.reshape(shape)
        if len(shape) == 1:
            w.add_tensor(t.name, values.astype(np.float32))
            continue
        layer = int(t.name.split(".")[1]) if t.name.startswith("blk.") else -1
        if t.name.endswith("ffn_down.weight"):
            qtype = Q.Q6_K if layer % 4 == 0 else Q.Q4_K
        elif t.name.endswith("attn_v.weight") or t.name == "token_embd.weight":
            qtype = Q.Q8_0
        else:
            qtype = Q.Q5_0
        w.add_tensor(t.name, quantize(values, qtype), raw_dtype=qtype)
        print(t.name, qtype.name, shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--smollm2":
        write_smollm2(sys.argv[2], sys.argv[3])
        return
    os.makedirs(OUT, exist_ok=True)
    write_tiny()
    reference()


if __name__ == "__main__":
    main()
