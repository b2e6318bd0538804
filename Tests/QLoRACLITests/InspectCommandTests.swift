import Foundation
import Testing
import SafeTensors
@testable import QLoRACLI

/// Fixtures/safetensors/<name>, found by walking up from this file to the package root.
private func fixturePath(_ name: String) -> String {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        let candidate = url.appendingPathComponent("Fixtures/safetensors/\(name)")
        if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
        url.deleteLastPathComponent()
    }
    return "Fixtures/safetensors/\(name) (not found)"
}

private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "inspect-tests-\(getpid())-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("qlora inspect")
struct InspectCommandTests {
    /// bitsandbytes' Linear4bit state dict (real bnb output): one NF4 weight [32, 128] with double
    /// quant, and a bias.
    @Test func groupsBitsandbytesWeight() throws {
        let path = fixturePath("linear4bit_state_dict.safetensors")
        let file = try SafeTensorsFile(path: path)
        let report = try InspectReport(path: path)
        try #require(report.quantized.count == 1)
        let q = report.quantized[0]
        #expect(q.weight.name == "weight")
        #expect(q.quantType == "nf4")
        #expect(q.blocksize == 64)
        #expect(q.originalShape == [32, 128])
        #expect(q.originalDType == "float32")
        #expect(q.doubleQuant)
        #expect(q.nestedBlocksize == 256)
        #expect(q.stateProblem == nil)
        #expect(q.companions.map(\.name) == ["weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4"])
        // Bytes: every tensor of the group, as the file lays them out.
        let groupBytes = try ["weight"] .map { try file.info($0).byteCount }.reduce(0, +) + q.companions.map(\.byteCount).reduce(0, +)
        #expect(q.byteCount == groupBytes)
        #expect(q.parameterCount == 32 * 128)
        #expect(report.others.map(\.name) == ["bias"])
        #expect(report.otherTotals.count == 1 && report.otherTotals[0].dtype == .F32 && report.otherTotals[0].parameterCount == 32)
        #expect(report.tensorCount == file.tensors.count)
        #expect(report.totalByteCount == file.tensors.reduce(0) { $0 + $1.byteCount })
        #expect(report.totalParameterCount == 32 * 128 + 32)
        // 4 bits per code + 8-bit absmax per 64 + the fixed-size state and maps.
        let bits = try #require(report.quantizedBitsPerParameter)
        #expect(bits == Double(groupBytes * 8) / 4096)
        #expect(bits > 4 && bits < 8)
        let text = report.text
        #expect(text.contains("nf4  original float32 [32, 128]  block 64  double quant yes (nested block 256)"))
        #expect(text.contains(".quant_state.bitsandbytes__nf4  U8 [168]"))
        #expect(text.contains("F32: 1 tensor, 32 parameters, 128 B"))
    }

    /// A sharded model directory whose 4-bit weight and its companions sit in different shards, with
    /// config.json: grouping works over the merged view, and quantization_config is reported.
    @Test func shardedDirectoryWithConfig() throws {
        let source = try SafeTensorsFile(path: fixturePath("linear4bit_state_dict.safetensors"))
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let prefix = "model.layers.0.self_attn.q_proj."
        var shards: [[(TensorEntry, Data)]] = [[], []]
        for (i, t) in source.tensors.enumerated() {
            shards[i % 2].append((TensorEntry(name: prefix + t.name, dtype: t.dtype, shape: t.shape), Data(try source.rawBytes(t.name))))
        }
        shards[0].append((TensorEntry(name: "model.norm.weight", dtype: .BF16, shape: [4]), Data(count: 8)))
        var weightMap: [String: String] = [:]
        for (k, shard) in shards.enumerated() {
            let name = "model-0000\(k + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(path: directory + "/" + name, tensors: shard, metadata: ["format": "pt"])
            for (entry, _) in shard { weightMap[entry.name] = name }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap])
            .write(to: URL(fileURLWithPath: directory + "/model.safetensors.index.json"))
        try FileManager.default.copyItem(atPath: fixturePath("untied-nf4-config.json"), toPath: directory + "/config.json")

        let report = try InspectReport(path: directory)
        #expect(report.files.count == 2)
        #expect(report.metadata == ["format": "pt"])
        try #require(report.quantized.count == 1)
        #expect(report.quantized[0].weight.name == prefix + "weight")
        #expect(report.quantized[0].companions.count == 5)
        #expect(Set(report.others.map(\.name)) == [prefix + "bias", "model.norm.weight"])
        #expect(Set(report.otherTotals.map(\.dtype)) == [.F32, .BF16])
        #expect(report.quantizationConfig?["bnb_4bit_quant_type"]?.stringValue == "nf4")
        #expect(report.quantizationConfig?["bnb_4bit_use_double_quant"] == .bool(true))
        #expect(report.text.contains("quantization_config (config.json):\n  _load_in_4bit: true"))
        #expect(report.text.contains("bnb_4bit_quant_type: nf4"))
        #expect(report.text.contains("llm_int8_threshold: 6.0"))

        // --json: one object with the same numbers.
        let json = try JSONValue.parse(Array(report.json.text(indent: 2).utf8))
        #expect(json["files"] == .array(report.files.map(JSONValue.string)))
        #expect(json["totals"]?["bytes"]?.intValue == report.totalByteCount)
        #expect(json["totals"]?["parameters"]?.intValue == report.totalParameterCount)
        #expect(json["totals"]?["quantized_4bit"]?["bits_per_parameter"]?.doubleValue == report.quantizedBitsPerParameter)
        #expect(json["totals"]?["by_dtype"]?["BF16"]?["bytes"]?.intValue == 8)
        #expect(json["quantized_weights"]?.arrayCount == 1)
        #expect(json["quantized_weights"]?.first?["original_shape"] == .array([.unsignedInteger(32), .unsignedInteger(128)]))
        #expect(json["quantized_weights"]?.first?["double_quant"] == .bool(true))
        #expect(json["quantization_config"]?["quant_method"]?.stringValue == "bitsandbytes")
    }

    /// A plain fp32 adapter: no 4-bit groups, every tensor listed, totals by dtype.
    @Test func plainFile() throws {
        let path = fixturePath("adapter_qv_layer1.safetensors")
        let file = try SafeTensorsFile(path: path)
        let report = try InspectReport(path: path)
        #expect(report.quantized.isEmpty)
        #expect(report.quantizedBitsPerParameter == nil)
        #expect(report.others.map(\.name) == file.names.sorted())
        #expect(report.totalParameterCount == file.tensors.reduce(0) { $0 + $1.elementCount })
        #expect(report.quantizationConfig == nil)
        #expect(!report.text.contains("4-bit"))
        #expect(report.json["quantized_weights"] == .array([]))
    }

    /// An fp4 weight without double quantization (absmax F32, no nested tensors), and a weight
    /// whose quant-state bytes are not JSON: still grouped, with the problem reported.
    @Test func fp4AndBrokenState() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = Data(#"{"quant_type": "fp4", "blocksize": 128, "dtype": "bfloat16", "shape": [4, 64]}"#.utf8)
        let path = directory + "/m.safetensors"
        try SafeTensorsWriter.write(path: path, tensors: [
            (TensorEntry(name: "a.weight", dtype: .U8, shape: [128, 1]), Data(count: 128)),
            (TensorEntry(name: "a.weight.absmax", dtype: .F32, shape: [2]), Data(count: 8)),
            (TensorEntry(name: "a.weight.quant_map", dtype: .F32, shape: [16]), Data(count: 64)),
            (TensorEntry(name: "a.weight.quant_state.bitsandbytes__fp4", dtype: .U8, shape: [state.count]), state),
            (TensorEntry(name: "b.weight", dtype: .U8, shape: [8, 1]), Data(count: 8)),
            (TensorEntry(name: "b.weight.absmax", dtype: .F32, shape: [1]), Data(count: 4)),
            (TensorEntry(name: "b.weight.quant_state.bitsandbytes__nf4", dtype: .U8, shape: [3]), Data("{x]".utf8)),
            (TensorEntry(name: "c.weight", dtype: .U8, shape: [8]), Data(count: 8)),  // plain U8: no state
        ])
        let report = try InspectReport(path: path)
        try #require(report.quantized.count == 2)
        let a = report.quantized[0], b = report.quantized[1]
        #expect(a.quantType == "fp4" && a.blocksize == 128 && a.originalShape == [4, 64] && a.originalDType == "bfloat16")
        #expect(!a.doubleQuant)
        #expect(a.stateProblem == nil)
        #expect(a.byteCount == 128 + 8 + 64 + state.count)
        #expect(b.quantType == "nf4")
        #expect(b.stateProblem != nil)
        #expect(b.parameterCount == 16)
        #expect(report.others.map(\.name) == ["c.weight"])
        #expect(report.text.contains("warning: quant-state bytes are not a JSON object"))
    }

    @Test func commandRunsAndRejectsBadArguments() throws {
        #expect(try InspectCommand.run([fixturePath("codebooks.safetensors")]) == 0)
        #expect(try InspectCommand.run([fixturePath("codebooks.safetensors"), "--json"]) == 0)
        #expect(throws: CLIError.self) { try InspectCommand.run([]) }
        #expect(throws: CLIError.self) { try InspectCommand.run([fixturePath("codebooks.safetensors"), "--bogus"]) }
        #expect(throws: SafeTensorsError.self) { try InspectCommand.run(["/nonexistent/model"]) }
        #expect(CommandList.all.contains { $0.name == "inspect" })
        #expect(InspectCommand.help.contains("--json"))
    }
}

extension JSONValue {
    var arrayCount: Int? { if case .array(let a) = self { return a.count } else { return nil } }
    var first: JSONValue? { if case .array(let a) = self { return a.first } else { return nil } }
}

/// The model line: the family and switches of a model directory's config.json, or why it cannot run.
@Suite("qlora inspect: model line")
struct InspectModelLineTests {
    @Test func showsTheModelTypeAndItsSwitches() throws {
        let qwen3 = fixturePath("../qwen3/model")
        let report = try InspectReport(path: qwen3)
        #expect(report.model == "qwen3: 2 layers, hidden 64, intermediate 128, 4 / 2 kv heads, head_dim 32, vocab 256, q/k norm, tied embeddings")
        #expect(report.text.contains("\nmodel: qwen3: "))
        #expect(report.json.text(indent: 2).contains("\"model\": \"qwen3: 2 layers"))
        // An unknown model_type is named, not run.
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: qwen3 + "/model.safetensors", toPath: dir + "/model.safetensors")
        let config = try String(contentsOfFile: qwen3 + "/config.json", encoding: .utf8)
            .replacingOccurrences(of: "\"model_type\": \"qwen3\"", with: "\"model_type\": \"qwen3_next\"")
        try config.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        let other = try InspectReport(path: dir)
        #expect(other.model?.hasPrefix("not supported: ") == true && other.model?.contains("model_type 'qwen3_next'") == true, "\(other.model ?? "nil")")
    }
}
