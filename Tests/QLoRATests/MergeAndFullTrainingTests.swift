import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// FNV-1a 64 of bytes: the reference merged model is compared through these hashes (Fixtures/merge).
func fnv1a64<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    return h
}

@Suite struct MergeAndFullTrainingTests {
    static func loadStep1() throws -> (LlamaModel, LoRAAdapters) {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let adapters = try PEFTAdapterIO.load(directory: FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_step1"), modelConfig: model.config)
        return (model, adapters)
    }

    @Test func mergedCheckpointIsByteIdenticalToPEFT() throws {
        let (model, adapters) = try Self.loadStep1()
        let merged = try LoRAMerge.merge(model: model, adapters: adapters)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("merge-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let sourceConfig = try Data(contentsOf: FixturePaths.url("tiny-llama/untied-fp32/config.json"))
        try LlamaWriter.save(merged, to: out, sourceConfig: sourceConfig)
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: FixturePaths.url("merge/merged_model_fnv1a64.json"))) as! [String: Any]
        let file = try SafeTensorsFile(path: out.appendingPathComponent("model.safetensors").path)
        for (name, hash) in expected["tensors"] as! [String: String] {
            #expect(String(format: "%016llx", fnv1a64(try file.rawBytes(name))) == hash, "tensor \(name) differs from PEFT's merge")
        }
        let bytes = try Data(contentsOf: out.appendingPathComponent("model.safetensors"))
        #expect(String(format: "%016llx", fnv1a64(bytes)) == expected["file_fnv1a64"] as! String, "file bytes differ from save_pretrained's")
        #expect(try Data(contentsOf: out.appendingPathComponent("config.json")) == (try Data(contentsOf: FixturePaths.url("merge/merged_config.json"))))
        // And the merged model computes what PEFT's merged model computed.
        let reference = try SafeTensorsFile(path: FixturePaths.url("merge/logits.safetensors").path)
        let reloaded = try LlamaLoader.load(directory: out, format: .dense32, precision: .fp32)
        let executor = LlamaExecutor(model: reloaded, lora: nil, shape: .init(batch: 2, seqLen: 12, training: false))
        try executor.forward(inputIDs: try reference.integers("input_ids").map { Int32($0) }, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * 1024)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        let result = compare(logits, try reference.floats("logits"), tolerance: 1e-4)
        #expect(result.maxDiff <= 1e-4, "merged logits: \(result.report)")
    }

    @Test func adapterRoundTripsThroughPEFTFormat() throws {
        let (model, adapters) = try Self.loadStep1()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("adapter-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try PEFTAdapterIO.save(adapters, to: out)
        let referenceDir = FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_step1")
        // Same tensor bytes as PEFT wrote (keys, shapes, dtype, values and layout).
        #expect(try Data(contentsOf: out.appendingPathComponent(PEFTAdapterIO.weightsFile))
                == (try Data(contentsOf: referenceDir.appendingPathComponent(PEFTAdapterIO.weightsFile))))
        // adapter_config.json: identical but for base_model_name_or_path, which names the user's path.
        var ours = try JSONValue.parse(data: Data(contentsOf: out.appendingPathComponent(PEFTAdapterIO.configFile))).members!
        var theirs = try JSONValue.parse(data: Data(contentsOf: referenceDir.appendingPathComponent(PEFTAdapterIO.configFile))).members!
        ours["base_model_name_or_path"] = nil
        theirs["base_model_name_or_path"] = nil
        #expect(ours == theirs)
        let reloaded = try PEFTAdapterIO.load(directory: out, modelConfig: model.config)
        for entry in adapters.parameters.entries {
            #expect(reloaded.parameters.values(reloaded.parameters.entry(entry.key)!) == adapters.parameters.values(entry))
        }
    }

    @Test func badAdapterNamesTheProblem() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let dir = FixturePaths.url("tiny-llama-cases/untied_fp32_qv_layer1/adapter_init")
        // An adapter for q,v of layer 1 loaded with a config that expects all seven projections.
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8))
        #expect(throws: LoRAError.self) { try PEFTAdapterIO.loadWeights(into: adapters, directory: dir) }
        do {
            try PEFTAdapterIO.loadWeights(into: adapters, directory: dir)
        } catch let LoRAError.badAdapter(path, reason) {
            #expect(path.hasSuffix("adapter_model.safetensors") && reason.contains("layers.0") && reason.contains("missing"))
        }
    }

    /// Full fine-tuning of the merged model W' = W + s B A gives dL/dW'; the chain rule then predicts
    /// PEFT's LoRA gradients: dL/dB = s G A^T and dL/dA = s B^T G. Checked against the reference grads.
    @Test func fullFineTuningGradientsAgreeWithPEFTThroughTheChainRule() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let adapters = try PEFTAdapterIO.load(directory: FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_init"), modelConfig: model.config)
        let merged = try LoRAMerge.merge(model: model, adapters: adapters)
        let full = try FullFineTuning(copying: merged)
        let executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients, shape: .init(batch: 2, seqLen: 12))
        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        full.parameters.zeroGradients()
        let loss = try executor.lossAndGradients(inputIDs: try reference.integers("input_ids").map { Int32($0) },
                                                 labels: try reference.integers("labels").map { Int32($0) }, batch: 2, seqLen: 12)
        #expect(abs(loss.sum / Double(loss.count) - 7.349911) < 1e-4)
        let s = Double(adapters.config.scaling)
        for layer in 0..<2 {
            for projection in Projection.allCases {
                let prefix = LoRAAdapters.keyPrefix(layer: layer, projection: projection)
                let adapter = adapters.adapters[layer][projection.rawValue]!
                let g = full.parameters.values(full.parameters.entry(LlamaConfig.modulePath(layer: layer, linear: projection.moduleName) + ".weight")!, section: 1)
                let (o, i, r) = (adapter.outFeatures, adapter.inFeatures, adapter.rank)
                var predictedB = [Float](repeating: 0, count: o * r)
                var predictedA = [Float](repeating: 0, count: r * i)
                for oo in 0..<o { for rr in 0..<r {
                    var acc = 0.0
                    for ii in 0..<i { acc += Double(g[oo * i + ii]) * Double(adapter.a[rr * i + ii]) }
                    predictedB[oo * r + rr] = Float(s * acc)
                } }
                for rr in 0..<r { for ii in 0..<i {
                    var acc = 0.0
                    for oo in 0..<o { acc += Double(adapter.b[oo * r + rr]) * Double(g[oo * i + ii]) }
                    predictedA[rr * i + ii] = Float(s * acc)
                } }
                let gradB = compare(predictedB, try reference.floats("grad." + prefix + ".lora_B.weight"), tolerance: 2e-5)
                let gradA = compare(predictedA, try reference.floats("grad." + prefix + ".lora_A.weight"), tolerance: 2e-5)
                #expect(gradB.maxDiff <= 2e-5, "\(prefix) B: \(gradB.report)")
                #expect(gradA.maxDiff <= 2e-5, "\(prefix) A: \(gradA.report)")
            }
        }
        // Norms and embeddings get gradients too.
        let embedGrad = full.parameters.values(full.parameters.entry("model.embed_tokens.weight")!, section: 1)
        #expect(embedGrad.contains { $0 != 0 })
        let normGrad = full.parameters.values(full.parameters.entry("model.norm.weight")!, section: 1)
        #expect(normGrad.allSatisfy { $0.isFinite } && normGrad.contains { $0 != 0 })
    }
}

@Suite struct TrainableSummaryTests {
    /// PEFT + bitsandbytes on SmolLM2-135M (the peer benchmark, r=8 on all 7 projections) reports
    /// 2,442,240 trainable parameters; PEFT's "all params" counts 4-bit weights by their real size.
    @Test func matchesPEFTOnSmolLM2() throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/smollm2-135m.json"))
        let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 8, loraAlpha: 16), training: false)
        #expect(adapters.parameters.parameterCount == 2_442_240)
        #expect(config.totalParameterCount == 134_515_008)
        #expect(LoRAAdapters.summaryLine(trainable: 2_442_240, all: 134_515_008 + 2_442_240)
                == "trainable params: 2,442,240 || all params: 136,957,248 || trainable%: 1.7832")
    }

    @Test func modulesToSaveIsRefusedNotIgnored() {
        #expect(throws: LoRAError.self) { try LoRAConfig(modulesToSave: ["lm_head"]).validate() }
    }
}
