#!/usr/bin/env python3
"""Makes Fixtures/gguf-model/: tiny Llama GGUF files and what transformers computes from them.

Not needed by the project or CI; run it to regenerate the fixtures (needs torch, transformers >= 5,
gguf, safetensors, numpy):

    python scripts/make-gguf-model-fixtures.py SMOLLM2_Q4_1_GGUF

1. tiny-untied.gguf: Fixtures/tiny-llama/untied-fp32 written as llama.cpp's converter writes a
   `llama` model (q/k rows permuted for its rotary layout, `output.weight` present), each linear in
   another block type (Q8_0, Q4_1, Q5_0, Q5_1, Q4_0; F16 where a row is not whole 32-blocks), the
   embedding table Q8_0. tiny-tied.gguf: the tied-fp32 model in F32 (no output.weight).
   logits.safetensors: transformers' logits for both, loaded with from_pretrained(gguf_file=...).
2. smollm2-tokenizer.gguf: the tokenizer metadata (no tensors) of the real SmolLM2-135M-Instruct
   Q4_1 GGUF given on the command line; tokenizer_ids.json: transformers' ids for the strings of
   Fixtures/tokenizer/tokenizer_cases.json from that file, and the ids of SmolLM2's own tokenizer.json.
"""
import json
import os
import sys

import gguf
import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Fixtures", "gguf-model")
IDS = [1, 17, 300, 5, 999, 42, 7, 7, 256, 3, 800, 64]


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute (n_head_kv already substituted for k).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny(name, source, types, extra=None):
    """Writes the model of `source` as `name`, each linear in `types`; `extra`: more F32 tensors, first."""
    cfg = json.load(open(os.path.join(source, "config.json")))
    t = load_file(os.path.join(source, "model.safetensors"))
    w = gguf.GGUFWriter(os.path.join(OUT, name), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)

    def add(gname, array, qtype):
        array = array.astype(np.float32)
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(gname, array.astype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32))
        else:
            w.add_tensor(gname, gguf.quants.quantize(array, qtype), raw_dtype=qtype)

    for gname, array in (extra or {}).items():
        add(gname, array, gguf.GGMLQuantizationType.F32)
    add("token_embd.weight", t["model.embed_tokens.weight"], types["embed"])
    if "lm_head.weight" in t:
        add("output.weight", t["lm_head.weight"], types["output"])
    add("output_norm.weight", t["model.norm.weight"], gguf.GGMLQuantizationType.F32)
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        add(f"blk.{layer}.attn_norm.weight", t[p + "input_layernorm.weight"], gguf.GGMLQuantizationType.F32)
        add(f"blk.{layer}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"], gguf.GGMLQuantizationType.F32)
        for hf, short in names.items():
            group = "mlp" if hf in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            weight = t[f"{p}{group}.{hf}.weight"]
            if hf == "q_proj":
                weight = permute(weight, cfg["num_attention_heads"])
            if hf == "k_proj":
                weight = permute(weight, cfg["num_key_value_heads"])
            add(f"blk.{layer}.{short}.weight", weight, types[hf])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    Q = gguf.GGMLQuantizationType
    untied = {"embed": Q.Q8_0, "output": Q.Q8_0, "q_proj": Q.Q8_0, "k_proj": Q.Q4_1, "v_proj": Q.Q5_0,
              "o_proj": Q.Q5_1, "gate_proj": Q.Q4_0, "up_proj": Q.Q8_0, "down_proj": Q.F16}
    write_tiny("tiny-untied.gguf", os.path.join(ROOT, "Fixtures/tiny-llama/untied-fp32"), untied)
    tied = {k: Q.F32 for k in untied}
    write_tiny("tiny-tied.gguf", os.path.join(ROOT, "Fixtures/tiny-llama/tied-fp32"), tied)
    logits = {}
    ids = torch.tensor([IDS])
    for name in ("tiny-untied", "tiny-tied"):
        model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=name + ".gguf", dtype=torch.float32).eval()
        with torch.no_grad():
            out = model(ids, labels=ids)
        logits[name] = out.logits[0].contiguous()
        logits[name + ".loss"] = out.loss.reshape(1)
    logits["ids"] = ids[0].to(torch.int32)
    save_file(logits, os.path.join(OUT, "logits.safetensors"))

    if len(sys.argv) > 1:
        reader = gguf.GGUFReader(sys.argv[1])
        w = gguf.GGUFWriter(os.path.join(OUT, "smollm2-tokenizer.gguf"), "llama")
        for field in reader.fields.values():
            if not field.name.startswith("tokenizer.") and field.name != "general.architecture":
                continue
            if field.name == "general.architecture":
                continue
            value = field.contents()
            vtype = field.types[0]
            if vtype == gguf.GGUFValueType.ARRAY:
                w.add_key_value(field.name, value, vtype, sub_type=field.types[-1])
            else:
                w.add_key_value(field.name, value, vtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        cases = json.load(open(os.path.join(ROOT, "Fixtures/tokenizer/tokenizer_cases.json")))["strings"]
        from_gguf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(sys.argv[1])), gguf_file=os.path.basename(sys.argv[1]))
        original = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, "Fixtures/tokenizer/tokenizer.json"))
        rows = []
        for case in cases:
            text = case["text"]
            rows.append({"text": text,
                         "transformers_gguf_ids": from_gguf(text, add_special_tokens=False)["input_ids"],
                         "tokenizer_json_ids": original(text, add_special_tokens=False)["input_ids"]})
        json.dump({"gguf": os.path.basename(sys.argv[1]), "transformers": __import__("transformers").__version__,
                   "cases": rows}, open(os.path.join(OUT, "tokenizer_ids.json"), "w"), ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
