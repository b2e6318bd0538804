import Foundation
import SafeTensors
import GGUF
import Testing
@testable import QLoRA

/// Phi-3's config switches as read from config.json (transformers 5's rope_parameters and the flat keys
/// Phi-3 / Phi-4-mini checkpoints carry), the LongRoPE choice, what the writers keep of them, and what is
/// refused by key. What the switches compute is checked against transformers in FamilyReferenceTests.
@Suite struct Phi3Tests {
    static let family = FamilyReferenceTests.Family(name: "phi3")

    static func json() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: family.url("model/config.json"))) as! [String: Any]
    }

    static func decode(_ json: [String: Any]) throws -> LlamaConfig {
        try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json")
    }

    /// The reason of a refused config.
    static func refusal(_ json: [String: Any]) -> String {
        do { _ = try decode(json); return "accepted" } catch { return "\(error)" }
    }

    @Test func configSwitchesOnEveryPhi3Switch() throws {
        let config = try Self.family.config()
        #expect(config.modelType == "phi3" && config.fusedProjections && config.tieWordEmbeddings)
        #expect(config.layerProjections == [.qkv, .o, .gateUp, .down])
        #expect(config.layerLinears == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
        #expect(config.shape(of: .qkv) == (128, 64) && config.shape(of: .gateUp) == (256, 64))
        #expect(config.linearShape("q_proj") == nil, "Phi-3 layers have no separate q_proj")
        #expect(config.headDim == 16 && config.partialRotaryFactor == 0.75 && config.rotaryDim == 12)
        let scaling = try #require(config.ropeScaling)
        #expect(scaling.type == "longrope" && scaling.originalMaxPositions == 8 && scaling.factor == 4)
        // transformers' default attention factor: sqrt(1 + ln(factor) / ln(original)).
        #expect(scaling.attentionFactor == (1 + log(4.0) / log(8.0)).squareRoot())
        #expect(scaling.shortFactor == [1, 1.25, 1.5, 2, 2.5, 3] && scaling.longFactor == [1.5, 2, 4, 8, 16, 32])
        #expect(!scaling.usesLongFactors(sequenceLength: 8) && scaling.usesLongFactors(sequenceLength: 9))
        #expect(config.layerTypes == [.sliding, .sliding] && config.attentionWindow(layer: 1) == 7)
        #expect(!config.attentionBias && !config.mlpBias && config.layerNorms == [.input, .preMLP])
        let file = try SafeTensorsFile(path: Self.family.url("model/model.safetensors").path)
        #expect(config.totalParameterCount == (try file.names.reduce(0) { $0 + (try file.info($1)).shape.reduce(1, *) }))
        #expect(file.names.contains("model.layers.1.self_attn.qkv_proj.weight") && file.names.contains("model.layers.1.mlp.gate_up_proj.weight"))
        let summary = config.architectureSummary
        #expect(summary.contains("fused qkv / gate_up") && summary.contains("RoPE on 12 of 16 dims") && summary.contains("LongRoPE from 8 positions"))
    }

    /// The inverse frequencies of both LongRoPE sets over the rotary dims, and cos / sin scaled by the
    /// attention factor; the dims past the rotary ones pass through untouched.
    @Test func longRoPETablesAndPartialRotation() throws {
        let config = try Self.family.config()
        let scaling = config.ropeScaling!
        for long in [false, true] {
            let table = RoPETable(headDim: 16, rotaryDim: 12, maxPositions: 10, theta: 10_000, scaling: scaling, longFactors: long)
            let factors = long ? scaling.longFactor : scaling.shortFactor
            for i in 0..<6 {
                let expected = 1 / (factors[i] * pow(10_000, Double(2 * i) / 12))
                #expect(abs(Double(table.inverseFrequencies[i]) - expected) <= 1e-6 * expected, "inv_freq[\(i)] long \(long)")
            }
            #expect(table.cos[0] == Float(scaling.attentionFactor) && table.sin[0] == 0)
            var x = (0..<32).map { Float($0) + 1 }   // 2 heads of 16
            let before = x
            var position: Int32 = 5
            x.withUnsafeMutableBufferPointer { table.apply($0.baseAddress!, positions: &position, rows: 1, heads: 2) }
            for h in 0..<2 { #expect(Array(x[(h * 16 + 12)..<(h * 16 + 16)]) == Array(before[(h * 16 + 12)..<(h * 16 + 16)])) }
            #expect(x[0] != before[0] && x[6] != before[6])
            x.withUnsafeMutableBufferPointer { table.applyBackward($0.baseAddress!, positions: &position, rows: 1, heads: 2) }
            // Rotation and its transpose: back to the input times the attention factor squared.
            let a2 = Float(scaling.attentionFactor * scaling.attentionFactor)
            for i in 0..<12 { #expect(abs(x[i] - before[i] * a2) <= 1e-4 * abs(before[i] * a2)) }
        }
    }

    /// Phi-4-mini's and Phi-3's flat keys (rope_scaling, top-level partial_rotary_factor and rope_theta) read
    /// the same as transformers 5's rope_parameters; the older "su" / "yarn" names are LongRoPE, as
    /// Phi3Config renames them; a null rope_scaling is plain RoPE (Phi-3-mini-4k).
    @Test func flatKeysAndOlderNames() throws {
        let modern = try Self.family.config()
        var json = try Self.json()
        let rope = json.removeValue(forKey: "rope_parameters") as! [String: Any]
        json["rope_theta"] = rope["rope_theta"]
        json["partial_rotary_factor"] = rope["partial_rotary_factor"]
        json["rope_scaling"] = ["type": "longrope", "short_factor": rope["short_factor"]!, "long_factor": rope["long_factor"]!]
        #expect(try Self.decode(json) == modern)
        for old in ["su", "yarn"] {
            json["rope_scaling"] = ["type": old, "short_factor": rope["short_factor"]!, "long_factor": rope["long_factor"]!]
            #expect(try Self.decode(json).ropeScaling?.type == "longrope", "\(old)")
        }
        json["rope_scaling"] = NSNull()
        let plain = try Self.decode(json)
        #expect(plain.ropeScaling == nil && plain.rotaryDim == 12)
        // Phi3Config's class default original_max_position_embeddings is 4096, and an explicit factor and
        // attention_factor win over the derived ones.
        json["original_max_position_embeddings"] = nil
        json["rope_scaling"] = ["type": "longrope", "short_factor": rope["short_factor"]!, "long_factor": rope["long_factor"]!,
                                "factor": 2.0, "attention_factor": 1.5]
        let explicit = try Self.decode(json).ropeScaling!
        #expect(explicit.originalMaxPositions == 4096 && explicit.factor == 2 && explicit.attentionFactor == 1.5)
    }

    /// A config written for the model (no source config.json) reads back as the same switches.
    @Test func writtenConfigReadsBackEqual() throws {
        let config = try Self.family.config()
        let written = PythonJSON.dumps(LlamaWriter.minimalConfig(config, dtype: "float32"))
        var reread = try LlamaConfig.decode(Data(written.utf8), path: "written config.json")
        reread.dtype = config.dtype
        #expect(reread == config)
        #expect(written.contains("\"Phi3ForCausalLM\""))
    }

    @Test func refusedConfigsNameTheKey() throws {
        var json = try Self.json()
        json["attention_bias"] = true
        #expect(Self.refusal(json).contains("'attention_bias': true"))
        json = try Self.json()
        var rope = json["rope_parameters"] as! [String: Any]
        rope["rope_type"] = "dynamic"
        json["rope_parameters"] = rope
        #expect(Self.refusal(json).contains("rope type 'dynamic'"))
        rope["rope_type"] = "longrope"
        rope["long_factor"] = [1.0, 2.0]
        json["rope_parameters"] = rope
        #expect(Self.refusal(json).contains("'long_factor' must be 6 positive numbers"))
        rope["long_factor"] = nil
        json["rope_parameters"] = rope
        #expect(Self.refusal(json).contains("longrope needs 'long_factor'"))
        json = try Self.json()
        rope = json["rope_parameters"] as! [String: Any]
        rope = ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.7]   // 16 * 0.7 = 11 dims: odd
        json["rope_parameters"] = rope
        #expect(Self.refusal(json).contains("partial_rotary_factor (11) must be even"))
        // Partial rotary is Phi-3's: another family asking for it is refused, not run wrongly. LongRoPE
        // tables are any family's, as in transformers (a Llama 3.1 GGUF's rope_freqs is one): without
        // the partial rotary, this config's 6 factors no longer cover head_dim / 2 = 8 frequencies.
        json = try Self.json()
        json["model_type"] = "llama"
        #expect(Self.refusal(json).contains("partial_rotary_factor 0.75"))
        rope = json["rope_parameters"] as! [String: Any]
        rope["partial_rotary_factor"] = nil
        json["rope_parameters"] = rope
        #expect(Self.refusal(json).contains("'short_factor' must be 8 positive numbers"))
    }

    /// PEFT's phi3 targets are the fused modules: one lora_A (r, C) and one lora_B (q+2kv, r) for qkv_proj.
    @Test func loraTargetsTheFusedModules() throws {
        let config = try Self.family.config()
        let all = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 4, loraAlpha: 8))
        let shapes = Dictionary(uniqueKeysWithValues: all.parameters.entries.map { ($0.key, $0.shape) })
        #expect(shapes.count == 2 * 4 * 2)
        #expect(shapes["base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"] == [4, 64])
        #expect(shapes["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"] == [128, 4])
        #expect(shapes["base_model.model.model.layers.1.mlp.gate_up_proj.lora_B.weight"] == [256, 4])
        #expect(PEFTAdapterIO.configJSON(all.config, model: config)["target_modules"]
                == .array(["down_proj", "gate_up_proj", "o_proj", "qkv_proj"].map(JSONValue.string)))
        let only = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["qkv_proj"]))
        #expect(only.parameters.entries.count == 4)
        do {
            _ = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj"]))
            Issue.record("q_proj accepted on a model that has qkv_proj")
        } catch {
            #expect("\(error)".contains("target module 'q_proj' is not a linear of model_type phi3"))
        }
    }

    /// The LoRA GGUF of a Phi-3 adapter: llama.cpp's phi3 names for the fused linears (attn_qkv, and
    /// gate_up under ffn_up), nothing permuted (llama.cpp's phi3 rotates NeoX-style, as HF).
    @Test func ggufAdapterUsesLlamaCppsPhi3Names() throws {
        let model = try Self.family.model()
        let adapters = try Self.family.adapter(for: model, training: false)
        let writer = try GGUFAdapterExport.writer(adapters, architecture: "phi3")
        let tensors = Dictionary(uniqueKeysWithValues: writer.tensors.map { ($0.name, $0) })
        #expect(tensors.count == 2 * 4 * 2)
        let b = try #require(tensors["blk.1.attn_qkv.weight.lora_b"])
        #expect(b.dimensions == [4, 128] && tensors["blk.0.ffn_up.weight.lora_b"]?.dimensions == [4, 256])
        let entry = adapters.parameters.entry("base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight")!
        #expect(b.bytes == adapters.parameters.values(entry).withUnsafeBytes { Array($0) })
    }

    /// llama.cpp's `phi3` GGUF of the same model (Fixtures/gguf-model/tiny-phi3.gguf, F32) reads as the
    /// same switches and computes the checkpoint's logits bit for bit, so transformers' within tolerance;
    /// a merge written back to GGUF keeps the LongRoPE factor tensors; `qlora quantize` of the GGUF writes
    /// a config.json that reads as the same switches.
    @Test func llamaCppPhi3GGUFIsTheSameModel() throws {
        let url = FixturePaths.url("gguf-model/tiny-phi3.gguf")
        let gguf = try LlamaConfig.load(directory: url)
        var expected = try Self.family.config()
        expected.modelType = "phi3"
        #expect(gguf.fusedProjections && gguf.rotaryDim == 12 && gguf.layerTypes == [.sliding, .sliding] && gguf.slidingWindow == 7)
        let scaling = try #require(gguf.ropeScaling)
        #expect(scaling.shortFactor == expected.ropeScaling!.shortFactor && scaling.longFactor == expected.ropeScaling!.longFactor)
        #expect(scaling.originalMaxPositions == 8 && scaling.factor == 4)
        // Stored as f32 by the converter; the tables use it as f32 either way.
        #expect(Float(scaling.attentionFactor) == Float(expected.ropeScaling!.attentionFactor))
        let fromGGUF = try LlamaLoader.load(directory: url, format: .dense32, precision: .fp32)
        let fromSafeTensors = try Self.family.model()
        let reference = try Self.family.reference()
        let ids = try FamilyReferenceTests.Family.batch(reference).ids
        func logits(_ model: LlamaModel) throws -> [Float] {
            let executor = LlamaExecutor(model: model, lora: nil, shape: .init(batch: 2, seqLen: 12, training: false))
            try executor.forward(inputIDs: ids, batch: 2, seqLen: 12)
            var out = [Float](repeating: 0, count: 2 * 12 * model.config.vocabSize)
            out.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
            return out
        }
        let ggufLogits = try logits(fromGGUF)
        #expect(ggufLogits == (try logits(fromSafeTensors)))
        #expect(FamilyReferenceTests.Family.relativeError(ggufLogits, try reference.floats("base.logits")) <= FamilyReferenceTests.Family.tolerance)
        let prompt = try reference.integers("greedy.prompt").map { Int32($0) }
        #expect(try Generator(model: fromGGUF, lora: nil, maxSeqLen: 13).generate(prompt: prompt, maxNewTokens: 8)
                == (try reference.integers("greedy.base").map { Int32($0) }))

        let out = NSTemporaryDirectory() + "phi3-merged-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try GGUFModelWriter.write(fromGGUF, base: try GGUFFile(path: url.path), type: .f32, to: out)
        let written = try GGUFFile(path: out)
        #expect(try written.floats("rope_factors_long.weight") == (try GGUFFile(path: url.path).floats("rope_factors_long.weight")))
        #expect(try LlamaConfig.load(directory: URL(fileURLWithPath: out)) == gguf)

        let quantized = NSTemporaryDirectory() + "phi3-nf4-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: quantized) }
        _ = try GGUFCheckpointQuantizer.quantize(input: url.path, output: quantized)
        var reread = try LlamaConfig.load(directory: URL(fileURLWithPath: quantized))
        reread.quantizationConfig = nil
        reread.dtype = gguf.dtype
        var ggufWithoutTokens = gguf
        (ggufWithoutTokens.bosTokenID, ggufWithoutTokens.eosTokenIDs, ggufWithoutTokens.padTokenID) = (reread.bosTokenID, reread.eosTokenIDs, reread.padTokenID)
        #expect(reread == ggufWithoutTokens)
    }

    /// A Llama-layout checkpoint under model_type phi3 (or the reverse) is refused by tensor name.
    @Test func splitCheckpointUnderPhi3IsRefused() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("phi3-as-llama-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.family.url("model/model.safetensors"), to: directory.appendingPathComponent("model.safetensors"))
        var json = try Self.json()
        json["model_type"] = "llama"
        json["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0]
        try JSONSerialization.data(withJSONObject: json).write(to: directory.appendingPathComponent("config.json"))
        do {
            _ = try LlamaLoader.load(directory: directory, format: .dense32, precision: .fp32)
            Issue.record("a fused checkpoint loaded as llama")
        } catch {
            #expect("\(error)".contains("model.layers.0.self_attn.qkv_proj.weight"), "\(error)")
        }
    }

    /// The LoRA plan (the fused output buffer, one adapter per fused module) equals what the executor and
    /// the decoder hold, with and without checkpointing, and for generation past the original length.
    @Test(arguments: [false, true])
    func loraPlanEqualsLive(_ checkpointing: Bool) throws {
        let model = try LlamaLoader.load(directory: Self.family.url("model"), format: FamilyReferenceTests.nf4, precision: .fp32)
        let lora = try Self.family.adapter(for: model)
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: checkpointing))
        var options = MemoryPlan.Options(baseFormat: FamilyReferenceTests.nf4, lora: lora.config, batch: 2, seqLen: 12,
                                         gradientCheckpointing: checkpointing)
        options.runtimeOverheadBytes = 0
        let plan = try MemoryPlan(config: model.config, options: options)
        let live = LiveMemory.breakdown(executor: executor)
        for category in MemoryCategory.allCases where category != .runtimeOverhead && category != .trainableParameters
            && category != .gradients && category != .optimizerState {
            #expect(plan.breakdown[category] == live[category], "\(category)")
        }
        #expect(plan.trainableParameterCount == lora.parameters.parameterCount)
        #expect(executor.layout.fused >= 0)
        // Both LongRoPE table sets past the original length: counted by the plan as built.
        let decoder = IncrementalDecoder(model: model, lora: lora, maxSeqLen: 20)
        let planned = IncrementalDecoder.bytes(config: model.config, maxSeqLen: 20, loraRank: lora.config.r)
        #expect(planned.cache + planned.working == decoder.bytes)
    }
}
