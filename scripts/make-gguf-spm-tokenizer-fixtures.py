#!/usr/bin/env python3
"""Makes Fixtures/gguf-spm/: three tiny SentencePiece-style GGUF tokenizers (`tokenizer.ggml.model = llama`,
no tensors) and what transformers builds from them; with --real, the reference of the opt-in test
Tests/QLoRATests/GGUFSentencePieceRealTests.swift for a real GGUF (Gemma 3 270M).

Not needed by the project or CI (needs sentencepiece, gguf, transformers 5.23):

    python scripts/make-gguf-spm-tokenizer-fixtures.py
    python scripts/make-gguf-spm-tokenizer-fixtures.py --real gemma-3-270m-q4_k_m.gguf OUT.json
      (also writes OUT.transformers.json: transformers' merges and added tokens for that file)

A SentencePiece BPE model (byte fallback) is trained on the strings of Fixtures/tokenizer/tokenizer_cases.json
plus a few paragraphs written here, and its pieces, scores and types are stored as llama.cpp stores them:

- spm-llama.gguf (architecture llama): transformers builds `LlamaTokenizer` (Metaspace, merges recovered
  from the scores). The normal pieces are shuffled in the file and the scores rounded to ties, so only
  the scores (with transformers' tie order) give the right merges. Control tokens [INST] [/INST],
  user-defined <think> </think>, one unused (type 5) piece; no padding id, add_bos_token left out (the
  loader's default, true), add_eos_token true, add_space_prefix true, a Llama-2 chat template.
- spm-phi3.gguf: the same vocabulary as architecture phi3 (the prefix space from a normalizer), add_bos_token false.
- spm-gemma3.gguf (architecture gemma3): transformers builds `GemmaTokenizer` (spaces replaced by the
  normalizer, merges recovered from the positions). The pieces keep their order and the scores are
  shuffled, so only the positions give the right merges. Gemma's specials (<pad> <eos> <bos> <unk> <mask>,
  <start_of_turn> <end_of_turn> control, [multimodal] user-defined), "\\n" runs and space runs ("  ", stored as
  spaces as in the real file) user-defined, add_space_prefix false, Gemma 3's chat template.

split-behaviors.json: `tokenizers`' Split on "\u2581" and on "e" with each of its five behaviors over the gemma3 tokenizer.

For each: <name>.cases.json (ids without / with special tokens, tokens, both decodes for every string; chat
renders for Gemma) and <name>.transformers.json (the tokenizer.json transformers built, to compare merges,
added tokens and pipeline).
"""
import io
import json
import os
import random
import sys

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
import transformers
from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Fixtures", "gguf-spm")

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun while the fox runs into the woods.",
    "Tokenizers split text into pieces; a piece that is not in the vocabulary falls back to its bytes.",
    "Training a small model on a laptop takes patience: the loss goes down slowly, then all at once.",
    "She said: \"we will meet at the station at seven\", and then she left the room without another word.",
    "In the beginning there was only one line of code, and it did not compile. Then there were two lines.",
    "Numbers such as 12, 345 and 6789 appear in tables; dates like 2024-05-17 appear in logs and reports.",
    "def main():\n    print(\"hello\")\n    return 0\n\nif __name__ == \"__main__\":\n    main()\n",
    "Der schnelle braune Fuchs springt über den faulen Hund. Le renard brun saute par-dessus le chien.",
]

SPM_STRINGS = [
    "Hello", " Hello", "  two leading spaces", "trailing spaces  ", " ", "   ", "a  b   c    d",
    "\n", "line\n\nbreaks\n", "\ttab\tseparated\t", " \n mixed \t whitespace \r\n end", "Ǆ ŉ ỹ ꙮ ǅ",
    "emoji 🦙🔥 and 🇯🇵", "漢字とかな、한국어", "▁already▁metaspace ▁", "<0x41> is text, not a byte",
    "[INST] question [/INST] answer", "x[INST]y", "<think>reasoning</think>done",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "<bos>text<eos>", "<s>text</s>", "<unk>",
    "[multimodal]", "<mask> token", "a\u00a0b\u2003c", "end.", "", "The dog runs.\n\n\n\nThe fox sleeps.",
]

LLAMA2_TEMPLATE = open(os.path.join(ROOT, "Fixtures/tokenizer/llama-templates/llama2.jinja")).read()

# Gemma 3's chat template (google/gemma-3-270m-it, tokenizer_config.json).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

CHATS = [
    [{"role": "user", "content": "What is a llama?"},
     {"role": "assistant", "content": "A llama is a domesticated South American animal."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": " Hi there \n"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
]


def case_strings():
    cases = json.load(open(os.path.join(ROOT, "Fixtures/tokenizer/tokenizer_cases.json")))["strings"]
    return [c["text"] for c in cases] + SPM_STRINGS


def train(control, user_defined, ids):
    corpus = PARAGRAPHS * 3 + [c for c in case_strings() if c.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe", vocab_size=620,
        byte_fallback=True, character_coverage=0.98, control_symbols=control, user_defined_symbols=user_defined,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True, num_threads=1,
        max_sentence_length=100000, minloglevel=2, **ids)
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return [(p.piece, p.score, int(p.type)) for p in proto.pieces]


def write_gguf(path, arch, pieces, keys):
    w = gguf.GGUFWriter(path, arch)
    # The few model keys transformers' config reader needs to accept the file.
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(4)
    w.add_value_length(4)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p[0] for p in pieces])
    w.add_token_scores([p[1] for p in pieces])
    w.add_token_types([p[2] for p in pieces])
    for key, value in keys.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(path, chats, template=None):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    if template is not None:
        tok.chat_template = template
    rows = []
    for text in case_strings():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        rows.append({"text": text, "ids": ids, "ids_with_special_tokens": tok(text)["input_ids"],
                     "tokens": tok.convert_ids_to_tokens(ids), "decoded": tok.decode(ids),
                     "decoded_skip_special_tokens": tok.decode(ids, skip_special_tokens=True)})
    chat_rows = []
    for messages in chats:
        for prompt in (False, True):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            chat_rows.append({"messages": messages, "add_generation_prompt": prompt, "text": text,
                              "ids": tok(text, add_special_tokens=False)["input_ids"]})
    return tok, {
        "gguf": os.path.basename(path), "transformers": transformers.__version__, "class": type(tok).__name__,
        "special_tokens": {"bos": tok.bos_token, "eos": tok.eos_token, "unk": tok.unk_token, "pad": tok.pad_token},
        "add_bos_token": tok.add_bos_token, "add_eos_token": tok.add_eos_token, "vocab_size_with_added": len(tok),
        "strings": rows, "chat": chat_rows}


def save(name, path, chats):
    tok, cases = reference(path, chats)
    json.dump(cases, open(os.path.join(OUT, name + ".cases.json"), "w"), ensure_ascii=False, indent=0)
    built = json.loads(tok.backend_tokenizer.to_str())
    # ASCII-escaped: Foundation's JSON reader drops a raw U+FEFF at the start of a string.
    json.dump(built, open(os.path.join(OUT, name + ".transformers.json"), "w"), ensure_ascii=True)
    print(name, type(tok).__name__, len(built["model"]["vocab"]), "tokens", len(built["model"]["merges"]), "merges",
          len(built["added_tokens"]), "added")


def split_behaviors():
    """split-behaviors.json: `tokenizers`' Split on a plain string ("\u2581", and "e") with each behavior over
    the gemma3 tokenizer (whose own Split on " " never sees a space after its normalizer): the pieces' edges
    change the merges, e.g. "\u2581dog" from MergedWithNext but "\u2581" + "dog" from Isolated."""
    from tokenizers import Tokenizer, pre_tokenizers
    strings = [t for t in case_strings() if " " in t]
    out = {"strings": strings, "behaviors": {}}
    for behavior in ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]:
        out["behaviors"][behavior] = []
        for pattern in ["\u2581", "e"]:
            tok = Tokenizer.from_str(open(os.path.join(OUT, "spm-gemma3.transformers.json")).read())
            tok.pre_tokenizer = pre_tokenizers.Split(pattern, behavior=behavior)
            tok.post_processor = None
            out["behaviors"][behavior].append({"pre_tokenizer": json.loads(tok.to_str())["pre_tokenizer"],
                                               "ids": [tok.encode(t, add_special_tokens=False).ids for t in strings]})
    json.dump(out, open(os.path.join(OUT, "split-behaviors.json"), "w"), ensure_ascii=False, separators=(",", ":"))


def make_fixtures():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20251207)

    # Llama: <unk> <s> </s>, control [INST] [/INST], user-defined <think> </think>.
    pieces = train(["[INST]", "[/INST]"], ["<think>", "</think>"], dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1))
    pieces.append(("<unused0>", 0.0, 5))
    head = [p for p in pieces if p[2] != 1]
    normal = [(t, float(int(s) // 3), ty) for t, s, ty in pieces if ty == 1]
    rng.shuffle(normal)
    ordered = head[:5] + normal[: len(normal) // 2] + head[5:] + normal[len(normal) // 2:]
    path = os.path.join(OUT, "spm-llama.gguf")
    write_gguf(path, "llama", ordered, {
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_eos_token": True, "tokenizer.ggml.add_space_prefix": True,
        "tokenizer.chat_template": LLAMA2_TEMPLATE})
    save("spm-llama", path, [])
    # The same vocabulary as phi3: the prefix space comes from a normalizer instead of Metaspace.
    path = os.path.join(OUT, "spm-phi3.gguf")
    write_gguf(path, "phi3", ordered, {
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": False})
    save("spm-phi3", path, [])

    # Gemma 3: <pad> <eos> <bos> <unk>, then <mask> and the turn markers (control), [multimodal] (user-defined).
    pieces = train(["<mask>", "<start_of_turn>", "<end_of_turn>"], ["[multimodal]"],
                   dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3))
    specials = [p for p in pieces if p[2] in (2, 3, 4)]
    rest = [p for p in pieces if p[2] not in (2, 3, 4)]
    # Runs of "\u2581" are stored as spaces and marked user-defined, as in the real Gemma files.
    rest = [(t, s, ty) for t, s, ty in rest if not (len(t) > 1 and set(t) == {"\u2581"})]
    runs = [("\n" * k, 0.0, 4) for k in range(1, 5)] + [(" " * k, 0.0, 4) for k in range(2, 6)]
    rest = [p for p in rest if p[0] not in {t for t, _, _ in runs}]
    scores = [p[1] for p in rest]
    rng.shuffle(scores)
    rest = [(t, s, ty) for (t, _, ty), s in zip(rest, scores)]
    ordered = specials + runs + rest
    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in (p[0] for p in ordered)]
    assert len(set(tokens)) == len(tokens), "respelled space runs collide with trained pieces"
    path = os.path.join(OUT, "spm-gemma3.gguf")
    write_gguf(path, "gemma3", ordered, {
        "tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": False,
        "tokenizer.chat_template": GEMMA3_TEMPLATE})
    save("spm-gemma3", path, CHATS)
    split_behaviors()


def make_real(path, out):
    # The real Gemma 3 270M file has no tokenizer.chat_template: render with Gemma 3's own, given to both sides.
    template = None if "tokenizer.chat_template" in gguf.GGUFReader(path).fields else GEMMA3_TEMPLATE
    tok, cases = reference(path, CHATS, template)
    cases["chat_template"] = template
    json.dump(cases, open(out, "w"), ensure_ascii=False, indent=0)
    built = json.loads(tok.backend_tokenizer.to_str())
    json.dump({"merges": built["model"]["merges"], "added_tokens": built["added_tokens"]},
              open(os.path.splitext(out)[0] + ".transformers.json", "w"), ensure_ascii=True)
    print(len(cases["strings"]), "strings,", len(cases["chat"]), "chat renders ->", out)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--real":
        make_real(sys.argv[2], sys.argv[3])
    else:
        make_fixtures()
