#!/usr/bin/env python3
"""Makes Fixtures/tokenizer/qwen2-split.json and gpt4o-split.json: Qwen2/Qwen3's and GPT-4o's (o200k:
Phi-4-mini, Llama 4) pre-tokenizers and the pieces and ids HF `tokenizers` gives with them.

Not needed by the project or CI (needs the `tokenizers` package):

    python scripts/make-qwen2-split-fixture.py

Qwen's tokenizer.json splits with the Llama 3 regex except that numbers go one digit at a time (`\\p{N}`
for `\\p{N}{1,3}`), then byte-level without a regex; GPT-4o's regex splits words by letter case classes
(marks in both). Neither vocabulary is reachable offline, so each pre-tokenizer is put on SmolLM2's
byte-level BPE (Fixtures/tokenizer/tokenizer.json): the split is what is checked, and the ids show it.
The cases are the strings of tokenizer_cases.json plus number-, case- and mark-heavy ones.
"""
import json
import os

from tokenizers import Tokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DIR = os.path.join(ROOT, "Fixtures", "tokenizer")
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def pre(regex):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
EXTRA = ["12345678", "Pi is 3.14159, e is 2.71828.", "year 2026-12-07 at 23:59:59", "١٢٣ and ５６７ and ²³",
         "x=100000;y=-42", "IT'S 10 O'CLOCK", "The  2\n\n 34  \r\n5", "v1.2.3-rc4", "0x1F 0b1011 1e-9",
         "CamelCaseWord HTTPServer iPhone XMLHttpRequest", "DON'T you'RE He'S", "naïve café Ǆemal ǅungla",
         "e\u0301te\u0301 \u0301x a\u20ddb", "path/to//file\n/etc/\r\n", "  ' 's 'S", "Ωmega ΣΊΣΥΦΟΣ ǈ", "हिन्दी ভাষা",
         "日本語テキスト カタカナ", "ﬁne ＡＢＣｄｅｆ", "x\u0301\u0302Y\u0301y", "\u02b0ello \u02b0", "a\u0300'Ll"]


def main():
    spec = json.load(open(os.path.join(DIR, "tokenizer.json")))
    texts = [c["text"] for c in json.load(open(os.path.join(DIR, "tokenizer_cases.json")))["strings"]] + EXTRA
    for name, regex in (("qwen2-split.json", QWEN2_SPLIT), ("gpt4o-split.json", GPT4O_SPLIT)):
        spec["pre_tokenizer"] = pre(regex)
        tok = Tokenizer.from_str(json.dumps(spec))
        cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids,
                  "pieces": [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(t)]} for t in texts]
        json.dump({"pre_tokenizer": pre(regex), "tokenizers": __import__("tokenizers").__version__, "cases": cases},
                  open(os.path.join(DIR, name), "w"), ensure_ascii=False, indent=1)

if __name__ == "__main__":
    main()
