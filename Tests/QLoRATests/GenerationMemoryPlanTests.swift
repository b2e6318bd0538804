import Foundation
import Testing
@testable import QLoRA

/// `qlora memory --adapters N`: the generation plan against the buffers generation really builds
/// (the decoders `Generator` / `generateBatch` make, the loaded adapters, the base).
@Suite struct GenerationMemoryPlanTests {
    struct Case: CustomStringConvertible, Sendable {
        var variant: String
        var adapters: Int
        var batch: Int
        var seqLen: Int
        var description: String { "\(variant): \(adapters) adapters, \(batch) × \(seqLen)" }
    }

    static let cases = [
        Case(variant: "qkv-bias", adapters: 0, batch: 1, seqLen: 12),
        Case(variant: "qkv-bias", adapters: 1, batch: 1, seqLen: 9),
        Case(variant: "qkv-bias", adapters: 4, batch: 8, seqLen: 10),
        Case(variant: "tied-odd", adapters: 3, batch: 2, seqLen: 7),
        Case(variant: "tied-odd", adapters: 2, batch: 5, seqLen: 400),  // beyond max positions (256): clamped
    ]

    @Test(arguments: cases)
    func planEqualsGenerationBuffers(_ c: Case) throws {
        var config = MemoryPlanTests.randomConfig(c.variant)
        config.maxPositionEmbeddings = 256
        let lora = LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"])
        var options = MemoryPlan.Options(baseFormat: MemoryPlanTests.nf4, lora: lora, batch: c.batch, seqLen: c.seqLen, training: false)
        options.generationAdapters = c.adapters
        let plan = try MemoryPlan(config: config, options: options)
        let model = try LlamaLoader.random(config: config, format: options.baseFormat, precision: .bf16, seed: 3)
        let adapters = try (0..<c.adapters).map { _ in try LoRAAdapters(modelConfig: config, config: lora, training: false) }
        let length = min(c.seqLen, config.maxPositionEmbeddings)
        var cache = 0, working = 0
        if c.batch == 1 {
            let generator = Generator(model: model, lora: adapters.first, maxSeqLen: length)
            cache = generator.decoder.cache.bytes
            working = generator.decoder.bytes - cache
        } else {
            let requests = (0..<c.batch).map { row in (prompt: [Int32(row % 7 + 1)], lora: adapters.isEmpty ? nil : adapters[row % adapters.count]) }
            _ = try Generator.generateBatch(model: model, requests: requests, maxNewTokens: length - 1) { decoders in
                #expect(decoders.count == c.batch + 1)
                for decoder in decoders {
                    cache += decoder.cache.bytes
                    working += decoder.bytes - decoder.cache.bytes
                }
            }
        }
        #expect(plan.breakdown[.activations] == cache, "KV caches")
        #expect(plan.breakdown[.workspace] == working, "decoder buffers")
        #expect(plan.breakdown[.trainableParameters] == adapters.reduce(0) { $0 + $1.parameters.sectionBytes })
        #expect(plan.breakdown[.gradients] == 0 && plan.breakdown[.optimizerState] == 0)
        #expect(plan.breakdown[.quantizedWeights] == model.frozenBytes.quantized)
        #expect(plan.breakdown[.otherFrozenWeights] == model.frozenBytes.other)
        #expect(plan.trainableParameterCount == adapters.reduce(0) { $0 + $1.parameters.parameterCount })
    }

    /// Each more adapter adds exactly one adapter's parameters; nothing else moves.
    @Test func adaptersAddOneSectionEach() throws {
        let config = MemoryPlanTests.randomConfig("qkv-bias")
        var options = MemoryPlan.Options(baseFormat: MemoryPlanTests.nf4, lora: LoRAConfig(r: 8, loraAlpha: 16, targetModules: ["q_proj", "v_proj"]),
                                         batch: 4, seqLen: 32, training: false)
        options.generationAdapters = 1
        let one = try MemoryPlan(config: config, options: options)
        options.generationAdapters = 5
        let five = try MemoryPlan(config: config, options: options)
        #expect(five.breakdown[.trainableParameters] == 5 * one.breakdown[.trainableParameters])
        for category in MemoryCategory.allCases where category != .trainableParameters {
            #expect(five.breakdown[category] == one.breakdown[category], "\(category.rawValue)")
        }
        options.generationAdapters = -1
        #expect(throws: MemoryPlanError.self) { try MemoryPlan(config: config, options: options) }
    }

    /// --measure with --adapters: one real generation, measured buffers equal the plan, RSS near it.
    @Test func measuredGenerationMatchesPlan() throws {
        let config = MemoryPlanTests.randomConfig("qkv-bias")
        var options = MemoryPlan.Options(baseFormat: MemoryPlanTests.nf4, lora: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]),
                                         batch: 3, seqLen: 12, training: false)
        options.generationAdapters = 2
        let result = try MemoryMeasurement.runGeneration(config: config, directory: nil, options: options)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            #expect(result.planned[category] == result.measured[category], "\(category.rawValue)")
        }
        #expect(result.peakTrainingRSS > 0)
    }
}
