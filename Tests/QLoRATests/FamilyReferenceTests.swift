import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// One tiny random model per family (Fixtures/<family>, made by scripts/make-family-fixtures.py) against
/// transformers + PEFT + bitsandbytes, through the one decoder block: logits, loss, LoRA gradients (fp32
/// and NF4 bases, with and without checkpointing), the norm gradients of full fine-tuning and its
/// memory plan, greedy KV-cache decoding, and the writers (PEFT adapter, bitsandbytes checkpoint, merge).
/// qwen3: per-head q/k norms, explicit head_dim. gemma3: (1 + w) norms, GeGLU, sandwich norms, the
/// embedding scale, query_pre_attn_scalar, sliding-window layers with a local RoPE, a logit soft-cap.
/// smollm3: a layer without RoPE (no_rope_layers). phi3: fused qkv_proj / gate_up_proj (one adapter
/// each), partial rotary, LongRoPE past its original length, a sliding window on every layer.
@Suite struct FamilyReferenceTests {
    struct Family: CustomStringConvertible, Sendable {
        var name: String
        var description: String { name }

        /// Relative tolerance of every comparison: ||ours - theirs|| / ||theirs||.
        static let tolerance = 1e-4

        func url(_ path: String) -> URL { FixturePaths.url("\(name)/\(path)") }
        func config() throws -> LlamaConfig { try LlamaConfig.load(directory: url("model")) }
        func model() throws -> LlamaModel { try LlamaLoader.load(directory: url("model"), format: .dense32, precision: .fp32) }
        func reference() throws -> SafeTensorsFile { try SafeTensorsFile(path: url("reference.safetensors").path) }
        func adapter(for model: LlamaModel, training: Bool = true) throws -> LoRAAdapters {
            try PEFTAdapterIO.load(directory: url("adapter"), modelConfig: model.config, training: training)
        }

        static func batch(_ reference: SafeTensorsFile) throws -> (ids: [Int32], labels: [Int32]) {
            (try reference.integers("input_ids").map { Int32($0) }, try reference.integers("labels").map { Int32($0) })
        }

        /// ||a - b|| / ||b|| in Double.
        static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
            precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
            var difference = 0.0, norm = 0.0
            for i in a.indices {
                let d = Double(a[i]) - Double(b[i])
                difference += d * d
                norm += Double(b[i]) * Double(b[i])
            }
            return (difference / max(norm, .leastNormalMagnitude)).squareRoot()
        }
    }

    static let families = [Family(name: "qwen3"), Family(name: "gemma3"), Family(name: "smollm3"), Family(name: "phi3")]
    static let nf4 = BaseWeightFormat.quantized(QuantizationOptions())

    // MARK: - Forward

    struct ForwardCase: CustomStringConvertible, Sendable {
        var family: Family
        var prefix: String      // "base." or "lora."
        var training: Bool
        var description: String { "\(family) \(prefix)\(training ? " training arena" : " inference arena")" }
    }

    @Test(arguments: families.flatMap { family in [ForwardCase(family: family, prefix: "base.", training: false),
                                                   ForwardCase(family: family, prefix: "lora.", training: false),
                                                   ForwardCase(family: family, prefix: "lora.", training: true)] })
    func logitsAndLossMatchTransformers(_ c: ForwardCase) throws {
        let model = try c.family.model()
        let lora = c.prefix == "lora." ? try c.family.adapter(for: model, training: c.training) : nil
        let reference = try c.family.reference()
        let (ids, labels) = try Family.batch(reference)
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 2, seqLen: 12, training: c.training))
        try executor.forward(inputIDs: ids, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * model.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        let logitsError = Family.relativeError(logits, try reference.floats(c.prefix + "logits"))
        let loss = executor.loss(labels: labels)
        let expectedLoss = try reference.floats(c.prefix + "loss")[0]
        let lossError = abs(loss.sum / Double(loss.count) - Double(expectedLoss)) / Double(expectedLoss)
        print("\(c): logits rel err \(logitsError), loss rel err \(lossError)")
        #expect(loss.count == 16)
        #expect(logitsError <= Family.tolerance, "\(c) logits")
        #expect(lossError <= Family.tolerance, "\(c) loss \(loss.sum / Double(loss.count)) vs \(expectedLoss)")
    }

    // MARK: - Backward

    struct GradientCase: CustomStringConvertible, Sendable {
        var family: Family
        var prefix: String       // the reference's "lora." (fp32 base) or "nf4." (bitsandbytes NF4, fp32 compute)
        var modelDir: String
        var format: BaseWeightFormat
        var checkpointing: Bool
        var description: String { "\(family) \(prefix) \(modelDir)\(checkpointing ? " ckpt" : "")" }
    }

    static let gradientCases: [GradientCase] = families.flatMap { family in [false, true].flatMap { checkpointing in [
        GradientCase(family: family, prefix: "lora.", modelDir: "model", format: .dense32, checkpointing: checkpointing),
        // bitsandbytes' own 4-bit checkpoint, and the fp32 one quantized on load (the same bytes).
        GradientCase(family: family, prefix: "nf4.", modelDir: "model-nf4", format: nf4, checkpointing: checkpointing),
        GradientCase(family: family, prefix: "nf4.", modelDir: "model", format: nf4, checkpointing: checkpointing),
    ] } }

    /// Every lora_A / lora_B gradient, through the q/k norms into q_proj's and k_proj's adapters.
    @Test(arguments: gradientCases)
    func loraGradientsMatchPEFT(_ c: GradientCase) throws {
        let model = try LlamaLoader.load(directory: c.family.url(c.modelDir), format: c.format, precision: .fp32)
        let lora = try c.family.adapter(for: model)
        let reference = try c.family.reference()
        let (ids, labels) = try Family.batch(reference)
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: c.checkpointing))
        lora.parameters.zeroGradients()
        let loss = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
        let expectedLoss = Double(try reference.floats(c.prefix + "loss")[0])
        let lossError = abs(loss.sum / Double(loss.count) - expectedLoss) / expectedLoss
        #expect(lossError <= Family.tolerance, "\(c) loss \(loss.sum / Double(loss.count)) vs \(expectedLoss)")
        var worst = 0.0, worstKey = ""
        #expect(lora.parameters.entries.count == model.config.numHiddenLayers * model.config.layerProjections.count * 2)
        for entry in lora.parameters.entries {
            let expected = try reference.floats(c.prefix + "grad." + entry.key)
            #expect(expected.contains { $0 != 0 }, "\(entry.key): the reference gradient is zero")
            let error = Family.relativeError(lora.parameters.values(entry, section: 1), expected)
            if error > worst { (worst, worstKey) = (error, entry.key) }
            #expect(error <= Family.tolerance, "\(c) grad \(entry.key): relative error \(error)")
        }
        print("\(c): loss rel err \(lossError), worst grad rel err \(worst) (\(worstKey))")
    }

    /// Full fine-tuning trains the q/k norm weights too: their gradients (and every other norm's) against
    /// transformers' on the base alone.
    @Test(arguments: families)
    func fullFineTuningNormGradientsMatchTransformers(_ family: Family) throws {
        let model = try family.model()
        let full = try FullFineTuning(copying: model)
        // The plan's full fine-tuning arena is this one, q/k norms included.
        #expect(TrainableParameters.arenaFloats(shapes: MemoryPlan.allParameterShapes(config: model.config)) == full.parameters.count)
        #expect(full.parameters.parameterCount == model.config.totalParameterCount)
        let reference = try family.reference()
        let (ids, labels) = try Family.batch(reference)
        for checkpointing in [false, true] {
            let executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients,
                                         shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: checkpointing))
            full.parameters.zeroGradients()
            let loss = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
            let expectedLoss = Double(try reference.floats("base.loss")[0])
            #expect(abs(loss.sum / Double(loss.count) - expectedLoss) / expectedLoss <= Family.tolerance)
            let names = reference.names.filter { $0.hasPrefix("base.grad.") }
            #expect(names.count == model.config.numHiddenLayers * model.config.layerNorms.count + 1)
            #expect(names.contains("base.grad.model.layers.0.self_attn.q_norm.weight") == model.config.qkNorm)
            var worst = 0.0
            for name in names {
                let key = String(name.dropFirst("base.grad.".count))
                let entry = try #require(full.parameters.entry(key), "\(key) is not trained")
                let error = Family.relativeError(full.parameters.values(entry, section: 1), try reference.floats(name))
                worst = max(worst, error)
                #expect(error <= Family.tolerance, "\(key)\(checkpointing ? " ckpt" : ""): relative error \(error)")
            }
            print("\(family) full fine-tuning\(checkpointing ? " ckpt" : ""): worst norm grad rel err \(worst)")
        }
    }

    /// Both full fine-tuning precisions: planned == live byte for byte (q/k norms in the arena, read in
    /// place); bf16 mixed precision's norm gradients stay near transformers' fp32 ones.
    @Test(arguments: families, [FullFineTuning.Precision.fp32, .bf16Mixed])
    func fullFineTuningPlanEqualsLive(_ family: Family, _ precision: FullFineTuning.Precision) throws {
        let model = try family.model()
        let full = try FullFineTuning(copying: model, precision: precision)
        #expect(full.model.layers.allSatisfy { ($0.qNorm != nil && $0.kNorm != nil) == model.config.qkNorm })
        let reference = try family.reference()
        let (ids, labels) = try Family.batch(reference)
        let executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients, shape: .init(batch: 2, seqLen: 12))
        full.parameters.zeroGradients()
        _ = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
        var options = MemoryPlan.Options(baseFormat: precision.planFormat, computePrecision: precision.compute, lora: nil, batch: 2, seqLen: 12)
        options.runtimeOverheadBytes = 0
        let plan = try MemoryPlan(config: model.config, options: options)
        let live = LiveMemory.breakdown(full: full, executor: executor)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            #expect(plan.breakdown[category] == live[category], "\(precision) \(category)")
        }
        // The q/k norm gradient this bound was set for (bf16 mixed precision against transformers' fp32).
        guard model.config.qkNorm else { return }
        let key = model.config.normTensorName(layer: 0, .key)
        let error = Family.relativeError(full.parameters.values(full.parameters.entry(key)!, section: 1), try reference.floats("base.grad." + key))
        #expect(error <= (precision == .fp32 ? Family.tolerance : 2e-2), "\(precision) \(key): relative error \(error)")
    }

    // MARK: - Generation

    /// transformers' greedy KV-cache decoding (8 tokens), alone and batched (`generateBatch`: base and
    /// adapter side by side through one step decoder).
    @Test(arguments: families)
    func greedyDecodingMatchesTransformers(_ family: Family) throws {
        let model = try family.model()
        let lora = try family.adapter(for: model, training: false)
        let reference = try family.reference()
        let prompt = try reference.integers("greedy.prompt").map { Int32($0) }
        let expectedBase = try reference.integers("greedy.base").map { Int32($0) }
        let expectedLoRA = try reference.integers("greedy.lora").map { Int32($0) }
        if family.name == "qwen3" { #expect(expectedBase != expectedLoRA, "the adapter changes the continuation") }
        let maxSeqLen = prompt.count + expectedBase.count
        #expect(try Generator(model: model, lora: nil, maxSeqLen: maxSeqLen).generate(prompt: prompt, maxNewTokens: 8) == expectedBase)
        #expect(try Generator(model: model, lora: lora, maxSeqLen: maxSeqLen).generate(prompt: prompt, maxNewTokens: 8) == expectedLoRA)
        let batched = try Generator.generateBatch(model: model, requests: [(prompt, nil), (prompt, lora)], maxNewTokens: 8)
        #expect(batched == [expectedBase, expectedLoRA])
    }

    /// The cached keys are normed and rotated: every step's logits equal a full re-run of the sequence.
    @Test(arguments: families)
    func cachedLogitsEqualFullRecompute(_ family: Family) throws {
        let model = try family.model()
        let lora = try family.adapter(for: model, training: false)
        let prompt: [Int32] = [1, 40, 7, 250, 3, 3, 99]
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 1, seqLen: 20, logitsChunkRows: 1, training: false))
        let decoder = IncrementalDecoder(model: model, lora: lora, maxSeqLen: 20, chunkRows: 3)
        var sequence = prompt
        var logits = try decoder.append(prompt)
        for step in 0..<10 {
            let expected = try GeneratorTests.fullRecomputeLogits(executor, sequence)
            let error = Family.relativeError(logits, expected)
            #expect(error <= 1e-5, "step \(step): relative error \(error)")
            let next = Int32(expected.indices.max { expected[$0] < expected[$1] }!)
            sequence.append(next)
            logits = try decoder.append([next])
        }
    }

    // MARK: - Writers

    /// Our saved adapter is PEFT's file: same keys, shapes and bytes; adapter_config.json the same fields.
    @Test(arguments: families)
    func savedAdapterIsPEFTs(_ family: Family) throws {
        let model = try family.model()
        let adapters = try family.adapter(for: model)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("\(family)-adapter-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try PEFTAdapterIO.save(adapters, to: out)
        let theirs = family.url("adapter")
        let ourFile = try SafeTensorsFile(path: out.appendingPathComponent(PEFTAdapterIO.weightsFile).path)
        let theirFile = try SafeTensorsFile(path: theirs.appendingPathComponent(PEFTAdapterIO.weightsFile).path)
        #expect(ourFile.names.sorted() == theirFile.names.sorted())
        let firstLinear = LlamaConfig.modulePath(layer: 1, model.config.layerProjections[0])
        #expect(theirFile.names.contains("base_model.model.\(firstLinear).lora_A.weight"))
        #expect(try Data(contentsOf: out.appendingPathComponent(PEFTAdapterIO.weightsFile))
                == (try Data(contentsOf: theirs.appendingPathComponent(PEFTAdapterIO.weightsFile))))
        var ours = try JSONValue.parse(data: Data(contentsOf: out.appendingPathComponent(PEFTAdapterIO.configFile))).members!
        var peft = try JSONValue.parse(data: Data(contentsOf: theirs.appendingPathComponent(PEFTAdapterIO.configFile))).members!
        ours["base_model_name_or_path"] = nil
        peft["base_model_name_or_path"] = nil
        #expect(ours == peft)
    }

    /// `qlora quantize` of the fp32 checkpoint is bitsandbytes' 4-bit checkpoint byte for byte: the
    /// linears packed, q_norm / k_norm (like every norm) kept as F32 tensors.
    @Test(arguments: families)
    func quantizeKeepsQKNormsAsBitsAndBytesDoes(_ family: Family) throws {
        let output = NSTemporaryDirectory() + "qlora-\(family)-nf4-\(getpid())-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        var options = QuantizeOptions()
        options.computeDType = .F32   // the reference was quantized with bnb_4bit_compute_dtype float32
        let summary = try CheckpointQuantizer.quantize(input: family.url("model").path, output: output, options: options)
        let config = try family.config()
        #expect(summary.tensorsQuantized == config.layerProjections.count * config.numHiddenLayers)
        let expected = family.url("model-nf4")
        let got = try SafeTensorsFile(path: output + "/model.safetensors")
        for name in got.names where name.hasSuffix("norm.weight") {
            #expect(try got.info(name).dtype == .F32 && got.info(name).shape.count == 1, "\(name)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/model.safetensors"))
                == (try Data(contentsOf: expected.appendingPathComponent("model.safetensors"))), "model.safetensors")
        #expect(try String(contentsOfFile: output + "/config.json", encoding: .utf8)
                == (try String(contentsOf: expected.appendingPathComponent("config.json"), encoding: .utf8)), "config.json")
    }

    /// Merged and written as a Hugging Face directory: q_norm / k_norm come along, and the merged model
    /// computes the adapter's logits.
    @Test(arguments: families)
    func mergedModelKeepsQKNormsAndTheAdaptersLogits(_ family: Family) throws {
        let model = try family.model()
        let merged = try LoRAMerge.merge(model: model, adapters: try family.adapter(for: model, training: false))
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("\(family)-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try LlamaWriter.save(merged, to: out, sourceConfig: try Data(contentsOf: family.url("model/config.json")))
        let written = try SafeTensorsFile(path: out.appendingPathComponent("model.safetensors").path)
        let source = try SafeTensorsFile(path: family.url("model/model.safetensors").path)
        #expect(written.names.sorted() == source.names.sorted())
        for name in source.names where name.hasSuffix("norm.weight") { #expect(try written.floats(name) == source.floats(name), "\(name)") }
        // Every merged linear (Phi-3's fused ones among them) is PEFT's merge_and_unload bit for bit.
        let meta = try JSONValue.parse(data: Data(contentsOf: family.url("meta.json")))
        let hashes = try #require(meta["merged_fnv1a64"]?.members)
        #expect(hashes.count == merged.config.numHiddenLayers * merged.config.layerProjections.count)
        for (name, hash) in hashes {
            #expect(String(format: "%016llx", fnv1a64(try written.rawBytes(name))) == hash.stringValue, "\(name) differs from merge_and_unload")
        }
        let reloaded = try LlamaLoader.load(directory: out, format: .dense32, precision: .fp32)
        let reference = try family.reference()
        let executor = LlamaExecutor(model: reloaded, lora: nil, shape: .init(batch: 2, seqLen: 12, training: false))
        try executor.forward(inputIDs: try Family.batch(reference).ids, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * reloaded.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        #expect(Family.relativeError(logits, try reference.floats("lora.logits")) <= Family.tolerance)
    }

}
