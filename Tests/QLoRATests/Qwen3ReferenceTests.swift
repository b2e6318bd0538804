import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// Qwen3 through the one decoder block (per-head q/k RMSNorm before RoPE, explicit head_dim, tied
/// embeddings) against transformers + PEFT + bitsandbytes on the tiny random Qwen3 of Fixtures/qwen3
/// (scripts/make-qwen3-fixtures.py): logits, loss, LoRA gradients (fp32 and NF4 bases, with and without
/// checkpointing), the norm gradients of full fine-tuning, greedy KV-cache decoding, and the writers.
@Suite struct Qwen3ReferenceTests {
    /// Relative tolerance of every comparison: ||ours - theirs|| / ||theirs||.
    static let tolerance = 1e-4
    static let modelDir = FixturePaths.url("qwen3/model")
    static let nf4 = BaseWeightFormat.quantized(QuantizationOptions())

    static func reference() throws -> SafeTensorsFile {
        try SafeTensorsFile(path: FixturePaths.url("qwen3/reference.safetensors").path)
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

    static func adapter(for model: LlamaModel, training: Bool = true) throws -> LoRAAdapters {
        try PEFTAdapterIO.load(directory: FixturePaths.url("qwen3/adapter"), modelConfig: model.config, training: training)
    }

    @Test func configSwitchesOnQKNormAndExplicitHeadDim() throws {
        let config = try LlamaConfig.load(directory: Self.modelDir)
        #expect(config.modelType == "qwen3" && config.qkNorm && !config.qkvBiasOnly && !config.attentionBias)
        #expect(config.headDim == 32 && config.queryDim == 128 && config.keyValueDim == 64, "head_dim is not hidden / heads (16)")
        #expect(config.tieWordEmbeddings && config.rmsNormEps == 1e-6 && config.ropeTheta == 1_000_000)
        // Every weight of the checkpoint: q_norm and k_norm (D each) included.
        let file = try SafeTensorsFile(path: Self.modelDir.appendingPathComponent("model.safetensors").path)
        let stored = try file.names.reduce(0) { $0 + (try file.info($1)).shape.reduce(1, *) }
        #expect(config.totalParameterCount == stored)
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        #expect(model.layers.allSatisfy { $0.qNorm?.count == 32 && $0.kNorm?.count == 32 })
        #expect(Array(model.layers[1].kNorm!) == (try file.floats("model.layers.1.self_attn.k_norm.weight")))
    }

    // MARK: - Forward

    struct ForwardCase: CustomStringConvertible, Sendable {
        var prefix: String      // "base." or "lora."
        var training: Bool
        var description: String { "\(prefix)\(training ? " training arena" : " inference arena")" }
    }

    @Test(arguments: [ForwardCase(prefix: "base.", training: false), ForwardCase(prefix: "lora.", training: false),
                      ForwardCase(prefix: "lora.", training: true)])
    func logitsAndLossMatchTransformers(_ c: ForwardCase) throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let lora = c.prefix == "lora." ? try Self.adapter(for: model, training: c.training) : nil
        let reference = try Self.reference()
        let (ids, labels) = try Self.batch(reference)
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 2, seqLen: 12, training: c.training))
        try executor.forward(inputIDs: ids, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * model.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        let logitsError = Self.relativeError(logits, try reference.floats(c.prefix + "logits"))
        let loss = executor.loss(labels: labels)
        let expectedLoss = try reference.floats(c.prefix + "loss")[0]
        let lossError = abs(loss.sum / Double(loss.count) - Double(expectedLoss)) / Double(expectedLoss)
        print("qwen3 \(c): logits rel err \(logitsError), loss rel err \(lossError)")
        #expect(loss.count == 16)
        #expect(logitsError <= Self.tolerance, "\(c) logits")
        #expect(lossError <= Self.tolerance, "\(c) loss \(loss.sum / Double(loss.count)) vs \(expectedLoss)")
    }

    // MARK: - Backward

    struct GradientCase: CustomStringConvertible, Sendable {
        var prefix: String       // the reference's "lora." (fp32 base) or "nf4." (bitsandbytes NF4, fp32 compute)
        var modelDir: String
        var format: BaseWeightFormat
        var checkpointing: Bool
        var description: String { "\(prefix) \(modelDir)\(checkpointing ? " ckpt" : "")" }
    }

    static let gradientCases: [GradientCase] = [false, true].flatMap { checkpointing in [
        GradientCase(prefix: "lora.", modelDir: "qwen3/model", format: .dense32, checkpointing: checkpointing),
        // bitsandbytes' own 4-bit checkpoint, and the fp32 one quantized on load (the same bytes).
        GradientCase(prefix: "nf4.", modelDir: "qwen3/model-nf4", format: nf4, checkpointing: checkpointing),
        GradientCase(prefix: "nf4.", modelDir: "qwen3/model", format: nf4, checkpointing: checkpointing),
    ] }

    /// Every lora_A / lora_B gradient, through the q/k norms into q_proj's and k_proj's adapters.
    @Test(arguments: gradientCases)
    func loraGradientsMatchPEFT(_ c: GradientCase) throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url(c.modelDir), format: c.format, precision: .fp32)
        let lora = try Self.adapter(for: model)
        let reference = try Self.reference()
        let (ids, labels) = try Self.batch(reference)
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: c.checkpointing))
        lora.parameters.zeroGradients()
        let loss = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
        let expectedLoss = Double(try reference.floats(c.prefix + "loss")[0])
        let lossError = abs(loss.sum / Double(loss.count) - expectedLoss) / expectedLoss
        #expect(lossError <= Self.tolerance, "\(c) loss \(loss.sum / Double(loss.count)) vs \(expectedLoss)")
        var worst = 0.0, worstKey = ""
        #expect(lora.parameters.entries.count == 2 * 7 * 2)
        for entry in lora.parameters.entries {
            let expected = try reference.floats(c.prefix + "grad." + entry.key)
            #expect(expected.contains { $0 != 0 }, "\(entry.key): the reference gradient is zero")
            let error = Self.relativeError(lora.parameters.values(entry, section: 1), expected)
            if error > worst { (worst, worstKey) = (error, entry.key) }
            #expect(error <= Self.tolerance, "\(c) grad \(entry.key): relative error \(error)")
        }
        print("qwen3 \(c): loss rel err \(lossError), worst grad rel err \(worst) (\(worstKey))")
    }

    /// Full fine-tuning trains the q/k norm weights too: their gradients (and every other norm's) against
    /// transformers' on the base alone.
    @Test func fullFineTuningNormGradientsMatchTransformers() throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let full = try FullFineTuning(copying: model)
        // The plan's full fine-tuning arena is this one, q/k norms included.
        #expect(TrainableParameters.arenaFloats(shapes: MemoryPlan.allParameterShapes(config: model.config)) == full.parameters.count)
        #expect(full.parameters.parameterCount == model.config.totalParameterCount)
        let reference = try Self.reference()
        let (ids, labels) = try Self.batch(reference)
        for checkpointing in [false, true] {
            let executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients,
                                         shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: checkpointing))
            full.parameters.zeroGradients()
            let loss = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
            let expectedLoss = Double(try reference.floats("base.loss")[0])
            #expect(abs(loss.sum / Double(loss.count) - expectedLoss) / expectedLoss <= Self.tolerance)
            let names = reference.names.filter { $0.hasPrefix("base.grad.") }
            #expect(names.count == 2 * 4 + 1 && names.contains("base.grad.model.layers.0.self_attn.q_norm.weight"))
            var worst = 0.0
            for name in names {
                let key = String(name.dropFirst("base.grad.".count))
                let entry = try #require(full.parameters.entry(key), "\(key) is not trained")
                let error = Self.relativeError(full.parameters.values(entry, section: 1), try reference.floats(name))
                worst = max(worst, error)
                #expect(error <= Self.tolerance, "\(key)\(checkpointing ? " ckpt" : ""): relative error \(error)")
            }
            print("qwen3 full fine-tuning\(checkpointing ? " ckpt" : ""): worst norm grad rel err \(worst)")
        }
    }

    /// Both full fine-tuning precisions: planned == live byte for byte (q/k norms in the arena, read in
    /// place); bf16 mixed precision's norm gradients stay near transformers' fp32 ones.
    @Test(arguments: [FullFineTuning.Precision.fp32, .bf16Mixed])
    func fullFineTuningPlanEqualsLive(_ precision: FullFineTuning.Precision) throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let full = try FullFineTuning(copying: model, precision: precision)
        #expect(full.model.layers.allSatisfy { $0.qNorm != nil && $0.kNorm != nil })
        let reference = try Self.reference()
        let (ids, labels) = try Self.batch(reference)
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
        let key = "model.layers.0.self_attn.k_norm.weight"
        let error = Self.relativeError(full.parameters.values(full.parameters.entry(key)!, section: 1), try reference.floats("base.grad." + key))
        #expect(error <= (precision == .fp32 ? Self.tolerance : 2e-2), "\(precision) \(key): relative error \(error)")
    }

    // MARK: - Generation

    /// transformers' greedy KV-cache decoding (8 tokens), alone and batched (`generateBatch`: base and
    /// adapter side by side through one step decoder).
    @Test func greedyDecodingMatchesTransformers() throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let lora = try Self.adapter(for: model, training: false)
        let reference = try Self.reference()
        let prompt = try reference.integers("greedy.prompt").map { Int32($0) }
        let expectedBase = try reference.integers("greedy.base").map { Int32($0) }
        let expectedLoRA = try reference.integers("greedy.lora").map { Int32($0) }
        #expect(expectedBase != expectedLoRA, "the adapter changes the continuation")
        let maxSeqLen = prompt.count + expectedBase.count
        #expect(try Generator(model: model, lora: nil, maxSeqLen: maxSeqLen).generate(prompt: prompt, maxNewTokens: 8) == expectedBase)
        #expect(try Generator(model: model, lora: lora, maxSeqLen: maxSeqLen).generate(prompt: prompt, maxNewTokens: 8) == expectedLoRA)
        let batched = try Generator.generateBatch(model: model, requests: [(prompt, nil), (prompt, lora)], maxNewTokens: 8)
        #expect(batched == [expectedBase, expectedLoRA])
    }

    /// The cached keys are normed and rotated: every step's logits equal a full re-run of the sequence.
    @Test func cachedLogitsEqualFullRecompute() throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let lora = try Self.adapter(for: model, training: false)
        let prompt: [Int32] = [1, 40, 7, 250, 3, 3, 99]
        let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 1, seqLen: 20, logitsChunkRows: 1, training: false))
        let decoder = IncrementalDecoder(model: model, lora: lora, maxSeqLen: 20, chunkRows: 3)
        var sequence = prompt
        var logits = try decoder.append(prompt)
        for step in 0..<10 {
            let expected = try GeneratorTests.fullRecomputeLogits(executor, sequence)
            let error = Self.relativeError(logits, expected)
            #expect(error <= 1e-5, "step \(step): relative error \(error)")
            let next = Int32(expected.indices.max { expected[$0] < expected[$1] }!)
            sequence.append(next)
            logits = try decoder.append([next])
        }
    }

    // MARK: - Writers

    /// Our saved adapter is PEFT's file: same keys, shapes and bytes; adapter_config.json the same fields.
    @Test func savedAdapterIsPEFTs() throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let adapters = try Self.adapter(for: model)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("qwen3-adapter-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try PEFTAdapterIO.save(adapters, to: out)
        let theirs = FixturePaths.url("qwen3/adapter")
        let ourFile = try SafeTensorsFile(path: out.appendingPathComponent(PEFTAdapterIO.weightsFile).path)
        let theirFile = try SafeTensorsFile(path: theirs.appendingPathComponent(PEFTAdapterIO.weightsFile).path)
        #expect(ourFile.names.sorted() == theirFile.names.sorted())
        #expect(theirFile.names.contains("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"))
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
    @Test func quantizeKeepsQKNormsAsBitsAndBytesDoes() throws {
        let output = NSTemporaryDirectory() + "qlora-qwen3-nf4-\(getpid())-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        var options = QuantizeOptions()
        options.computeDType = .F32   // the reference was quantized with bnb_4bit_compute_dtype float32
        let summary = try CheckpointQuantizer.quantize(input: Self.modelDir.path, output: output, options: options)
        #expect(summary.tensorsQuantized == 14)
        let expected = FixturePaths.url("qwen3/model-nf4")
        let got = try SafeTensorsFile(path: output + "/model.safetensors")
        for name in ["model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"] {
            #expect(try got.info(name).dtype == .F32 && got.info(name).shape == [32], "\(name)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/model.safetensors"))
                == (try Data(contentsOf: expected.appendingPathComponent("model.safetensors"))), "model.safetensors")
        #expect(try String(contentsOfFile: output + "/config.json", encoding: .utf8)
                == (try String(contentsOf: expected.appendingPathComponent("config.json"), encoding: .utf8)), "config.json")
    }

    /// Merged and written as a Hugging Face directory: q_norm / k_norm come along, and the merged model
    /// computes the adapter's logits.
    @Test func mergedModelKeepsQKNormsAndTheAdaptersLogits() throws {
        let model = try LlamaLoader.load(directory: Self.modelDir, format: .dense32, precision: .fp32)
        let merged = try LoRAMerge.merge(model: model, adapters: try Self.adapter(for: model, training: false))
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("qwen3-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try LlamaWriter.save(merged, to: out, sourceConfig: try Data(contentsOf: Self.modelDir.appendingPathComponent("config.json")))
        let written = try SafeTensorsFile(path: out.appendingPathComponent("model.safetensors").path)
        let source = try SafeTensorsFile(path: Self.modelDir.appendingPathComponent("model.safetensors").path)
        #expect(written.names.sorted() == source.names.sorted())
        #expect(try written.floats("model.layers.0.self_attn.q_norm.weight") == source.floats("model.layers.0.self_attn.q_norm.weight"))
        let reloaded = try LlamaLoader.load(directory: out, format: .dense32, precision: .fp32)
        let reference = try Self.reference()
        let executor = LlamaExecutor(model: reloaded, lora: nil, shape: .init(batch: 2, seqLen: 12, training: false))
        try executor.forward(inputIDs: try Self.batch(reference).ids, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * reloaded.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        #expect(Self.relativeError(logits, try reference.floats("lora.logits")) <= Self.tolerance)
    }

    // MARK: - Bad input

    /// A copy of the fixture's config.json with `edit` applied, in a fresh directory (with the weights).
    static func editedModel(_ edit: (inout [String: Any]) -> Void, dropping tensor: String? = nil) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qwen3-edited-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: modelDir.appendingPathComponent("config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(path: modelDir.appendingPathComponent("model.safetensors").path)
        let tensors = try file.names.filter { $0 != tensor }.map { name in
            let info = try file.info(name)
            return (TensorEntry(name: name, dtype: info.dtype, shape: info.shape), Data(try file.rawBytes(name)))
        }
        try SafeTensorsWriter.write(path: dir.appendingPathComponent("model.safetensors").path, tensors: tensors)
        return dir
    }

    static func message(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "no error" } catch { return "\(error)" }
    }

    @Test func badConfigsAndCheckpointsNameTheKeyOrTensor() throws {
        func load(_ dir: URL) throws -> LlamaModel { try LlamaLoader.load(directory: dir, format: .dense32, precision: .fp32) }
        let cases: [(edit: (inout [String: Any]) -> Void, drop: String?, mentions: [String])] = [
            ({ $0["model_type"] = "qwen3_moe" }, nil, ["model_type 'qwen3_moe'", "qwen3"]),
            ({ $0["use_sliding_window"] = true }, nil, ["use_sliding_window"]),
            ({ $0["attention_bias"] = "no" }, nil, ["'attention_bias'"]),
            ({ $0["tie_word_embeddings"] = 1.5 }, nil, ["'tie_word_embeddings'"]),
            ({ _ in }, "model.layers.0.self_attn.q_norm.weight", ["'model.layers.0.self_attn.q_norm.weight' is missing"]),
            ({ _ in }, "model.layers.1.self_attn.k_norm.weight", ["'model.layers.1.self_attn.k_norm.weight' is missing"]),
            // The same weights declared as Llama: the norms it would skip are refused, by name.
            ({ $0["model_type"] = "llama" }, nil, ["self_attn.", "_norm.weight", "qwen3"]),
        ]
        for c in cases {
            let dir = try Self.editedModel(c.edit, dropping: c.drop)
            defer { try? FileManager.default.removeItem(at: dir) }
            let text = Self.message { try load(dir) }
            for word in c.mentions { #expect(text.contains(word), "\(text)") }
        }
        // Qwen3Config's default head_dim is 128, not hidden / heads.
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.modelDir.appendingPathComponent("config.json"))) as! [String: Any]
        json["head_dim"] = nil
        json["hidden_size"] = 256
        let config = try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json")
        #expect(config.headDim == 128)
        json["model_type"] = "qwen2"
        #expect(try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json").headDim == 64)
    }
}
