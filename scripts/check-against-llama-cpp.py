#!/usr/bin/env python3
"""Checks qlora's GGUF support and speed against llama.cpp itself (not CI; Python's standard library only).

    scripts/build-llama-cpp.sh                      # once: builds llama-bench, llama-perplexity, llama-completion
    swift build -c release
    python3 scripts/check-against-llama-cpp.py BASE.gguf TEXT [ADAPTER_DIR] [--llama-bin DIR] [--ctx N] [--chunks K]

1. Perplexity of TEXT with llama-perplexity (n_ctx N, chunks of N tokens, the second half of each
   scored) on the base alone, and with ADAPTER_DIR exported by `qlora export-adapter` and applied
   with --lora; and the same tokens scored by `qlora eval` (records {input_ids, labels} built from
   qlora's tokenization the same way: BOS if the vocabulary adds one, first half masked), base kept
   in its GGUF blocks, fp32 compute. Printed side by side with the relative difference; and
   llama-perplexity on `qlora merge --dtype f16` of base + adapter against qlora eval with the adapter.
2. llama-bench pp128 / tg64 with 2 threads on BASE.
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
QLORA = os.path.join(ROOT, ".build", "release", "qlora")


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return out


def llama_ppl(bin_dir, model, text, ctx, chunks, lora=None):
    cmd = [os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text, "-c", str(ctx), "-b", str(ctx),
           "--chunks", str(chunks), "-t", "2"]
    if lora:
        cmd += ["--lora", lora]
    out = run(cmd)
    match = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
    if not match:
        sys.exit("no 'Final estimate' in llama-perplexity's output")
    return float(match.group(1))


def qlora_ppl(model, text, ctx, chunks, adapter=None):
    with open(text, encoding="utf-8") as f:
        content = f.read()
    ids = json.loads(run([QLORA, "tokenize", "--model", model, "--text", content, "--json"]).stdout)
    # `qlora tokenize` renders a record as train does: BOS if the tokenizer adds one, the text, EOS.
    tokens = ids["ids"][:-1]
    bos = tokens[0] if ids["tokens"][0] in ("<s>", "<|begin_of_text|>", "<bos>") else None
    n_chunks = min(chunks, len(tokens) // ctx)
    first = ctx // 2
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for c in range(n_chunks):
            chunk = tokens[c * ctx:(c + 1) * ctx]
            if bos is not None:
                chunk[0] = bos  # llama-perplexity starts every chunk with BOS when the vocabulary adds one
            labels = [-100] * (first + 1) + chunk[first + 1:]
            f.write(json.dumps({"input_ids": chunk, "labels": labels}) + "\n")
        data = f.name
    cmd = [QLORA, "eval", "--model", model, "--data", data, "--seq-len", str(ctx), "--compute-dtype", "fp32", "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    result = json.loads(run(cmd).stdout)
    os.unlink(data)
    return result["perplexity"], result["tokens"], bos


def main():
    args = sys.argv[1:]
    bin_dir = os.path.expanduser("~/llama-cpp/build/bin")
    ctx, chunks = 256, 16
    for flag in ("--llama-bin", "--ctx", "--chunks"):
        if flag in args:
            i = args.index(flag)
            value = args[i + 1]
            del args[i:i + 2]
            if flag == "--llama-bin":
                bin_dir = value
            elif flag == "--ctx":
                ctx = int(value)
            else:
                chunks = int(value)
    if len(args) < 2:
        sys.exit(__doc__)
    base, text = args[0], args[1]
    adapter = args[2] if len(args) > 2 else None

    theirs = llama_ppl(bin_dir, base, text, ctx, chunks)
    ours, scored, _ = qlora_ppl(base, text, ctx, chunks)
    print(f"base alone: llama-perplexity {theirs:.4f}, qlora eval {ours:.4f} ({scored} tokens), "
          f"difference {100 * (ours - theirs) / theirs:+.3f} %")
    if adapter:
        exported = os.path.join(tempfile.mkdtemp(), "adapter.gguf")
        run([QLORA, "export-adapter", "--model", base, "--adapter", adapter, "--output", exported])
        theirs_a = llama_ppl(bin_dir, base, text, ctx, chunks, lora=exported)
        ours_a, _, _ = qlora_ppl(base, text, ctx, chunks, adapter=adapter)
        print(f"with adapter: llama-perplexity {theirs_a:.4f}, qlora eval {ours_a:.4f}, "
              f"difference {100 * (ours_a - theirs_a) / theirs_a:+.3f} % (base alone {theirs:.4f})")
        merged = os.path.join(os.path.dirname(exported), "merged-f16.gguf")
        run([QLORA, "merge", "--model", base, "--adapter", adapter, "--output", merged, "--dtype", "f16"])
        theirs_m = llama_ppl(bin_dir, merged, text, ctx, chunks)
        print(f"merged f16 GGUF: llama-perplexity {theirs_m:.4f} vs qlora eval with the adapter {ours_a:.4f}: "
              f"difference {100 * (theirs_m - ours_a) / ours_a:+.3f} %")
    bench = run([os.path.join(bin_dir, "llama-bench"), "-m", base, "-t", "2", "-p", "128", "-n", "64", "-r", "3", "-o", "json"])
    for row in json.loads(bench.stdout):
        test = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
        print(f"llama-bench {test}: {row['avg_ts']:.1f} tokens/s (2 threads)")


if __name__ == "__main__":
    main()
