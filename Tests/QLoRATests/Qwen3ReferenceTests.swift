import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// Qwen3's config switches and bad input (per-head q/k RMSNorm before RoPE, explicit head_dim); what it
/// computes is checked against transformers in FamilyReferenceTests.
@Suite struct Qwen3ReferenceTests {
    static let family = FamilyReferenceTests.Family(name: "qwen3")
    static let tolerance = FamilyReferenceTests.Family.tolerance
    static let modelDir = family.url("model")

    static func reference() throws -> SafeTensorsFile { try family.reference() }
    static func batch(_ reference: SafeTensorsFile) throws -> (ids: [Int32], labels: [Int32]) { try FamilyReferenceTests.Family.batch(reference) }
    static func relativeError(_ a: [Float], _ b: [Float]) -> Double { FamilyReferenceTests.Family.relativeError(a, b) }

    @Test func configSwitchesOnQKNormAndExplicitHeadDim() throws {
        let config = try LlamaConfig.load(directory: Self.modelDir)
        #expect(config.modelType == "qwen3" && config.qkNorm && !config.qkvBiasOnly && !config.attentionBias)
        #expect(config.headDim == 32 && config.queryDim == 128 && config.keyValueDim == 64, "head_dim is not hidden / heads (16)")
        #expect(config.tieWordEmbeddings && config.rmsNormEps == 1e-6 && config.ropeTheta == 1_000_000)
        // Every weight of the checkpoint: q_norm and k_norm (D each) included.
        let file = try SafeTensorsFile(path: Self.modelDir.appendingPathComponent("model.safetensors").path)
        let stored = try file.names.reduce(0) { $0 + (try file.info($1)).shape.reduce(1, *) }
        #expect(config.totalParameterCount == stored)
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        #expect(model.layers.allSatisfy { $0.qNorm?.count == 32 && $0.kNorm?.count == 32 })
        #expect(Array(model.layers[1].kNorm!) == (try file.floats("model.layers.1.self_attn.k_norm.weight")))
    }

    // MARK: - Bad input

    /// A copy of the fixture's config.json with `edit` applied, in a fresh directory (with the weights).
    static func editedModel(_ edit: (inout [String: Any]) -> Void, dropping tensor: String? = nil) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qwen3-edited-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: modelDir.appendingPathComponent("config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(path: modelDir.appendingPathComponent("model.safetensors").path)
        let tensors = try file.names.filter { $0 != tensor }.map { name in
            let info = try file.info(name)
            return (TensorEntry(name: name, dtype: info.dtype, shape: info.shape), Data(try file.rawBytes(name)))
        }
        try SafeTensorsWriter.write(path: dir.appendingPathComponent("model.safetensors").path, tensors: tensors)
        return dir
    }

    static func message(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "no error" } catch { return "\(error)" }
    }

    @Test func badConfigsAndCheckpointsNameTheKeyOrTensor() throws {
        func load(_ dir: URL) throws -> LlamaModel { try LlamaLoader.load(directory: dir, format: .dense32, precision: .fp32) }
        let cases: [(edit: (inout [String: Any]) -> Void, drop: String?, mentions: [String])] = [
            ({ $0["model_type"] = "qwen3_moe" }, nil, ["model_type 'qwen3_moe'", "qwen3"]),
            ({ $0["use_sliding_window"] = true }, nil, ["use_sliding_window"]),
            ({ $0["attention_bias"] = "no" }, nil, ["'attention_bias'"]),
            ({ $0["tie_word_embeddings"] = 1.5 }, nil, ["'tie_word_embeddings'"]),
            ({ _ in }, "model.layers.0.self_attn.q_norm.weight", ["'model.layers.0.self_attn.q_norm.weight' is missing"]),
            ({ _ in }, "model.layers.1.self_attn.k_norm.weight", ["'model.layers.1.self_attn.k_norm.weight' is missing"]),
            // The same weights declared as Llama: the norms it would skip are refused, by name.
            ({ $0["model_type"] = "llama" }, nil, ["self_attn.", "_norm.weight", "qwen3"]),
        ]
        for c in cases {
            let dir = try Self.editedModel(c.edit, dropping: c.drop)
            defer { try? FileManager.default.removeItem(at: dir) }
            let text = Self.message { try load(dir) }
            for word in c.mentions { #expect(text.contains(word), "\(text)") }
        }
        // Qwen3Config's default head_dim is 128, not hidden / heads.
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.modelDir.appendingPathComponent("config.json"))) as! [String: Any]
        json["head_dim"] = nil
        json["hidden_size"] = 256
        let config = try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json")
        #expect(config.headDim == 128)
        json["model_type"] = "qwen2"
        #expect(try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json").headDim == 64)
    }
}
