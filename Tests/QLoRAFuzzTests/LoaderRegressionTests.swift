import Foundation
import GGUF
import QLoRA
import SafeTensors
import Testing

/// The minimal inputs behind each crash or hang the fuzzer found (docs/reliability.md), each now a
/// clear error that names the file and the field.
@Suite struct LoaderRegressionTests {
    /// All of one process' inputs live under one directory, removed when the process starts next time.
    static let root: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-regress")
        try? FileManager.default.removeItem(at: url)
        return url
    }()

    static func directory() throws -> URL {
        let url = root.appendingPathComponent("\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return String(describing: error) }
    }

    static let llamaConfig: [String: Any] = ["model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                                             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2]

    static func configMessage(_ changes: [String: Any], base: [String: Any] = llamaConfig) throws -> String {
        let url = try directory().appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: base.merging(changes) { $1 }).write(to: url)
        return message { _ = try LlamaConfig.load(directory: url) }
    }

    /// Was: a 22 GB allocation (the per-layer attention list) before any check; a hang without a memory limit.
    @Test func absurdLayerCountIsRefusedBeforeAllocating() throws {
        let m = try Self.configMessage(["num_hidden_layers": 22_147_483_647])
        #expect(m.contains("config.json") && m.contains("num_hidden_layers (22147483647)"))
        let gemma = try Self.configMessage(["model_type": "gemma3_text", "num_hidden_layers": 2_147_483_647, "head_dim": 4])
        #expect(gemma.contains("config.json") && gemma.contains("num_hidden_layers"))
        #expect(try Self.configMessage(["num_hidden_layers": -3]).contains("sizes must be positive"))
    }

    /// Was: division by zero (head_dim = hidden / heads) and a remainder by zero kv heads, evaluated
    /// before the check that refuses them.
    @Test func zeroHeadCountsAreRefused() throws {
        #expect(try Self.configMessage(["num_attention_heads": 0]).contains("head counts must be positive"))
        #expect(try Self.configMessage(["num_key_value_heads": 0]).contains("head counts must be positive"))
    }

    /// Was: an overflowing heads x head_dim product (negative heads passed the upper bound).
    @Test func overflowingHeadProductIsRefused() throws {
        let m = try Self.configMessage(["num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 4_611_686_018_427_387_904])
        #expect(m.contains("config.json") && m.contains("head_dim"))
        #expect(try Self.configMessage(["hidden_size": 1e308]).contains("config.json"))
    }

    /// Was: index out of range (a negative id) or a 32 GB table (id 2^31 - 1) building the id -> token table.
    @Test func tokenizerVocabularyIdsAreChecked() throws {
        for bad: Any in [-1, 2_147_483_647, 4_294_967_296, 1.5] {
            let dir = try Self.directory()
            let json: [String: Any] = ["model": ["type": "BPE", "vocab": ["a": 0, "b": bad, "ab": 2], "merges": ["a b"]]]
            try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("tokenizer.json"))
            let m = Self.message { _ = try Tokenizer(directory: dir) }
            #expect(m.contains("tokenizer.json") && m.contains("vocab entry \"b\""), "\(bad): \(m)")
        }
    }

    /// Was: index out of range reading the vocabulary size from a one-dimensional token_embd.weight.
    @Test func oneDimensionalEmbeddingInGGUFIsRefused() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        for (key, value) in [("embedding_length", 4), ("attention.head_count", 2), ("feed_forward_length", 8), ("block_count", 1)] {
            w.set("llama." + key, .uint32(UInt32(value)))
        }
        w.tensors.append(.init(name: "token_embd.weight", type: .f32, dimensions: [4], bytes: [UInt8](repeating: 0, count: 16)))
        let path = try Self.directory().appendingPathComponent("model.gguf").path
        try w.write(to: path)
        let m = Self.message { _ = try GGUFModelLoader.config(try GGUFFile(path: path)) }
        #expect(m.contains("model.gguf") && m.contains("token_embd.weight"))
    }

    /// Was: an overflowing shape product in a bitsandbytes quant state (arithmetic trap in debug, a
    /// wrong size check under -Ounchecked).
    @Test func quantStateShapeThatOverflowsIsRefused() throws {
        let state = #"{"quant_type": "nf4", "blocksize": 64, "shape": [4611686018427387904, 4], "dtype": "float32"}"#
        let names = ["w.weight", "w.weight.quant_state.bitsandbytes__nf4"]
        let tensors: [(TensorEntry, Data)] = [
            (TensorEntry(name: names[0], dtype: .U8, shape: [8, 1]), Data(count: 8)),
            (TensorEntry(name: names[1], dtype: .U8, shape: [state.utf8.count]), Data(state.utf8)),
        ]
        let path = try Self.directory().appendingPathComponent("model.safetensors").path
        try SafeTensorsWriter.write(path: path, tensors: tensors)
        let file = try SafeTensorsFile(path: path)
        let m = Self.message {
            _ = try BitsAndBytesFormat.load(weightName: "w.weight", path: path, names: Set(file.names)) { (try file.info($0), try file.rawBytes($0)) }
        }
        #expect(m.contains("quant_state") && m.contains("too large"), "\(m)")
    }

    /// Was: a 4-bit tensor's error without the file ("tensor '...absmax': expected U8 ...").
    @Test func quantErrorsFromAModelNameTheFile() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tiny-llama/untied-nf4")
        let dir = try Self.directory()
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        // The same checkpoint with one absmax tensor's dtype changed in the header (same byte count).
        var bytes = [UInt8](try Data(contentsOf: fixtures.appendingPathComponent("model.safetensors")))
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        var header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        let key = "\"model.layers.0.self_attn.k_proj.weight.absmax\":{\"dtype\":\"U8\""
        #expect(header.contains(key))
        header = header.replacingOccurrences(of: key, with: key.replacingOccurrences(of: "\"U8\"", with: "\"I8\""))
        bytes.replaceSubrange(8..<(8 + headerLength), with: Array(header.utf8))
        try Data(bytes).write(to: dir.appendingPathComponent("model.safetensors"))
        let m = Self.message { _ = try LlamaLoader.load(directory: dir, format: .stored, precision: .fp32) }
        #expect(m.contains("model.safetensors") && m.contains("k_proj.weight.absmax"), "\(m)")
    }
}

extension LoaderRegressionTests {
    static func adapterMessage(_ edit: (String) -> String) throws -> String {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures")
        let dir = try directory()
        let source = fixtures.appendingPathComponent("tiny-llama-cases/untied_fp32/adapter_step1")
        try FileManager.default.copyItem(at: source.appendingPathComponent("adapter_model.safetensors"), to: dir.appendingPathComponent("adapter_model.safetensors"))
        let config = try String(contentsOf: source.appendingPathComponent("adapter_config.json"), encoding: .utf8)
        try edit(config).write(to: dir.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        let model = try LlamaConfig.load(directory: fixtures.appendingPathComponent("tiny-llama/untied-fp32"))
        return message { _ = try PEFTAdapterIO.load(directory: dir, modelConfig: model) }
    }

    /// Was: r = 2^31 - 1 sized the adapter matrices (a terabyte allocation) before the weights were read.
    @Test func absurdAdapterRankIsRefused() throws {
        let m = try Self.adapterMessage { $0.replacingOccurrences(of: #""r": 4"#, with: #""r": 2147483647"#) }
        #expect(m.contains("adapter_config.json") && m.contains("r must be at most"), "\(m)")
    }
}

extension LoaderRegressionTests {
    /// Was: "tokenizer decoder not supported: regex pattern ..." and, for a GGUF's tokenizer metadata,
    /// "tokenizer.json is not a valid tokenizer file" — neither naming the file read.
    @Test func tokenizerErrorsNameTheFileRead() throws {
        let dir = try Self.directory()
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "Replace", "pattern": {"Regex": "?"}, "content": " "}}"#
        try json.write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        let m = Self.message { _ = try Tokenizer(directory: dir) }
        #expect(m.contains(dir.appendingPathComponent("tokenizer.json").path) && m.contains("regex pattern"), "\(m)")

        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.tokens", .array(elementType: GGUFValue.TypeID.string.rawValue, [.string("a"), .string("b")]))
        w.set("tokenizer.ggml.merges", .array(elementType: GGUFValue.TypeID.string.rawValue, [.string("a c")]))
        w.tensors.append(.init(name: "x", type: .f32, dimensions: [1], bytes: [0, 0, 0, 0]))
        let path = dir.appendingPathComponent("model.gguf")
        try w.write(to: path.path)
        let g = Self.message { _ = try Tokenizer(directory: path) }
        #expect(g.contains(path.path), "\(g)")
    }
}

extension LoaderRegressionTests {
    /// Was: "LoRA configuration: layers_to_transform has 9223372036854775807, ..." without the file.
    @Test func adapterLayersBeyondTheModelNameTheFile() throws {
        let m = try Self.adapterMessage { $0.replacingOccurrences(of: #""layers_to_transform": null"#, with: #""layers_to_transform": [9223372036854775807]"#) }
        #expect(m.contains("adapter_config.json") && m.contains("layers_to_transform"), "\(m)")
    }
}

extension LoaderRegressionTests {
    /// Was (1M run, seed 2): "cannot locate assistant message 0 in the rendered conversation ..." with
    /// neither the data file nor the record.
    @Test func datasetTemplateErrorsNameTheFileAndRecord() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures")
        let dir = try Self.directory()
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer-sp/legacy/tokenizer.json"), to: dir.appendingPathComponent("tokenizer.json"))
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer/chat_template.jinja"), to: dir.appendingPathComponent("chat_template.jinja"))
        let data = dir.appendingPathComponent("data.jsonl")
        try """
        {"text": "Hello world"}
        {"messages": [{"role": "assistant", "content": "hello"}]}
        """.write(to: data, atomically: true, encoding: .utf8)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: try Tokenizer(directory: dir).vocabSize, purpose: "testing")
        let m = Self.message { _ = try dataset.tokenize(try TrainingExample.load(jsonl: data), file: data) }
        #expect(m.contains(data.path + ": example 2") && m.contains("assistant message 0"), "\(m)")
    }
}
