import Foundation
import GGUF

/// The tokenizer class transformers 5 builds for a SentencePiece GGUF (`tokenizer.ggml.model = llama`),
/// chosen by `general.architecture` (GGUF_SENTENCEPIECE_BUILDERS in gguf_tokenizer_mapping.py).
enum GGUFSentencePieceFlavor {
    /// `LlamaTokenizer`: Metaspace adds "▁" before the first word, the decoder strips one leading space;
    /// merges ranked by the scores.
    case llama
    /// `GemmaTokenizer` (gemma, gemma2, gemma3): the normalizer turns spaces into "▁", nothing is
    /// prepended; merges ranked by position in the file (Gemma's scores do not follow its merge order).
    case gemma
    /// `LlamaTokenizer` with the prefix space from a normalizer (phi3): `"  hi"` is "▁▁▁hi", not "▁▁hi".
    case phi3

    init(architecture: String) {
        switch architecture {
        case "gemma", "gemma2", "gemma3": self = .gemma
        case "phi3": self = .phi3
        default: self = .llama
        }
    }

    /// The special tokens the class adds when transformers builds it from the vocabulary (its defaults,
    /// whatever the file says), in transformers' order (bos, eos, unk, pad, mask): a missing one gets a new id.
    var classDefaultSpecialTokens: [String] {
        self == .gemma ? ["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"] : ["<s>", "</s>", "<unk>"]
    }
}

extension Tokenizer {
    /// `tokenizer.ggml.pre` values for which transformers swaps in a byte-level regex split; meaningless
    /// for a SentencePiece vocabulary, so refused rather than guessed.
    private static let byteLevelSplitPres: Set<String> = [
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", "dbrx",
        "smaug-bpe", "tekken", "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "qwen35", "gpt-4o", "llama4",
        "kanana2", "talkie", "minimax-m2"]

    /// The tokenizer.json / tokenizer_config.json transformers builds from a SentencePiece GGUF: BPE with
    /// byte fallback over the stored pieces, merges recovered from scores (or positions), control tokens
    /// special, user-defined tokens added. `tokenizer.ggml.add_space_prefix` is read by transformers but
    /// not used (Llama always prepends "▁" to the first word, Gemma never), so it is not used here either.
    static func sentencePieceObjects(_ metadata: GGUFTokenizerMetadata) throws -> (tokenizer: [String: Any], config: [String: Any], chatTemplate: String?) {
        let flavor = GGUFSentencePieceFlavor(architecture: metadata.architecture)
        try checkSentencePiece(metadata)
        // Gemma stores a token of spaces as spaces; its tokenizer spells them "▁▁" (gemma_tokenizer).
        let tokens = flavor == .gemma
            ? metadata.tokens.map { isSpaceRun($0) ? String(repeating: "\u{2581}", count: $0.unicodeScalars.count) : $0 }
            : metadata.tokens
        // {token: index} in Python: a repeated token keeps its last index, the earlier id has no token.
        var vocabulary: [TokenBytes: Int] = [:]
        vocabulary.reserveCapacity(tokens.count)
        for (index, token) in tokens.enumerated() { vocabulary[TokenBytes(token)] = index }
        var vocab = TokenizerVocabulary(count: tokens.count)
        for (index, token) in tokens.enumerated() where vocabulary[TokenBytes(token)] == index { vocab.tokens[index] = token }

        let merges: [Any]
        if let stored = metadata.merges {
            merges = stored
        } else if flavor == .gemma {
            merges = SentencePieceMerges.recover(tokens: tokens, vocabulary: vocabulary, rankKeys: (0..<tokens.count).map { -Double($0) })
        } else if let scores = metadata.scores {
            merges = SentencePieceMerges.recover(tokens: tokens, vocabulary: vocabulary, rankKeys: scores)
        } else {
            throw GGUFError.invalid(path: metadata.path, detail: "the SentencePiece vocabulary has neither tokenizer.ggml.merges nor "
                + "tokenizer.ggml.scores, so its merges cannot be recovered; re-convert the model with llama.cpp")
        }

        let added = sentencePieceAddedTokens(metadata, flavor: flavor, vocabulary: vocabulary)
        let bos = metadata.specialToken("bos_token"), eos = metadata.specialToken("eos_token")
        let addBOS = (metadata.addBOS ?? true) && bos != nil  // llama.cpp's default for SentencePiece vocabularies
        let addEOS = (metadata.addEOS ?? false) && eos != nil
        var config = try metadata.specialTokenConfig()
        config["add_bos_token"] = addBOS
        config["add_eos_token"] = addEOS
        if let template = metadata.chatTemplate { config["chat_template"] = template }

        let pipeline = sentencePiecePipeline(flavor)
        // GemmaTokenizer names "<unk>" whatever the file says; LlamaTokenizer gives its BPE no unk token.
        let unknown: Any = flavor == .gemma && vocabulary[TokenBytes("<unk>")] != nil ? "<unk>" : NSNull()
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added.json,
            "normalizer": pipeline.normalizer,
            "pre_tokenizer": pipeline.preTokenizer,
            // bos and eos are among the added tokens (the named special tokens always are).
            "post_processor": templateProcessing(bos: addBOS ? bos.map { ($0, added.id(of: $0)!) } : nil,
                                                 eos: addEOS ? eos.map { ($0, added.id(of: $0)!) } : nil),
            "decoder": pipeline.decoder,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": unknown, "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                      "vocab": vocab, "merges": merges],
        ]
        return (json, config, metadata.chatTemplate)
    }

    /// What transformers would accept but build wrong from: a byte-level split, a byte token spelled so
    /// that byte fallback never finds it.
    private static func checkSentencePiece(_ metadata: GGUFTokenizerMetadata) throws {
        let path = metadata.path
        if let pre = metadata.pre, byteLevelSplitPres.contains(pre) {
            throw DataError.unsupportedTokenizerFeature(component: "GGUF tokenizer",
                detail: "\(path): tokenizer.ggml.pre '\(pre)' (a byte-level split) with a SentencePiece ('llama') vocabulary")
        }
        // Byte fallback looks bytes up as "<0x%02X>".
        for (index, type) in metadata.types.enumerated() where type == 6 {
            let token = metadata.tokens[index]
            guard let byte = TokenDecoder.byteToken(token), token == String(format: "<0x%02X>", byte) else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.tokens[\(index)] '\(token)' has token type 6 (byte) but is not "
                    + "spelled <0xNN> with two upper-case hex digits; the file is malformed, re-convert it with llama.cpp")
            }
        }
    }

    /// The added tokens in transformers' order: the class's defaults, the control tokens (special), the
    /// user-defined ones the vocabulary has (plain; Gemma's "  " is not there once respelled), then the
    /// file's named special tokens (and Gemma's `<mask>`) not added yet.
    private static func sentencePieceAddedTokens(_ metadata: GGUFTokenizerMetadata, flavor: GGUFSentencePieceFlavor,
                                                 vocabulary: [TokenBytes: Int]) -> GGUFAddedTokens {
        var added = GGUFAddedTokens(vocabulary: vocabulary)
        for token in flavor.classDefaultSpecialTokens { added.add(token, special: true) }
        let types = metadata.types
        for (index, token) in metadata.tokens.enumerated() where index < types.count && types[index] == 3 {
            added.add(token, special: true)
        }
        for (index, token) in metadata.tokens.enumerated() where index < types.count && types[index] == 4 {
            if vocabulary[TokenBytes(token)] != nil || added.contains(token) { added.add(token, special: false) }
        }
        var named = ["bos_token", "eos_token", "unk_token", "pad_token"].compactMap { metadata.specialToken($0) }
        if flavor == .gemma { named.append("<mask>") }  // GemmaTokenizer's mask_token
        for token in named where !added.contains(token) { added.add(token, special: true) }
        return added
    }

    /// Normalizer, pre-tokenizer and decoder of each tokenizer class.
    private static func sentencePiecePipeline(_ flavor: GGUFSentencePieceFlavor) -> (normalizer: Any, preTokenizer: Any, decoder: [String: Any]) {
        let metaspace = "\u{2581}"
        let replaceSpaces: [String: Any] = ["type": "Replace", "pattern": ["String": " "], "content": metaspace]
        var decoders: [[String: Any]] = [["type": "Replace", "pattern": ["String": metaspace], "content": " "],
                                         ["type": "ByteFallback"], ["type": "Fuse"]]
        let stripPrefixSpace: [String: Any] = ["type": "Strip", "content": " ", "start": 1, "stop": 0]
        switch flavor {
        case .llama:
            decoders.append(stripPrefixSpace)
            return (NSNull(), ["type": "Metaspace", "replacement": metaspace, "prepend_scheme": "first", "split": false],
                    ["type": "Sequence", "decoders": decoders])
        case .phi3:
            decoders.append(stripPrefixSpace)
            return (["type": "Sequence", "normalizers": [["type": "Prepend", "prepend": metaspace], replaceSpaces]], NSNull(),
                    ["type": "Sequence", "decoders": decoders])
        case .gemma:
            return (replaceSpaces, ["type": "Split", "pattern": ["String": " "], "behavior": "MergedWithPrevious", "invert": false],
                    ["type": "Sequence", "decoders": decoders])
        }
    }

    /// transformers' `update_post_processor`: `[bos] $A [eos]`, and `[bos] $A [eos] [bos] $B [eos]` for pairs.
    static func templateProcessing(bos: (String, Int)?, eos: (String, Int)?) -> [String: Any] {
        func special(_ token: (String, Int)?, _ typeID: Int) -> [[String: Any]] {
            token.map { [["SpecialToken": ["id": $0.0, "type_id": typeID]]] } ?? []
        }
        let single = special(bos, 0) + [["Sequence": ["id": "A", "type_id": 0]]] + special(eos, 0)
        let pair = single + special(bos, 1) + [["Sequence": ["id": "B", "type_id": 1]]] + special(eos, 1)
        var specials: [String: Any] = [:]
        for token in [bos, eos].compactMap({ $0 }) { specials[token.0] = ["id": token.0, "ids": [token.1], "tokens": [token.0]] }
        return ["type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials]
    }
}

/// Gemma's test for a token to respell, `" " in t and not t.strip()`: a space, and only Python
/// whitespace (`str.isspace`: Unicode White_Space plus the separators U+001C...U+001F).
private func isSpaceRun(_ token: String) -> Bool {
    let scalars = token.unicodeScalars
    return scalars.contains(" ") && scalars.allSatisfy { $0.properties.isWhitespace || (0x1C...0x1F).contains($0.value) }
}
