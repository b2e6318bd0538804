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

/// `qlora memory --data`: the dataset category planned from the token file equals what `train` holds.
@Suite struct MemoryDatasetPlanTests {
    @Test func plannedDatasetBytesEqualTheTrainingRun() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("d.jsonl")
        let lines = (0..<40).map { #"{"text": "record \#($0): the quick brown fox jumps over the lazy dog"}"# }
        try Data(lines.joined(separator: "\n").utf8).write(to: data)
        let cache = dir.appendingPathComponent("tokens").path
        let arguments = [dir.path, "--data", data.path, "--token-cache", cache, "--batch", "2", "--seq-len", "32", "--quant", "none"]
        let args = try Arguments(arguments, command: "memory", valueOptions: MemoryCommand.valueOptions, flagOptions: MemoryCommand.flagOptions)
        let config = try LlamaConfig.load(directory: dir)
        let options = try MemoryCommand.planOptions(args, config: config)
        let (planned, line) = try MemoryCommand.planDataset(data.path, model: dir.path, config: config, options: options, args: args)
        #expect(line.contains("40 records") && line.contains("written now"), "\(line)")

        var run = TrainingRun.Options(modelDirectory: dir, dataFile: data, outputDirectory: dir.appendingPathComponent("out"))
        run.format = .denseBF16
        run.lora = LoRAConfig(r: 2, loraAlpha: 4, targetModules: ["q_proj"])
        run.batchSize = 2
        run.seqLen = 32
        run.trainer.maxSteps = 1
        run.tokenCache = URL(fileURLWithPath: cache)
        var live: Int?, reused: Bool?
        try TrainingRun(options: run).run { event in
            if case .training(.started(let start)) = event { live = start.memory[.dataset] }
            if case .tokenized(_, _, _, _, let wasReused, _) = event { reused = wasReused }
        }
        #expect(live == planned && planned > 0)
        #expect(reused == true, "train maps the file memory --data wrote")
        #expect(throws: CLIError.self) { try MemoryCommand.run(arguments + ["--measure"]) }
    }
}
