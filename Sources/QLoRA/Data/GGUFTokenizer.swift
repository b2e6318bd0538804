import Foundation
import GGUF

/// A tokenizer from a GGUF file's `tokenizer.*` metadata. A GGUF has no tokenizer.json; it stores the
/// vocabulary, merges, token types and special ids under llama.cpp's keys. We rebuild the tokenizer.json
/// they describe (as transformers' GGUF loader does) and hand it to the one tokenizer implementation.
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
        case "llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3", "dbrx":
            return ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": SplitRegex.llama3Pattern], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]]
        case let other:
            throw DataError.unsupportedTokenizerFeature(component: "GGUF tokenizer",
                detail: "\(path): tokenizer.ggml.pre '\(other)' (supported: default, gpt2, smollm, llama-bpe/llama3)")
        }
    }

    public convenience init(gguf file: GGUFFile) throws {
        let files = try Self.huggingFaceFiles(gguf: file)
        try self.init(tokenizerJSON: files.tokenizerJSON, config: files.tokenizerConfig, chatTemplate: files.chatTemplate)
    }

    /// The tokenizer.json and tokenizer_config.json (with the chat template) a GGUF file's metadata
    /// describes: what the tokenizer is built from, and what `qlora quantize x.gguf` writes beside the model.
    public static func huggingFaceFiles(gguf file: GGUFFile) throws -> (tokenizerJSON: Data, tokenizerConfig: Data, chatTemplate: String?) {
        let path = file.path
        guard let model = file["tokenizer.ggml.model"]?.string else { throw GGUFError.missingKey(path: path, key: "tokenizer.ggml.model") }
        guard model == "gpt2" else {
            throw DataError.unsupportedTokenizerFeature(component: "GGUF tokenizer",
                detail: "\(path): tokenizer.ggml.model '\(model)' (only byte-level BPE, 'gpt2', is read from GGUF so far)")
        }
        guard let tokenValues = file["tokenizer.ggml.tokens"]?.array else { throw GGUFError.missingKey(path: path, key: "tokenizer.ggml.tokens") }
        let tokens = try tokenValues.enumerated().map { index, value in
            guard let s = value.string else { throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.tokens[\(index)] is not a string") }
            return s
        }
        let types = file["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 1 } ?? []
        guard types.isEmpty || types.count == tokens.count else {
            throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.token_type has \(types.count) entries for \(tokens.count) tokens")
        }
        let merges = try (file["tokenizer.ggml.merges"]?.array ?? []).enumerated().map { index, value in
            guard let s = value.string else { throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.merges[\(index)] is not a string") }
            return s
        }

        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = i }
        // Control tokens (type 3) are special added tokens, user-defined ones (4) plain added tokens,
        // both matched whole before the split (as llama.cpp and transformers do).
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where i < types.count && (types[i] == 3 || types[i] == 4) {
            added.append(["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": types[i] == 3])
        }
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": try Self.ggufPreTokenizer(file["tokenizer.ggml.pre"]?.string, path: path),
            "post_processor": NSNull(),
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges],
        ]
        var config: [String: Any] = [:]
        for (key, name) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "padding_token_id"),
                            ("unk_token", "unknown_token_id")] {
            guard let id = file["tokenizer.ggml.\(name)"]?.int else { continue }
            guard id >= 0, id < tokens.count else {
                throw GGUFError.invalid(path: path, detail: "tokenizer.ggml.\(name) \(id) is outside the vocabulary (\(tokens.count))")
            }
            config[key] = tokens[id]
        }
        config["add_bos_token"] = file["tokenizer.ggml.add_bos_token"]?.bool ?? false
        config["add_eos_token"] = file["tokenizer.ggml.add_eos_token"]?.bool ?? false
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        let template = file["tokenizer.chat_template"]?.string
        if let template { config["chat_template"] = template }
        return (try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]),
                try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted]), template)
    }
}
