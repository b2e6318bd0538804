#!/usr/bin/env python3
"""Writes the reference of Tests/QLoRATests/Gemma3RealModelTests.swift: transformers 5.23 loads the Gemma 3
270M Q4_K_M GGUF (dequantized to fp32), tokenizes a paragraph, and records its ids, the causal-LM loss
and 32 greedy tokens after the first 20 ids. Not used by CI.
    scripts/gemma3-real-reference.py DIR FILE.gguf OUT.json
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(2)
d, f, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
tok=AutoTokenizer.from_pretrained(d, gguf_file=f)
text=("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
"movable metal type, oil-based ink and a wooden press adapted from those used for wine. Within fifty years "
"printing shops had spread to more than two hundred cities across Europe, and the price of books fell sharply. "
"Scholars could compare identical copies of a text for the first time, which changed how knowledge was checked and shared.")
ids=tok(text)["input_ids"]
m=AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    out=m(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
    g=m.generate(torch.tensor([ids[:20]]), max_new_tokens=32, do_sample=False)[0,20:].tolist()
json.dump({"ids":ids,"loss":float(out.loss),"prompt":ids[:20],"greedy":g}, open(out_path, "w"))
print(len(ids), float(out.loss), g)
