import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// `Evaluation` (what `qlora eval` runs) against transformers' `model(ids, labels=labels).loss` on the tiny
/// reference Llama (Fixtures/tiny-llama-cases: two rows of 12 tokens, the PEFT adapter at init).
@Suite struct EvaluationTests {
    static func referenceRecords() throws -> (records: [TokenizedExample], loss: Float, adapter: URL) {
        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        let ids = try reference.integers("input_ids").map { Int32($0) }, labels = try reference.integers("labels").map { Int32($0) }
        let records = (0..<2).map { row in
            TokenizedExample(inputIDs: Array(ids[(row * 12)..<(row * 12 + 12)]), labels: Array(labels[(row * 12)..<(row * 12 + 12)]))
        }
        return (records, try reference.floats("loss")[0], FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_init"))
    }

    @Test(arguments: ["untied_fp32", "untied_nf4"])
    func lossEqualsTransformers(_ name: String) throws {
        let (records, _, adapterDir) = try Self.referenceRecords()
        let expected = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/\(name)/tensors.safetensors").path).floats("loss")[0]
        let format: BaseWeightFormat = name.hasSuffix("nf4") ? .quantized(QuantizationOptions()) : .dense32
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: format, precision: .fp32)
        let lora = try PEFTAdapterIO.load(directory: adapterDir, modelConfig: model.config)
        for batch in [1, 2] {
            let result = try Evaluation.run(model: model, lora: lora, records: records, options: .init(batchSize: batch, seqLen: 16),
                                            padTokenID: 0, separatorTokenID: nil)
            #expect(result.records == 2 && result.tokens == 16 && result.truncatedRecords == 0)
            // The issue asks for 0.1 %; fp32 against fp32 is far closer.
            #expect(abs(Float(result.loss) - expected) <= 1e-5, "\(name) batch \(batch): \(result.loss) vs \(expected)")
            #expect(abs(result.perplexity - exp(result.loss)) < 1e-9)
        }
    }

    /// `qlora eval` of an adapter with lora_dropout > 0, and evaluating during training (a training executor
    /// with `appliesDropout` off, as Trainer.evaluate sets it), run without dropout as PEFT in eval mode:
    /// the adapter with dropout 0 gives the same loss; a training forward (dropout on) another.
    @Test func evaluationDuringTrainingHasNoDropout() throws {
        let (records, _, _) = try Self.referenceRecords()
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.5, targetModules: ["all-linear"]))
        adapters.initialize(seed: 1)
        var generator = SeededGenerator(seed: 2)
        for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
            adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.05 })
        }
        let inference = try Evaluation.run(model: model, lora: adapters, records: [records[0]], options: .init(seqLen: 12), padTokenID: 0, separatorTokenID: nil)
        let noDropout = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]), training: false)
        for entry in adapters.parameters.entries { noDropout.parameters.setValues(entry, adapters.parameters.values(entry)) }
        let plain = try Evaluation.run(model: model, lora: noDropout, records: [records[0]], options: .init(seqLen: 12), padTokenID: 0, separatorTokenID: nil)
        #expect(inference.loss == plain.loss)
        let executor = LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 1, seqLen: 12))
        func loss() throws -> Double {
            try executor.forward(inputIDs: records[0].inputIDs, batch: 1, seqLen: 12)
            let result = executor.loss(labels: records[0].labels)
            return result.sum / Double(result.count)
        }
        #expect(abs(try loss() - inference.loss) > 1e-4)   // dropout on: a training forward
        executor.appliesDropout = false
        #expect(abs(try loss() - inference.loss) < 1e-6)
    }

    @Test func adaptersChangeTheLossAndTruncationIsCounted() throws {
        let (records, _, _) = try Self.referenceRecords()
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let base = try Evaluation.run(model: model, lora: nil, records: records, options: .init(seqLen: 12), padTokenID: 0, separatorTokenID: nil)
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]))
        adapters.initialize(seed: 1)
        var generator = SeededGenerator(seed: 2)
        for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
            adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.05 })
        }
        let tuned = try Evaluation.run(model: model, lora: adapters, records: records, options: .init(seqLen: 12), padTokenID: 0, separatorTokenID: nil)
        #expect(abs(tuned.loss - base.loss) > 1e-3)
        let cut = try Evaluation.run(model: model, lora: nil, records: records, options: .init(seqLen: 8), padTokenID: 0, separatorTokenID: nil)
        #expect(cut.truncatedRecords == 2 && cut.tokens < base.tokens)
    }
}
