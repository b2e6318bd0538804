import Foundation
import Testing
@testable import QLoRA

/// `qlora train` end to end on a small random Llama with a real SentencePiece-style tokenizer:
/// loss goes down on real text, checkpoints resume bit-exactly, outputs are PEFT adapters.
@Suite struct TrainingRunTests {
    /// A temp model directory: random weights (vocab 2000, matching the tokenizer) + tokenizer files.
    static func makeModelDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-train-\(UUID().uuidString)")
        var config = LlamaConfig(vocabSize: 2000, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 256)
        config.bosTokenID = 1
        config.eosTokenIDs = [2]
        let model = try LlamaLoader.random(config: config, format: .dense32, precision: .fp32, seed: 3, std: 0.05)
        try LlamaWriter.save(model, to: dir)
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: FixturePaths.url("tokenizer-sp/metaspace/\(file)"), to: dir.appendingPathComponent(file))
        }
        return dir
    }

    static func writeData(_ dir: URL) throws -> URL {
        let lines = (0..<24).map { i in
            i % 2 == 0 ? #"{"text": "The quick brown fox jumps over the lazy dog number \#(i)."}"#
                : #"{"prompt": "Question \#(i): what is the capital of France?", "completion": " Paris is the capital of France."}"#
        }
        let url = dir.appendingPathComponent("train.jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func options(model: URL, data: URL, output: URL, steps: Int, saveEvery: Int?, resume: Bool = false) -> TrainingRun.Options {
        var options = TrainingRun.Options(modelDirectory: model, dataFile: data, outputDirectory: output)
        options.lora = LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"])
        options.batchSize = 2
        options.seqLen = 32
        options.evalFraction = 0.2
        options.trainer.maxSteps = steps
        options.trainer.learningRate = 3e-3
        // Constant, so that a run stopped at step 5 saw the same learning rates as a 10-step run.
        options.trainer.schedule = .constant
        options.trainer.saveEvery = saveEvery
        options.trainer.evalEvery = 5
        options.resume = resume
        options.tokenCache = model.appendingPathComponent("token-cache")
        return options
    }

    @Test func trainsResumesBitExactlyAndWritesPEFTAdapters() throws {
        let model = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: model) }
        let data = try Self.writeData(model)

        // Uninterrupted: 10 steps.
        let straight = model.appendingPathComponent("straight")
        var losses: [Double] = []
        var evals: [Double] = []
        try TrainingRun(options: Self.options(model: model, data: data, output: straight, steps: 10, saveEvery: nil)).run { event in
            if case .training(.step(let r)) = event { losses.append(r.loss) }
            if case .training(.evaluated(_, let loss)) = event { evals.append(loss) }
        }
        #expect(losses.count == 10 && evals.count == 2)
        #expect(losses.suffix(3).reduce(0, +) < losses.prefix(3).reduce(0, +), "loss did not go down: \(losses)")

        // Interrupted after 5 (checkpoint), then resumed to 10.
        let resumed = model.appendingPathComponent("resumed")
        try TrainingRun(options: Self.options(model: model, data: data, output: resumed, steps: 5, saveEvery: 5)).run { _ in }
        #expect(FileManager.default.fileExists(atPath: resumed.appendingPathComponent("checkpoint-5/adapter_model.safetensors").path))
        var resumedAt = -1
        try TrainingRun(options: Self.options(model: model, data: data, output: resumed, steps: 10, saveEvery: 5, resume: true)).run { event in
            if case .resumed(let step, _) = event { resumedAt = step }
        }
        #expect(resumedAt == 5)
        // A resume that would see other batches (another seed, batch size or micro-batches per step) is
        // refused naming the checkpoint and the setting.
        for change in ["seed", "batch", "accumulation"] {
            var options = Self.options(model: model, data: data, output: resumed, steps: 12, saveEvery: 5, resume: true)
            switch change {
            case "seed": options.seed += 1
            case "batch": options.batchSize = 1
            default: options.trainer.gradientAccumulationSteps = 2
            }
            #expect { try TrainingRun(options: options).run { _ in } } throws: { error in
                "\(error)".contains("checkpoint-10") && "\(error)".contains("would see other batches")
            }
        }
        let a = try Data(contentsOf: straight.appendingPathComponent(PEFTAdapterIO.weightsFile))
        let b = try Data(contentsOf: resumed.appendingPathComponent(PEFTAdapterIO.weightsFile))
        #expect(a == b, "resumed training diverged from uninterrupted training")
        // metrics.jsonl: one line per step (+ evaluations), resumed run appended.
        let metrics = try String(contentsOf: resumed.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        #expect(metrics.split(separator: "\n").filter { $0.contains("\"loss\"") }.count == 10)
        // The output loads as a PEFT adapter for this model.
        let config = try LlamaConfig.load(directory: model)
        let adapters = try PEFTAdapterIO.load(directory: straight, modelConfig: config)
        #expect(adapters.parameters.entries.count == 2 * 7 * 2)
    }

    /// Gradient checkpointing recomputes each layer bit-identically: the same run with and without it
    /// gives the same losses and the same adapter, byte for byte (NF4 base, bf16 compute, dropout on).
    /// `--full`: every weight trained (fp32, AdamW); the output is a model that loads back and has learned.
    @Test func fullFineTuningWritesATrainedModel() throws {
        let model = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: model) }
        let data = try Self.writeData(model)
        let output = model.appendingPathComponent("full")
        var options = Self.options(model: model, data: data, output: output, steps: 6, saveEvery: nil)
        options.full = true
        options.format = .dense32
        options.precision = .fp32
        var losses: [Double] = []
        try TrainingRun(options: options).run { event in
            if case .training(.step(let r)) = event { losses.append(r.loss) }
        }
        #expect(losses.count == 6 && losses.last! < losses.first!, "\(losses)")
        let trained = try LlamaLoader.load(directory: output, format: .dense32, precision: .fp32)
        let original = try LlamaLoader.load(directory: model, format: .dense32, precision: .fp32)
        let a = trained.layers[0].linears[0].weight.denseStorage!, b = original.layers[0].linears[0].weight.denseStorage!
        #expect((0..<64).contains { a[$0] != b[$0] }, "the weights changed")
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("tokenizer.json").path))
        // The trained model's loss on the data is below the original's.
        let dataset = try DatasetTokenizer(modelDirectory: model, vocabSize: 2000, purpose: "test")
        let records = try dataset.tokenize(try TrainingExample.load(jsonl: data), file: data)
        let before = try Evaluation.run(model: original, lora: nil, records: records, options: .init(seqLen: 32), padTokenID: 0, separatorTokenID: nil)
        let after = try Evaluation.run(model: trained, lora: nil, records: records, options: .init(seqLen: 32), padTokenID: 0, separatorTokenID: nil)
        #expect(after.loss < before.loss)

        options.format = .quantized(QuantizationOptions())
        #expect(throws: TrainError.self) { try TrainingRun(options: options).run { _ in } }

        // bf16 mixed precision: learns too, reports the plan's memory, and saves the fp32 masters.
        options.format = .dense32
        options.precision = .bf16
        let mixedOutput = model.appendingPathComponent("full-bf16")
        options.outputDirectory = mixedOutput
        var mixed: [Double] = []
        var started: MemoryBreakdown?
        try TrainingRun(options: options).run { event in
            if case .training(.step(let r)) = event { mixed.append(r.loss) }
            if case .training(.started(let s)) = event { started = s.memory }
        }
        #expect(mixed.count == 6 && mixed.last! < mixed.first!, "\(mixed)")
        var planOptions = MemoryPlan.Options(baseFormat: .denseBF16, computePrecision: .bf16, lora: nil, batch: 2, seqLen: 32)
        planOptions.runtimeOverheadBytes = 0
        let plan = try MemoryPlan(config: original.config, options: planOptions)
        for category in [MemoryCategory.trainableParameters, .gradients, .optimizerState, .otherFrozenWeights] {
            #expect(started?[category] == plan.breakdown[category], "\(category)")
        }
        let mixedModel = try LlamaLoader.load(directory: mixedOutput, format: .dense32, precision: .fp32)
        let w = mixedModel.layers[0].linears[0].weight.denseStorage!
        #expect((0..<64).contains { w[$0].bitPattern & 0xFFFF != 0 }, "fp32 masters saved, not bf16 copies")
        #expect((0..<64).contains { w[$0] != b[$0] }, "the weights changed")
    }

    /// Starting from an adapter continues it: its config and weights, not a fresh init.
    @Test func startsFromAnExistingAdapter() throws {
        let model = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: model) }
        let data = try Self.writeData(model)
        let first = model.appendingPathComponent("first")
        try TrainingRun(options: Self.options(model: model, data: data, output: first, steps: 3, saveEvery: nil)).run { _ in }
        var options = Self.options(model: model, data: data, output: model.appendingPathComponent("second"), steps: 1, saveEvery: nil)
        options.lora = LoRAConfig(r: 16, loraAlpha: 1, targetModules: ["q_proj"])   // ignored: the adapter decides
        options.initialAdapter = first
        options.trainer.learningRate = 0
        options.trainer.weightDecay = 0
        try TrainingRun(options: options).run { _ in }
        let config = try LlamaConfig.load(directory: model)
        let before = try PEFTAdapterIO.load(directory: first, modelConfig: config)
        let after = try PEFTAdapterIO.load(directory: model.appendingPathComponent("second"), modelConfig: config)
        #expect(after.config.r == 4 && after.parameters.entries.map(\.key) == before.parameters.entries.map(\.key))
        for entry in before.parameters.entries {
            #expect(before.parameters.values(entry) == after.parameters.values(after.parameters.entry(entry.key)!), "\(entry.key)")
        }
    }

    @Test func checkpointingChangesNothingButMemory() throws {
        let model = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: model) }
        let data = try Self.writeData(model)
        var results: [(losses: [Double], adapter: Data)] = []
        for checkpointing in [false, true] {
            let output = model.appendingPathComponent("ckpt-\(checkpointing)")
            var options = Self.options(model: model, data: data, output: output, steps: 6, saveEvery: nil)
            options.gradientCheckpointing = checkpointing
            options.lora.loraDropout = 0.1
            var losses: [Double] = []
            try TrainingRun(options: options).run { event in
                if case .training(.step(let r)) = event { losses.append(r.loss) }
            }
            results.append((losses, try Data(contentsOf: output.appendingPathComponent(PEFTAdapterIO.weightsFile))))
        }
        #expect(results[0].losses == results[1].losses)
        #expect(results[0].adapter == results[1].adapter)
    }

    @Test func badDatasetLineNamesFileAndLine() throws {
        let model = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: model) }
        let data = model.appendingPathComponent("bad.jsonl")
        try "{\"text\": \"ok\"}\n{\"txt\": 3}\n".write(to: data, atomically: true, encoding: .utf8)
        let run = TrainingRun(options: Self.options(model: model, data: data, output: model.appendingPathComponent("out"), steps: 1, saveEvery: nil))
        #expect {
            try run.run { _ in }
        } throws: { error in
            let text = "\(error)"
            return text.contains("bad.jsonl") && text.contains("2")
        }
    }
}
