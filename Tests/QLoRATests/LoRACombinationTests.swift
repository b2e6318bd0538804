import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// `LoRACombination` against PEFT 0.21.2's `add_weighted_adapter` (Fixtures/lora-combination/make.py):
/// adapters a (r 4, alpha 8: q, v, down), b (r 4, alpha 16: q, k, down), c (r 2, alpha 2: q, v, down);
/// linear_ab = linear [0.7, -0.3] of a and b, cat_ac = cat [0.5, 2.0] of a and c.
@Suite struct LoRACombinationTests {
    static let modelConfig: LlamaConfig = try! LlamaConfig.load(directory: FixturePaths.url("tiny-llama/untied-fp32"))

    static func adapter(_ name: String) throws -> LoRAAdapters {
        try PEFTAdapterIO.load(directory: FixturePaths.url("lora-combination/\(name)"), modelConfig: modelConfig)
    }

    static func expectEqualToPEFT(_ combined: LoRAAdapters, _ name: String) throws {
        let expected = try SafeTensorsFile(path: FixturePaths.url("lora-combination/\(name)/adapter_model.safetensors").path)
        let config = try PEFTAdapterIO.loadConfig(directory: FixturePaths.url("lora-combination/\(name)"))
        #expect(combined.config.r == config.r && combined.config.loraAlpha == config.loraAlpha)
        #expect(Set(combined.config.resolvedTargets) == Set(config.resolvedTargets))
        var compared = 0
        for entry in combined.parameters.entries {
            let values = combined.parameters.values(entry)
            let reference = try expected.floats(entry.key)
            let first = zip(values, reference).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
            #expect(values.count == reference.count && first == nil, "\(name) \(entry.key) element \(first?.offset ?? -1)")
            compared += 1
        }
        #expect(compared == expected.names.count, "\(name): \(compared) tensors vs PEFT's \(expected.names.count)")
    }

    @Test func linearMatchesPEFT() throws {
        let combined = try LoRACombination.combine([(try Self.adapter("a"), 0.7), (try Self.adapter("b"), -0.3)], as: .linear,
                                                   modelConfig: Self.modelConfig)
        try Self.expectEqualToPEFT(combined, "linear_ab")
    }

    @Test func catMatchesPEFT() throws {
        let combined = try LoRACombination.combine([(try Self.adapter("a"), 0.5), (try Self.adapter("c"), 2.0)], as: .cat,
                                                   modelConfig: Self.modelConfig)
        try Self.expectEqualToPEFT(combined, "cat_ac")
    }

    @Test func linearRefusesUnequalRanks() throws {
        #expect(throws: LoRAError.self) {
            try LoRACombination.combine([(try Self.adapter("a"), 1), (try Self.adapter("c"), 1)], as: .linear, modelConfig: Self.modelConfig)
        }
    }
}
