import Foundation
import Testing
import QLoRA
@testable import QLoRACLI

/// `qlora memory --measure --json` prints JSON: planned and measured bytes per category, exact.
@Suite struct MemoryMeasureJSONTests {
    @Test func measurementIsJSON() throws {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { url.deleteLastPathComponent() }
        let config = try LlamaConfig.load(directory: url.appendingPathComponent("Fixtures/tiny-llama/untied-fp32"))
        let options = MemoryPlan.Options(lora: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]), batch: 1, seqLen: 16)
        let result = try MemoryMeasurement.run(config: config, directory: nil, options: options, steps: 1)
        let json = try JSONSerialization.jsonObject(with: Data(MemoryCommand.measurementJSON(result, model: "tiny", weights: "random").utf8)) as! [String: Any]
        let planned = json["planned"] as! [String: Int], measured = json["measured"] as! [String: Int]
        #expect(planned["quantized weights"] == result.planned[.quantizedWeights] && measured["workspace"] == result.measured[.workspace])
        #expect(json["peak_training_rss_bytes"] as? Int == result.peakTrainingRSS && json["relative_error"] is Double)
    }

    /// `--adapters N` plans generation: training-only flags are refused, a negative count is named.
    @Test func adaptersPlanGeneration() throws {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { url.deleteLastPathComponent() }
        let model = url.appendingPathComponent("Fixtures/tiny-llama/untied-fp32").path
        #expect(try MemoryCommand.run([model, "--adapters", "3", "--batch", "4", "--seq-len", "32", "--json"]) == 0)
        for flag in ["--full", "--compare", "--gradient-checkpointing"] {
            #expect(throws: CLIError.self) { try MemoryCommand.run([model, "--adapters", "2", flag, "--quant", "none"]) }
        }
        #expect(throws: CLIError.self) { try MemoryCommand.run([model, "--adapters", "-1"]) }
    }
}
