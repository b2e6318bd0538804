#!/usr/bin/env python3
"""Makes Fixtures/<family>/: a tiny random model of one family (qwen3: Qwen3ForCausalLM, gemma3:
Gemma3ForCausalLM) and what transformers, PEFT and bitsandbytes compute with it (see
Fixtures/<family>/README.md for every file).

Not needed by the project or CI; run it to regenerate the fixtures (CPU only, deterministic: fixed
seeds, 2 threads). Made with torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2, bitsandbytes 0.50.2,
safetensors 0.8.0, numpy 2.4.6:

    python3 -m venv ~/ref-venv && ~/ref-venv/bin/pip install torch transformers==5.23.0 peft==0.21.2 \
        bitsandbytes==0.50.2 safetensors numpy
    ~/ref-venv/bin/python scripts/make-family-fixtures.py qwen3
    ~/ref-venv/bin/python scripts/make-family-fixtures.py gemma3
    ~/ref-venv/bin/python scripts/make-family-fixtures.py smollm3
    ~/ref-venv/bin/python scripts/make-family-fixtures.py phi3

qwen3 exercises every Qwen3 switch: per-head q/k RMSNorm (weights jittered away from 1), an explicit
head_dim (32) that is not hidden / heads (16), grouped-query attention, tied embeddings, no attention bias.

gemma3 exercises every Gemma 3 switch: (1 + w) norms (w jittered away from 0), GeGLU, sandwich norms,
the sqrt(hidden) embedding scale, q/k norms, query_pre_attn_scalar (24, not head_dim), two sliding-window
layers (window 5 < the 12-token batch) with their own RoPE base around one global layer with linear RoPE
scaling, and a final logit soft-cap (5, small enough to bend these logits; Gemma 3's own configs leave it off).

phi3 exercises every Phi-3 / Phi-4-mini switch: fused qkv_proj and gate_up_proj (one LoRA each, PEFT's phi3
targets), partial rotary (0.75 of head_dim 16: 12 dims rotate, 4 pass through), LongRoPE (original length 8 <
the 12-token batch, so the batch rotates with long_factor; greedy decoding crosses 8 and transformers re-runs
the sequence with the long factors), a sliding window of 7 on every layer, tied embeddings as in Phi-4-mini.
"""
import sys
import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, Gemma3ForCausalLM, Gemma3TextConfig, Phi3Config,
                          Phi3ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config, SmolLM3ForCausalLM)
from peft import LoraConfig, get_peft_model

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FAMILY = sys.argv[1] if len(sys.argv) > 1 else "qwen3"
OUT = os.path.join(ROOT, "Fixtures", FAMILY)
FAMILIES = {
    "qwen3": dict(config=Qwen3Config, model=Qwen3ForCausalLM, norm_center=1.0, arch=dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, attention_bias=False, use_sliding_window=False,
        sliding_window=None, max_window_layers=2, bos_token_id=1, eos_token_id=2, hidden_act="silu",
        attention_dropout=0.0, initializer_range=0.2)),
    # Gemma's norm weights are centred on 0 (the scale is 1 + w).
    "gemma3": dict(config=Gemma3TextConfig, model=Gemma3ForCausalLM, norm_center=0.0, arch=dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, rms_norm_eps=1e-6,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"], sliding_window=5,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        query_pre_attn_scalar=24, final_logit_softcapping=5.0, attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, attention_bias=False,
        bos_token_id=2, eos_token_id=1, pad_token_id=0, attention_dropout=0.0, initializer_range=0.2)),
    # SmolLM3: the middle layer has no RoPE (NoPE).
    "smollm3": dict(config=SmolLM3Config, model=SmolLM3ForCausalLM, norm_center=1.0, arch=dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=5000000.0,
        no_rope_layers=[1, 0, 1], use_sliding_window=False, tie_word_embeddings=True, attention_bias=False,
        mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_act="silu", attention_dropout=0.0,
        initializer_range=0.2)),
    # Phi-3: fused projections, partial rotary, LongRoPE from 8 positions, a window on every layer.
    "phi3": dict(config=Phi3Config, model=Phi3ForCausalLM, norm_center=1.0,
                 targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], arch=dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, original_max_position_embeddings=8, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                         "long_factor": [1.5, 2.0, 4.0, 8.0, 16.0, 32.0]},
        sliding_window=7, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        hidden_act="silu", attention_dropout=0.0, resid_pdrop=0.0, embd_pdrop=0.0, initializer_range=0.2)),
}
SPEC = FAMILIES[FAMILY]
ARCH = SPEC["arch"]
MODEL_SEED, NORM_SEED, BATCH_SEED, LORA_SEED = 0, 1, 2, 3
NORM_JITTER = 0.1
BATCH, SEQ = 2, 12
TARGETS = SPEC.get("targets", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
R, ALPHA = 4, 8
PROMPT = [1, 17, 200, 5, 99]
NEW_TOKENS = 8


def build_model():
    torch.manual_seed(MODEL_SEED)
    model = SPEC["model"](SPEC["config"](**ARCH)).eval()
    g = torch.Generator().manual_seed(NORM_SEED)
    with torch.no_grad():
        # Every norm (input, post-attention, q_norm, k_norm, the sandwich norms, final) away from a unit
        # scale, so that a weight that is not applied, or applied to the wrong axis, shows.
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(SPEC["norm_center"] + NORM_JITTER * torch.randn(p.shape, generator=g))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def make_batch():
    g = torch.Generator().manual_seed(BATCH_SEED)
    ids = torch.randint(3, ARCH["vocab_size"], (BATCH, SEQ), generator=g).long()
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 8:] = -100
    return ids, labels


def lora_config():
    return LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM", init_lora_weights=True)


def adapter_key(peft_name):
    return peft_name.replace(".default", "")


def lora_init_values(shapes):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming init), B ~ N(0, 0.02^2): non-zero on purpose, so
    that grad(A) != 0. Drawn in sorted key order from one generator."""
    g = torch.Generator().manual_seed(LORA_SEED)
    values = {}
    for k in sorted(shapes):
        shape = shapes[k]
        if ".lora_A." in k:
            values[k] = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
        else:
            values[k] = torch.randn(shape, generator=g) * 0.02
    return values


def peft_model(model, init):
    pm = get_peft_model(model, lora_config())
    # train(): there is no dropout anywhere, and bitsandbytes' eval-mode no-grad 4-bit forward takes
    # another CPU path (see Fixtures/tiny-llama/README.md).
    pm.train()
    named = {adapter_key(n): p for n, p in pm.named_parameters() if p.requires_grad}
    if init is None:
        return pm, named
    assert set(named) == set(init)
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(init[k])
    return pm, named


def lora_case(prefix, model, init, ids, labels, tensors):
    pm, named = peft_model(model, init)
    out = pm(input_ids=ids, labels=labels)
    out.loss.backward()
    tensors[prefix + "logits"] = out.logits.detach().float().contiguous()
    tensors[prefix + "loss"] = out.loss.detach().reshape(1).float()
    for k in sorted(named):
        tensors[prefix + "grad." + k] = named[k].grad.detach().clone().contiguous()
    return pm, float(out.loss)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def merged_hashes(model, init):
    """FNV-1a 64 of the fp32 bytes of every decoder linear after PEFT's merge_and_unload."""
    merged = peft_model(model, init)[0].merge_and_unload()
    return {name: fnv1a64(p.detach().float().contiguous().numpy().tobytes())
            for name, p in sorted(merged.state_dict().items()) if name.startswith("model.layers.") and name.endswith("_proj.weight")}


def greedy(model, prompt):
    """transformers' KV-cache greedy decode, checked against argmax of a full (no-cache) forward at every
    step; returns the tokens and the smallest top-1 / top-2 logit gap (how robust the choice is)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True,
                                   eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        seq, margin = list(prompt), float("inf")
        for token in generated:
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            top = torch.topk(logits, 2).values
            margin = min(margin, float(top[0] - top[1]))
            assert int(logits.argmax()) == token, (generated, seq)
            seq.append(token)
    assert len(generated) == NEW_TOKENS
    return generated, margin


def main():
    # Everything but the hand-written README.md is regenerated.
    os.makedirs(OUT, exist_ok=True)
    for entry in os.listdir(OUT):
        if entry != "README.md":
            path = os.path.join(OUT, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    model_dir, nf4_dir, adapter_dir = (os.path.join(OUT, d) for d in ("model", "model-nf4", "adapter"))
    build_model().save_pretrained(model_dir, safe_serialization=True)
    ids, labels = make_batch()
    tensors = {"input_ids": ids, "labels": labels}
    meta = {"versions": {m.__name__: m.__version__ for m in (torch, __import__("transformers"), __import__("peft"),
                                                               __import__("bitsandbytes"), __import__("safetensors"))},
            "arch": ARCH, "batch": [BATCH, SEQ], "lora": {"r": R, "alpha": ALPHA, "targets": TARGETS, "seed": LORA_SEED}}

    def load(**kw):
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager", **kw)

    # 1. The base alone: logits, loss, and the gradient of every norm weight (what full fine-tuning trains
    #    besides the linears and the embeddings; q_norm / k_norm among them).
    base = load().train()
    out = base(input_ids=ids, labels=labels)
    out.loss.backward()
    tensors["base.logits"] = out.logits.detach().float().contiguous()
    tensors["base.loss"] = out.loss.detach().reshape(1).float()
    for name, p in sorted(base.named_parameters()):
        if name.endswith("norm.weight"):
            tensors["base.grad." + name] = p.grad.detach().clone().contiguous()
    meta["base_loss"] = float(out.loss)

    # 2. LoRA (fp32 base): logits, loss, every lora_A / lora_B gradient; the adapter as PEFT saves it.
    shapes = {k: tuple(p.shape) for k, p in peft_model(load(), None)[1].items()}
    init = lora_init_values(shapes)
    pm, meta["lora_loss"] = lora_case("lora.", load(), init, ids, labels, tensors)
    pm.save_pretrained(adapter_dir)
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["target_modules"] = sorted(cfg["target_modules"])   # a Python set in PEFT: order varies by run
    cfg["base_model_name_or_path"] = "model"
    with open(cfg_path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))
    os.remove(os.path.join(adapter_dir, "README.md"))        # PEFT's model card boilerplate
    meta["merged_fnv1a64"] = merged_hashes(load(), init)

    # 3. Greedy decoding (KV cache) of the base and of the base with the adapter.
    tensors["greedy.prompt"] = torch.tensor(PROMPT)
    base_tokens, base_margin = greedy(load().eval(), PROMPT)
    lora_tokens, lora_margin = greedy(peft_model(load(), init)[0].eval(), PROMPT)
    tensors["greedy.base"] = torch.tensor(base_tokens)
    tensors["greedy.lora"] = torch.tensor(lora_tokens)
    meta["greedy"] = {"prompt": PROMPT, "base": base_tokens, "lora": lora_tokens,
                      "min_top1_top2_logit_gap": {"base": base_margin, "lora": lora_margin}}

    # 4. QLoRA: bitsandbytes NF4 (blocksize 64, double quant) with fp32 compute, saved as bitsandbytes saves
    #    it (q_norm / k_norm stay F32 like every norm), and the same LoRA on it.
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)
    nf4 = load(quantization_config=qcfg, device_map="cpu")
    nf4.save_pretrained(nf4_dir)
    _, meta["nf4_lora_loss"] = lora_case("nf4.", load(quantization_config=qcfg, device_map="cpu"), init, ids, labels, tensors)

    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, os.path.join(OUT, "reference.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps({k: meta[k] for k in ("base_loss", "lora_loss", "nf4_lora_loss", "greedy")}))


if __name__ == "__main__":
    main()
