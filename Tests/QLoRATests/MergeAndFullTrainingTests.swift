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
            for projection in model.config.layerProjections {
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

/// bf16 mixed-precision full fine-tuning: bf16 working copies of the linears for the GEMMs, fp32
/// master weights, gradients and AdamW state.
@Suite struct MixedPrecisionFullTrainingTests {
    @Test func workingCopiesAreTheRoundedMastersAndGradientsStayCloseToFP32() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        let ids = try reference.integers("input_ids").map { Int32($0) }, labels = try reference.integers("labels").map { Int32($0) }
        var gradients: [FullFineTuning.Precision: [Float]] = [:]
        for precision in [FullFineTuning.Precision.fp32, .bf16Mixed] {
            let full = try FullFineTuning(copying: model, precision: precision)
            let executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients, shape: .init(batch: 2, seqLen: 12))
            full.parameters.zeroGradients()
            _ = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
            gradients[precision] = full.parameters.values(full.parameters.entry("model.layers.1.mlp.down_proj.weight")!, section: 1)
            // Plan == live, byte for byte, for both precisions.
            var options = MemoryPlan.Options(baseFormat: precision.planFormat, computePrecision: precision.compute, lora: nil, batch: 2, seqLen: 12)
            options.runtimeOverheadBytes = 0
            let plan = try MemoryPlan(config: model.config, options: options)
            let live = LiveMemory.breakdown(full: full, executor: executor)
            for category in MemoryCategory.allCases where category != .runtimeOverhead {
                #expect(plan.breakdown[category] == live[category], "\(precision) \(category)")
            }
            guard precision == .bf16Mixed else { continue }
            let copy = try #require(full.model.layers[0].linears[0].weight.bfloat16Storage)
            let master = full.parameters.entry("model.layers.0.self_attn.q_proj.weight")!
            var values = full.parameters.values(master)
            #expect((0..<values.count).allSatisfy { copy[$0] == HalfFloat.bfloat16FromFloat(values[$0]) })
            // An update reaches the copies only when they are refreshed.
            for i in values.indices { values[i] += 0.001 * Float(i % 7) }
            full.parameters.setValues(master, values)
            #expect(!(0..<values.count).allSatisfy { copy[$0] == HalfFloat.bfloat16FromFloat(values[$0]) })
            full.refreshWorkingCopies()
            #expect((0..<values.count).allSatisfy { copy[$0] == HalfFloat.bfloat16FromFloat(values[$0]) })
            // The masters are what is exported: fp32 values that bf16 cannot hold survive.
            let exported = try full.exportModel(format: .dense32, precision: .fp32)
            let saved = try #require(exported.layers[0].linears[0].weight.denseStorage)
            #expect((0..<values.count).allSatisfy { saved[$0] == values[$0] })
            #expect(values.contains { UInt32($0.bitPattern) & 0xFFFF != 0 })
        }
        // bf16 GEMM inputs: the gradient moves by bf16's rounding, not more.
        let exact = gradients[.fp32]!, mixed = gradients[.bf16Mixed]!
        let difference = zip(exact, mixed).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }.squareRoot()
        let norm = exact.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
        #expect(norm > 0 && difference / norm < 2e-2, "relative difference \(difference / norm)")
        #expect(difference > 0, "bf16 compute must differ from fp32 somewhere")
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

    @Test func unknownModulesToSaveAreRefused() {
        #expect(throws: LoRAError.self) { try LoRAConfig(modulesToSave: ["norm"]).validate() }
    }
}

@Suite struct ModulesToSaveTests {
    /// With B = 0 (PEFT's init) the adapters do not change the function, so the gradients of the full
    /// embed_tokens / lm_head copies must equal full fine-tuning's gradients of the same weights.
    @Test func moduleGradientsEqualFullFineTuning() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        let ids = try reference.integers("input_ids").map { Int32($0) }, labels = try reference.integers("labels").map { Int32($0) }

        let config = LoRAConfig(r: 4, loraAlpha: 8, modulesToSave: ["embed_tokens", "lm_head"])
        let adapters = try LoRAAdapters(modelConfig: model.config, config: config)
        adapters.initialize(seed: 1)
        adapters.initializeModulesToSave(from: model)
        let executor = LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 2, seqLen: 12))
        adapters.parameters.zeroGradients()
        _ = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)

        let full = try FullFineTuning(copying: model)
        let fullExecutor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients, shape: .init(batch: 2, seqLen: 12))
        full.parameters.zeroGradients()
        _ = try fullExecutor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)

        for (module, fullKey) in [("lm_head", "lm_head.weight"), ("embed_tokens", "model.embed_tokens.weight")] {
            let ours = adapters.parameters.values(adapters.trainedModule(module)!, section: 1)
            let theirs = full.parameters.values(full.parameters.entry(fullKey)!, section: 1)
            let result = compare(ours, theirs, tolerance: 1e-6)
            #expect(result.maxDiff <= 1e-6, "\(module): \(result.report)")
            #expect(ours.contains { $0 != 0 })
        }
        // The frozen weights are still counted once, as frozen; the copies as trainable.
        let live = LiveMemory.breakdown(executor: executor)
        #expect(live[.otherFrozenWeights] == model.frozenBytes.other)
        var options = MemoryPlan.Options(baseFormat: .dense32, computePrecision: .fp32, lora: config)
        options.batch = 2
        options.seqLen = 12
        let plan = try MemoryPlan(config: model.config, options: options)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            #expect(plan.breakdown[category] == live[category], "\(category)")
        }
    }

    /// Trained copies travel with the adapter (PEFT's keys) and reach generation and merge.
    @Test func trainedModulesAreSavedLoadedAndMerged() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8, modulesToSave: ["lm_head"]))
        adapters.initialize(seed: 2)
        adapters.initializeModulesToSave(from: model)
        let head = adapters.trainedModule("lm_head")!
        var values = adapters.parameters.values(head)
        for i in stride(from: 0, to: values.count, by: 7) { values[i] += 0.25 }   // as if trained
        adapters.parameters.setValues(head, values)

        let out = FileManager.default.temporaryDirectory.appendingPathComponent("mts-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try PEFTAdapterIO.save(adapters, to: out)
        let file = try SafeTensorsFile(path: out.appendingPathComponent(PEFTAdapterIO.weightsFile).path)
        #expect(try file.info("base_model.model.lm_head.weight").shape == [1024, 96])
        let reloaded = try PEFTAdapterIO.load(directory: out, modelConfig: model.config)
        #expect(reloaded.parameters.values(reloaded.trainedModule("lm_head")!) == values)

        let merged = try LoRAMerge.merge(model: model, adapters: reloaded)
        let mergedHead = [Float](unsafeUninitializedCapacity: values.count) { buffer, count in
            merged.lmHead.weight.writeTile(rows: 0..<1024, into: buffer.baseAddress!, precision: .fp32)
            count = values.count
        }
        #expect(mergedHead == values)
        // Generation sees the trained head: logits differ from the base model's.
        let withAdapter = Generator(model: model, lora: reloaded, maxSeqLen: 8)
        let without = Generator(model: model, lora: nil, maxSeqLen: 8)
        var a: [Float] = [], b: [Float] = []
        _ = try withAdapter.generate(prompt: [5, 6, 7], maxNewTokens: 1, onToken: { _, logits in a = logits })
        _ = try without.generate(prompt: [5, 6, 7], maxNewTokens: 1, onToken: { _, logits in b = logits })
        #expect(a != b)
    }

    @Test func tiedModelsRefuseModulesToSave() throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("tiny-llama/tied-fp32"))
        #expect(throws: LoRAError.self) { try LoRAAdapters(modelConfig: config, config: LoRAConfig(modulesToSave: ["lm_head"])) }
    }
}

@Suite struct TrainingInvariantsTests {
    static func batch() throws -> (ids: [Int32], labels: [Int32]) {
        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        return (try reference.integers("input_ids").map { Int32($0) }, try reference.integers("labels").map { Int32($0) })
    }

    /// Every byte of the frozen base (NF4 codes and statistics, embeddings, norms, lm_head) is the same
    /// after training as before: only the adapters' arena is written.
    @Test func trainingNeverWritesTheBase() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-nf4"), format: .quantized(QuantizationOptions()), precision: .bf16)
        func snapshot() -> [[Float]] {
            var all: [[Float]] = [model.embedTokens.floats(), Array(model.norm)]
            for layer in model.layers {
                all.append(Array(layer.inputLayernorm))
                all.append(Array(layer.preMLPNorm))
                for linear in layer.linears {
                    all.append([Float](unsafeUninitializedCapacity: linear.outFeatures * linear.inFeatures) { out, count in
                        linear.weight.writeTile(rows: 0..<linear.outFeatures, into: out.baseAddress!, precision: .fp32)
                        count = linear.outFeatures * linear.inFeatures
                    })
                }
            }
            all.append([Float](unsafeUninitializedCapacity: 1024 * 96) { out, count in
                model.lmHead.weight.writeTile(rows: 0..<1024, into: out.baseAddress!, precision: .fp32)
                count = 1024 * 96
            })
            return all
        }
        let packedBefore = model.layers.map { $0.linears.map { ($0.weight as! QuantizedWeight).tensor.packed } }
        let before = snapshot()
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8))
        adapters.initialize(seed: 3)
        let executor = LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: true))
        var optimizer = AdamW(learningRate: 1e-2)
        let (ids, labels) = try Self.batch()
        for _ in 0..<3 {
            adapters.parameters.zeroGradients()
            _ = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
            optimizer.update(adapters.parameters)
        }
        #expect(adapters.parameters.values(adapters.parameters.entries[1]).contains { $0 != 0 }, "the adapters did train")
        #expect(snapshot() == before)
        #expect(model.layers.map { $0.linears.map { ($0.weight as! QuantizedWeight).tensor.packed } } == packedBefore)
    }

    /// Two micro-batches of one sequence, accumulated with the loss averaged over all their targets,
    /// give the gradients of the one batch of two sequences.
    @Test func gradientAccumulationEqualsTheWholeBatch() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let (ids, labels) = try Self.batch()
        func gradients(micro: Bool) throws -> (loss: Double, grads: [Float]) {
            let adapters = try PEFTAdapterIO.load(directory: FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_init"),
                                                  modelConfig: model.config, training: true)
            let executor = LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 2, seqLen: 12))
            struct Rows: BatchSource {
                let ids: [Int32], labels: [Int32], micro: Bool
                func batch(step: Int, micro index: Int) -> TokenBatch {
                    guard micro else { return TokenBatch(inputIDs: ids, labels: labels, batch: 2, seqLen: 12) }
                    let rows = (12 * index)..<(12 * index + 12)
                    return TokenBatch(inputIDs: Array(ids[rows]), labels: Array(labels[rows]), batch: 1, seqLen: 12)
                }
            }
            var options = TrainerOptions()
            options.gradientAccumulationSteps = micro ? 2 : 1
            options.maxGradNorm = nil
            options.learningRate = 0   // look at the gradients only
            let trainer = Trainer(executor: executor, parameters: adapters.parameters, options: options)
            let report = try trainer.trainStep(Rows(ids: ids, labels: labels, micro: micro))
            return (report.loss, Array(UnsafeBufferPointer(start: adapters.parameters.gradients, count: adapters.parameters.count)))
        }
        let whole = try gradients(micro: false), accumulated = try gradients(micro: true)
        #expect(abs(whole.loss - accumulated.loss) < 1e-6)
        #expect(abs(whole.loss - 7.349911) < 1e-5)
        let result = compare(accumulated.grads, whole.grads, tolerance: 1e-6)
        #expect(result.maxDiff <= 1e-6, "\(result.report)")
    }
}

@Suite struct EmbeddingStorageTests {
    /// A bf16 checkpoint keeps its embedding table and untied lm_head in bf16: half the bytes, and on the
    /// fp32 kernel the very same logits and gradients as widening them to fp32 (the values are bf16 either
    /// way). On the bf16 kernel a bf16 head also computes in bf16, as transformers does for such a checkpoint.
    @Test func bf16TablesAreLosslessAndHalfTheSize() throws {
        let source = FixturePaths.url("tiny-llama/untied-bf16")
        let widened = FileManager.default.temporaryDirectory.appendingPathComponent("bf16-as-fp32-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: widened) }
        try FileManager.default.createDirectory(at: widened, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: widened.appendingPathComponent("model.safetensors"))
        let config = try String(contentsOf: source.appendingPathComponent("config.json"), encoding: .utf8)
        try config.replacingOccurrences(of: "\"bfloat16\"", with: "\"float32\"")
            .write(to: widened.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)

        let bf16 = try LlamaLoader.load(directory: source, format: .quantized(QuantizationOptions()), precision: .bf16)
        let fp32 = try LlamaLoader.load(directory: widened, format: .quantized(QuantizationOptions()), precision: .bf16)
        #expect(bf16.config.frozenTableStorage == .bfloat16 && fp32.config.frozenTableStorage == .float32)
        #expect(bf16.lmHead.precision == .bf16 && fp32.lmHead.precision == .fp32)
        bf16.useKernel(.fp32)
        fp32.useKernel(.fp32)
        #expect(fp32.frozenBytes.other - bf16.frozenBytes.other == 2 * 1024 * 96 * 2)

        let reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        let ids = try reference.integers("input_ids").map { Int32($0) }, labels = try reference.integers("labels").map { Int32($0) }
        func run(_ model: LlamaModel) throws -> (loss: Double, grads: [Float]) {
            let adapters = try PEFTAdapterIO.load(directory: FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_init"),
                                                  modelConfig: model.config, training: true)
            let executor = LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 2, seqLen: 12))
            let loss = try executor.lossAndGradients(inputIDs: ids, labels: labels, batch: 2, seqLen: 12)
            return (loss.sum, Array(UnsafeBufferPointer(start: adapters.parameters.gradients, count: adapters.parameters.count)))
        }
        let a = try run(bf16), b = try run(fp32)
        #expect(a.loss == b.loss)
        #expect(a.grads == b.grads)
    }
}
