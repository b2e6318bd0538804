import Testing
@testable import QLoRA

/// Mixed batches: several prompts, each with its own adapter (or none), decoded together must give each
/// sequence exactly the tokens (and logits) it gets alone.
@Suite struct BatchGenerationTests {
    static func setup(format: BaseWeightFormat) throws -> (LlamaModel, [LoRAAdapters]) {
        var config = LlamaConfig(vocabSize: 300, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 64)
        config.bosTokenID = 1
        let model = try LlamaLoader.random(config: config, format: format, precision: .bf16, seed: 5, std: 0.08)
        var generator = SeededGenerator(seed: 6)
        let adapters = try [(2, ["q_proj", "v_proj"]), (4, ["all-linear"]), (8, ["down_proj", "o_proj"])].map { rank, targets in
            let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: rank, loraAlpha: Double(2 * rank), targetModules: targets),
                                            training: false)
            adapters.initialize(seed: UInt64(rank))
            for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
                adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.2 })
            }
            return adapters
        }
        return (model, adapters)
    }

    @Test(arguments: ["nf4", "bf16"])
    func eachRowEqualsItsOwnRun(_ base: String) throws {
        let (model, adapters) = try Self.setup(format: base == "nf4" ? .quantized(QuantizationOptions()) : .denseBF16)
        let prompts: [[Int32]] = [[1, 5, 9], [1, 200, 17, 4, 4, 4, 8], [1, 2], [1, 77, 78, 79], [1, 3, 3], [1, 250], [1, 11, 12, 13, 14],
                                  [1, 40], [1, 41, 42], [1, 60]]
        // 10 sequences (more than one group of 8), over 3 adapters and the base.
        let requests = prompts.enumerated().map { i, prompt in (prompt: prompt, lora: i % 4 == 3 ? nil : adapters[i % 4] as LoRAAdapters?) }
        let stop: Set<Int32> = [7]
        let batched = try Generator.generateBatch(model: model, requests: requests, maxNewTokens: 12, stopTokens: stop)
        for (i, request) in requests.enumerated() {
            let alone = try Generator(model: model, lora: request.lora, maxSeqLen: request.prompt.count + 12)
                .generate(prompt: request.prompt, maxNewTokens: 12, stopTokens: stop)
            #expect(batched[i] == alone, "\(base) sequence \(i): batched \(batched[i]) vs alone \(alone)")
        }
        #expect(Set(batched.map(\.count)).count > 1 || batched.allSatisfy { $0.count == 12 })

        // And the logits of one step, bit for bit.
        let one = IncrementalDecoder(model: model, lora: adapters[1], maxSeqLen: 16)
        let two = IncrementalDecoder(model: model, lora: nil, maxSeqLen: 16)
        let reference1 = IncrementalDecoder(model: model, lora: adapters[1], maxSeqLen: 16)
        let reference2 = IncrementalDecoder(model: model, lora: nil, maxSeqLen: 16)
        for d in [one, two, reference1, reference2] { _ = try d.append([1, 9, 10]) }
        let runner = IncrementalDecoder(model: model, lora: nil, maxSeqLen: 16, chunkRows: 8, loraRank: 4)
        let together = try runner.appendOne([20, 21], to: [one, two])
        #expect(together[0].map(\.bitPattern) == (try reference1.append([20])).map(\.bitPattern))
        #expect(together[1].map(\.bitPattern) == (try reference2.append([21])).map(\.bitPattern))
    }
}
