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
