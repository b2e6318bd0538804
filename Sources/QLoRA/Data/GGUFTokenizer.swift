import Foundation
import GGUF

/// A tokenizer from a GGUF file's `tokenizer.*` metadata. A GGUF has no tokenizer.json; it stores the
/// vocabulary, merges or scores, token types and special ids under llama.cpp's keys. We rebuild the
/// tokenizer.json they describe (as transformers' GGUF loader, integrations/gguf/gguf_tokenizer_mapping.py,
/// does) and hand it to the one tokenizer implementation: byte-level BPE (`tokenizer.ggml.model = gpt2`)
/// here, SentencePiece-style BPE (`llama`) in GGUFSentencePieceTokenizer.swift.
extension Tokenizer {
    /// Byte-level BPE splits by `tokenizer.ggml.pre`, as llama.cpp does (llama-vocab.cpp).
    static func ggufPreTokenizer(_ pre: String?, path: String) throws -> [String: Any] {
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        switch pre ?? "default" {
        case "default", "gpt2", "gpt-2":
            return byteLevel
        case "smollm":
            // Digits one at a time, then GPT-2's split: what SmolLM's own tokenizer.json says.
            return ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
        // transformers' GGUF_PRE_TOKENIZER_SPLITS (integrations/gguf/gguf_tokenizer_mapping.py).
        case "llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3", "falcon-h1", "dbrx", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            return splitThenBytes(SplitRegex.llama3Pattern)
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez":
            return splitThenBytes(SplitRegex.qwen2Pattern)
        case "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2":
            return splitThenBytes(SplitRegex.gpt4oPattern)
        case let other:
            throw DataError.unsupportedTokenizerFeature(component: "GGUF tokenizer",
                detail: "\(path): tokenizer.ggml.pre '\(other)' (supported: default, gpt2, smollm, llama-bpe/llama3, qwen2, gpt-4o and their aliases)")
        }
        func splitThenBytes(_ regex: String) -> [String: Any] {
            ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]]
        }
    }

    public convenience init(gguf file: GGUFFile) throws {
        let rebuilt = try Self.huggingFaceObjects(gguf: file)
        try self.init(tokenizerObject: rebuilt.tokenizer, config: rebuilt.config, chatTemplate: rebuilt.chatTemplate)
    }

    /// The tokenizer.json and tokenizer_config.json (with the chat template) a GGUF file's metadata
    /// describes: what `qlora quantize x.gguf` writes beside the model.
    public static func huggingFaceFiles(gguf file: GGUFFile) throws -> (tokenizerJSON: Data, tokenizerConfig: Data, chatTemplate: String?) {
        let rebuilt = try huggingFaceObjects(gguf: file)
        return (TokenizerJSONWriter.data(rebuilt.tokenizer),
                try JSONSerialization.data(withJSONObject: rebuilt.config, options: [.sortedKeys, .prettyPrinted]), rebuilt.chatTemplate)
    }

    /// The tokenizer.json and tokenizer_config.json objects (the vocabulary as a `TokenizerVocabulary`, which
    /// keeps tokens that are canonically equivalent but differently spelled apart).
    static func huggingFaceObjects(gguf file: GGUFFile) throws -> (tokenizer: [String: Any], config: [String: Any], chatTemplate: String?) {
        let metadata = try GGUFTokenizerMetadata(file)
        switch metadata.model {
        case "gpt2": return try byteLevelObjects(metadata)
        case "llama": return try sentencePieceObjects(metadata)
        case let model:
            throw DataError.unsupportedTokenizerFeature(component: "GGUF tokenizer",
                detail: "\(metadata.path): tokenizer.ggml.model '\(model)' (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)")
        }
    }

    private static func byteLevelObjects(_ metadata: GGUFTokenizerMetadata) throws -> (tokenizer: [String: Any], config: [String: Any], chatTemplate: String?) {
        let tokens = metadata.tokens, types = metadata.types
        var vocab = TokenizerVocabulary(count: tokens.count)
        var seen = Set<TokenBytes>()
        for (i, t) in tokens.enumerated() where seen.insert(TokenBytes(t)).inserted { vocab.tokens[i] = t }
        // Control tokens (type 3) are special added tokens, user-defined ones (4) plain added tokens,
        // both matched whole before the split (as llama.cpp and transformers do).
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where i < types.count && (types[i] == 3 || types[i] == 4) {
            added.append(GGUFAddedTokens.entry(id: i, content: t, special: types[i] == 3))
        }
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": try Self.ggufPreTokenizer(metadata.pre, path: metadata.path),
            "post_processor": NSNull(),
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": metadata.merges ?? []],
        ]
        var config = try metadata.specialTokenConfig()
        config["add_bos_token"] = metadata.addBOS ?? false
        config["add_eos_token"] = metadata.addEOS ?? false
        if let template = metadata.chatTemplate { config["chat_template"] = template }
        return (json, config, metadata.chatTemplate)
    }
}

/// The `tokenizer.*` keys of a GGUF file, checked: every problem names the file and the key.
struct GGUFTokenizerMetadata {
    let path: String
    let architecture: String
    let model: String
    let pre: String?
    let tokens: [String]
    /// llama.cpp's token types: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    let types: [Int]
    let scores: [Double]?
    let merges: [String]?
    let specialIDs: [(name: String, id: Int)]
    let addBOS: Bool?
    let addEOS: Bool?
    let chatTemplate: String?

    init(_ file: GGUFFile) throws {
        let path = file.path
        self.path = path
        guard let model = file["tokenizer.ggml.model"]?.string else { throw GGUFError.missingKey(path: path, key: "tokenizer.ggml.model") }
        self.model = model
        architecture = file["general.architecture"]?.string ?? ""
        pre = file["tokenizer.ggml.pre"]?.string
        // Read as the typed arrays the file holds (262k entries for Gemma: no per-element values).
        func strings(_ key: String) throws -> [String]? {
            guard let value = file[key] else { return nil }
            guard let strings = value.typedArray?.strings else { throw GGUFError.invalid(path: path, detail: "\(key) is not an array of strings") }
            return strings
        }
        guard let tokens = try strings("tokenizer.ggml.tokens") else { throw GGUFError.missingKey(path: path, key: "tokenizer.ggml.tokens") }
        self.tokens = tokens
        if let typeValues = file["tokenizer.ggml.token_type"] {
            guard let ints = typeValues.typedArray?.ints else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.token_type is \(typeValues.summary), not an array of integers")
            }
            guard ints.count == tokens.count else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.token_type has \(ints.count) entries for \(tokens.count) tokens")
            }
            if let index = ints.firstIndex(where: { !(0...6).contains($0) }) {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.token_type[\(index)] is \(ints[index]) for token '\(tokens[index])'; "
                    + "llama.cpp's types are 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte")
            }
            types = ints
        } else {
            types = []
        }
        if let scoreValues = file["tokenizer.ggml.scores"]?.typedArray {
            guard scoreValues.count == tokens.count else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.scores has \(scoreValues.count) entries for \(tokens.count) tokens")
            }
            if let floats = scoreValues.floats {
                scores = floats.map(Double.init)
            } else {
                scores = try scoreValues.values.enumerated().map { index, value in
                    guard let score = value.double else {
                        throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.scores[\(index)] is \(value.summary), not a number")
                    }
                    return score
                }
            }
        } else if let value = file["tokenizer.ggml.scores"] {
            throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.scores is \(value.summary), not an array of numbers")
        } else {
            scores = nil
        }
        merges = try strings("tokenizer.ggml.merges")
        var specialIDs: [(name: String, id: Int)] = []
        for (key, name) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
                            ("pad_token", "padding_token_id")] {
            guard let id = file["tokenizer.ggml.\(name)"]?.int else { continue }
            guard id >= 0, id < tokens.count else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.\(name) \(id) is outside the vocabulary (\(tokens.count))")
            }
            specialIDs.append((key, id))
        }
        self.specialIDs = specialIDs
        addBOS = file["tokenizer.ggml.add_bos_token"]?.bool
        addEOS = file["tokenizer.ggml.add_eos_token"]?.bool
        chatTemplate = file["tokenizer.chat_template"]?.string
    }

    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` of tokenizer_config.json: the file's tokens for its ids.
    func specialTokenConfig() throws -> [String: Any] {
        var config: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast"]
        for (key, id) in specialIDs { config[key] = tokens[id] }
        return config
    }

    func specialToken(_ key: String) -> String? { specialIDs.first { $0.name == key }.map { tokens[$0.id] } }
}

/// Added tokens as `tokenizers`' AddedVocabulary assigns them: a token already in the vocabulary (or
/// already added) keeps that id, a new one gets the next id after the vocabulary; adding a token again
/// replaces its flags.
struct GGUFAddedTokens {
    private let vocabulary: [TokenBytes: Int]
    private let vocabularyCount: Int
    private var byID: [Int: (content: String, special: Bool)] = [:]
    private var idByContent: [TokenBytes: Int] = [:]

    init(vocabulary: [TokenBytes: Int]) {
        self.vocabulary = vocabulary
        vocabularyCount = vocabulary.count
    }

    func contains(_ content: String) -> Bool { idByContent[TokenBytes(content)] != nil }

    /// The id of `content` among the added tokens, else in the vocabulary.
    func id(of content: String) -> Int? {
        let key = TokenBytes(content)
        return idByContent[key] ?? vocabulary[key]
    }

    mutating func add(_ content: String, special: Bool) {
        guard !content.isEmpty else { return }
        let key = TokenBytes(content)
        let id: Int
        if let known = idByContent[key] ?? vocabulary[key] {
            id = known
        } else if let maxAdded = byID.keys.max(), maxAdded >= vocabularyCount {
            id = maxAdded + 1
        } else {
            id = vocabularyCount
        }
        byID[id] = (content, special)
        idByContent[key] = id
    }

    /// The tokenizer.json `added_tokens` array, by id.
    var json: [[String: Any]] {
        byID.keys.sorted().map { id in GGUFAddedTokens.entry(id: id, content: byID[id]!.content, special: byID[id]!.special) }
    }

    static func entry(id: Int, content: String, special: Bool) -> [String: Any] {
        ["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special]
    }
}
