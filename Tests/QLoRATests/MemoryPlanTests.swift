import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// The memory plan (config + options only) against the real buffers: QuantizedTensor sizes, the frozen
/// model, the LoRA arena and the executor's activation arena, per category.
@Suite struct MemoryPlanTests {
    // MARK: - Quantized weight bytes == QuantizedTensor

    struct QuantCase: CustomStringConvertible, Sendable {
        var shape: [Int]
        var blocksize: Int
        var doubleQuant: Bool
        var description: String { "\(shape) bs \(blocksize) \(doubleQuant ? "dq" : "plain")" }
    }

    /// Partial last blocks, odd element counts (a half-filled packed byte), several nested blocks.
    static let quantCases: [QuantCase] = {
        let shapes = [[96, 96], [32, 96], [264, 96], [3, 67], [7, 90], [150, 110], [300, 300], [1, 33]]
        var cases: [QuantCase] = []
        for shape in shapes {
            for blocksize in [32, 64, 128, 256, 4096] {
                for doubleQuant in [true, false] { cases.append(QuantCase(shape: shape, blocksize: blocksize, doubleQuant: doubleQuant)) }
            }
        }
        return cases
    }()

    @Test(arguments: quantCases)
    func quantizedBytesMatchQuantizedTensor(_ c: QuantCase) throws {
        let n = c.shape.reduce(1, *)
        var generator = QLoRA.SeededGenerator(seed: UInt64(n * 31 + c.blocksize))
        let values = (0..<n).map { _ in generator.normal() }
        let tensor = try QuantizedTensor.quantize(values, shape: c.shape, blocksize: c.blocksize, doubleQuant: c.doubleQuant)
        #expect(QuantizedWeightBytes.storage(elements: n, blocksize: c.blocksize, doubleQuant: c.doubleQuant) == tensor.storageBytes)
        #expect(QuantizedWeightBytes.resident(elements: n, blocksize: c.blocksize, doubleQuant: c.doubleQuant) == tensor.residentBytes)
        #expect(tensor.residentBytes == tensor.storageBytes, "nothing precomputed: resident == stored")
        if c.shape.count == 2 {
            let options = QuantizationOptions(blocksize: c.blocksize, doubleQuant: c.doubleQuant)
            #expect(QuantizedWeightBytes.resident(elements: n, options: options) == QuantizedWeight(tensor).storageBytes)
        }
    }

    // MARK: - Plan == live buffers

    static let nf4 = BaseWeightFormat.quantized(QuantizationOptions())
    static let fp4Plain = BaseWeightFormat.quantized(QuantizationOptions(quantType: .fp4, blocksize: 128, doubleQuant: false))

    struct LiveCase: CustomStringConvertible, Sendable {
        var name: String
        var model: String          // a Fixtures/tiny-llama directory, or "random:<variant>"
        var format: BaseWeightFormat
        var lora: LoRAConfig
        var batch: Int
        var seqLen: Int
        var checkpointing: Bool
        var training = true
        var tileRows = 256
        var logitsChunkRows = 64
        var description: String { name }
    }

    static let allLinear = LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"])
    static let qvLayer1 = LoRAConfig(r: 8, loraAlpha: 16, targetModules: ["q_proj", "v_proj"], layersToTransform: [1])
    static let mlpDropout = LoRAConfig(r: 2, loraAlpha: 4, loraDropout: 0.1, targetModules: ["gate_proj", "up_proj", "down_proj"])

    static let liveCases: [LiveCase] = [
        LiveCase(name: "fp32 all-linear", model: "tiny-llama/untied-fp32", format: .dense32, lora: allLinear, batch: 2, seqLen: 12, checkpointing: false),
        LiveCase(name: "fp32 all-linear ckpt", model: "tiny-llama/untied-fp32", format: .dense32, lora: allLinear, batch: 2, seqLen: 12, checkpointing: true),
        LiveCase(name: "nf4 all-linear", model: "tiny-llama/untied-fp32", format: nf4, lora: allLinear, batch: 1, seqLen: 16, checkpointing: false),
        LiveCase(name: "nf4 all-linear ckpt", model: "tiny-llama/untied-fp32", format: nf4, lora: allLinear, batch: 3, seqLen: 5, checkpointing: true),
        LiveCase(name: "nf4 qv layer1", model: "tiny-llama/untied-fp32", format: nf4, lora: qvLayer1, batch: 2, seqLen: 7, checkpointing: false),
        LiveCase(name: "nf4 qv layer1 ckpt", model: "tiny-llama/untied-fp32", format: nf4, lora: qvLayer1, batch: 2, seqLen: 7, checkpointing: true),
        LiveCase(name: "bf16 mlp dropout", model: "tiny-llama/untied-fp32", format: .denseBF16, lora: mlpDropout, batch: 1, seqLen: 9, checkpointing: true),
        LiveCase(name: "tied fp32", model: "tiny-llama/tied-fp32", format: .dense32, lora: allLinear, batch: 2, seqLen: 4, checkpointing: false),
        LiveCase(name: "tied nf4 small tiles", model: "tiny-llama/tied-fp32", format: nf4, lora: allLinear, batch: 2, seqLen: 4,
                 checkpointing: true, tileRows: 32, logitsChunkRows: 3),
        LiveCase(name: "nf4 inference", model: "tiny-llama/untied-fp32", format: nf4, lora: allLinear, batch: 2, seqLen: 6,
                 checkpointing: false, training: false),
        LiveCase(name: "random GQA biases fp4", model: "random:qkv-bias", format: fp4Plain, lora: allLinear, batch: 2, seqLen: 6, checkpointing: false),
        LiveCase(name: "random GQA biases bf16 ckpt", model: "random:qkv-bias", format: .denseBF16, lora: qvLayer1, batch: 1, seqLen: 10, checkpointing: true),
        LiveCase(name: "random tied odd dims nf4", model: "random:tied-odd", format: nf4, lora: allLinear, batch: 3, seqLen: 3, checkpointing: true),
        LiveCase(name: "random tied odd dims fp32", model: "random:tied-odd", format: .dense32, lora: mlpDropout, batch: 1, seqLen: 11, checkpointing: false),
        // Qwen3: the q/k norms' saved inputs and rstds, their shared normed q/k, their weights as other frozen weights.
        LiveCase(name: "qwen3 fp32 all-linear", model: "qwen3/model", format: .dense32, lora: allLinear, batch: 2, seqLen: 12, checkpointing: false),
        LiveCase(name: "qwen3 nf4 all-linear ckpt", model: "qwen3/model", format: nf4, lora: allLinear, batch: 3, seqLen: 5, checkpointing: true),
        LiveCase(name: "qwen3 bnb nf4 qv layer1", model: "qwen3/model-nf4", format: nf4, lora: qvLayer1, batch: 2, seqLen: 7, checkpointing: false),
        LiveCase(name: "qwen3 nf4 inference", model: "qwen3/model", format: nf4, lora: allLinear, batch: 2, seqLen: 6,
                 checkpointing: false, training: false),
        LiveCase(name: "random qwen3 attention bias bf16 ckpt", model: "random:qwen3-bias", format: .denseBF16, lora: mlpDropout,
                 batch: 2, seqLen: 5, checkpointing: true),
        LiveCase(name: "random qwen3 attention bias fp4", model: "random:qwen3-bias", format: fp4Plain, lora: allLinear,
                 batch: 1, seqLen: 9, checkpointing: false),
    ]

    /// Small random architectures the fixtures do not cover: Qwen2-style q/k/v biases with GQA, Qwen3 with
    /// attention_bias (biases on q, k, v and o) and odd sizes, and a tied model whose sizes are no multiple
    /// of 16 or 64 (padding and partial blocks everywhere).
    static func randomConfig(_ variant: String) -> LlamaConfig {
        switch variant {
        case "qwen3-bias":
            var config = LlamaConfig(vocabSize: 151, hiddenSize: 40, intermediateSize: 72, numHiddenLayers: 2,
                                     numAttentionHeads: 3, numKeyValueHeads: 1, headDim: 18, modelType: "qwen3")
            config.qkNorm = true
            config.attentionBias = true
            return config
        case "qkv-bias":
            var config = LlamaConfig(vocabSize: 300, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                                     numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16)
            config.qkvBiasOnly = true
            config.mlpBias = true
            return config
        default:
            return LlamaConfig(vocabSize: 131, hiddenSize: 50, intermediateSize: 94, numHiddenLayers: 3,
                               numAttentionHeads: 5, numKeyValueHeads: 1, headDim: 10, tieWordEmbeddings: true)
        }
    }

    static func model(_ c: LiveCase) throws -> LlamaModel {
        if c.model.hasPrefix("random:") {
            return try LlamaLoader.random(config: randomConfig(String(c.model.dropFirst(7))), format: c.format, precision: .bf16, seed: 7)
        }
        return try LlamaLoader.load(directory: FixturePaths.url(c.model), format: c.format, precision: .bf16)
    }

    static func options(_ c: LiveCase) -> MemoryPlan.Options {
        MemoryPlan.Options(baseFormat: c.format, computePrecision: .bf16, lora: c.lora, batch: c.batch, seqLen: c.seqLen,
                           gradientCheckpointing: c.checkpointing, training: c.training, tileRows: c.tileRows,
                           logitsChunkRows: c.logitsChunkRows)
    }

    @Test(arguments: liveCases)
    func planEqualsLiveBuffers(_ c: LiveCase) throws {
        let model = try Self.model(c)
        let options = Self.options(c)
        let plan = try MemoryPlan(config: model.config, options: options)
        let lora = try LoRAAdapters(modelConfig: model.config, config: c.lora, training: c.training)
        let executor = LlamaExecutor(model: model, lora: lora, shape: options.activationShape)
        let live = LiveMemory.breakdown(executor: executor)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            #expect(plan.breakdown[category] == live[category], "\(category.rawValue): planned \(plan.breakdown[category]), live \(live[category])")
        }
        #expect(plan.breakdown[.otherFrozenWeights] == model.frozenBytes.other)
        #expect(plan.breakdown[.quantizedWeights] == model.frozenBytes.quantized)
        #expect(plan.trainableParameterCount == lora.parameters.parameterCount)
        #expect(plan.breakdown[.runtimeOverhead] == RuntimeOverhead.measuredBytes)
        if case .quantized = c.format {
            #expect(plan.quantizedParameterCount == model.config.decoderLinearParameterCount)
            #expect(plan.breakdown[.quantizedWeights] > 0)
        } else {
            #expect(plan.breakdown[.quantizedWeights] == 0)
        }
    }

    /// Sizes whose byte counts would overflow are refused, naming the option (they printed negative TiB).
    @Test func absurdSizesAreRefused() throws {
        let config = Self.randomConfig("qkv-bias")
        for (batch, seqLen, option) in [(1, 99_999_999_999_999, "seq-len"), (99_999_999, 1 << 20, "batch x seq-len"), (Int.max / 2, 4, "batch x seq-len")] {
            let options = MemoryPlan.Options(baseFormat: Self.nf4, lora: Self.allLinear, batch: batch, seqLen: seqLen)
            #expect(throws: MemoryPlanError.badOption(option: option, reason: "")) {
                do { _ = try MemoryPlan(config: config, options: options) } catch MemoryPlanError.badOption(let name, _) {
                    throw MemoryPlanError.badOption(option: name, reason: "")
                }
            }
        }
        let fine = try MemoryPlan(config: config, options: MemoryPlan.Options(baseFormat: Self.nf4, lora: Self.allLinear, batch: 64, seqLen: 1 << 20))
        #expect(fine.breakdown.total > 0)
    }

    @Test func sgdKeepsNoOptimizerState() throws {
        let config = Self.randomConfig("qkv-bias")
        var options = MemoryPlan.Options(baseFormat: Self.nf4, lora: Self.allLinear, batch: 2, seqLen: 8)
        let adamw = try MemoryPlan(config: config, options: options)
        options.optimizer = .sgd
        let sgd = try MemoryPlan(config: config, options: options)
        #expect(sgd.breakdown[.optimizerState] == 0)
        #expect(adamw.breakdown[.optimizerState] == 2 * adamw.breakdown[.trainableParameters])
        for category in MemoryCategory.allCases where category != .optimizerState {
            #expect(sgd.breakdown[category] == adamw.breakdown[category])
        }
    }

    // MARK: - Full fine-tuning

    @Test(arguments: ["tiny-llama/untied-fp32", "tiny-llama/tied-fp32", "configs/llama-3-8b.json", "configs/smollm2-135m.json",
                      "qwen3/model", "configs/qwen3-0.6b.json", "configs/qwen3-8b.json"])
    func fullFineTuningCountsEveryParameter(_ path: String) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url(path))
        let shapes = MemoryPlan.allParameterShapes(config: config)
        #expect(shapes.reduce(0) { $0 + $1.reduce(1, *) } == config.totalParameterCount)
        let section = TrainableParameters.arenaFloats(shapes: shapes) * 4
        var options = MemoryPlan.Options(baseFormat: .dense32, lora: nil, batch: 1, seqLen: 16)
        let fp32 = try MemoryPlan(config: config, options: options)
        options.baseFormat = .denseBF16
        let mixed = try MemoryPlan(config: config, options: options)
        #expect(fp32.options.method == .fullFP32 && mixed.options.method == .fullBF16Mixed)
        #expect(fp32.trainableParameterCount == config.totalParameterCount)
        // fp32: weights 4 + grads 4 + AdamW 8 bytes; bf16 mixed: + 2 for each element of a linear (the
        // working copies the GEMMs read) and of an untied lm_head.
        #expect(fp32.breakdown[.trainableParameters] == section)
        let linears = config.numHiddenLayers * config.layerLinears.reduce(0) { $0 + config.linearShape($1)!.outFeatures * config.linearShape($1)!.inFeatures }
        let head = config.tieWordEmbeddings ? 0 : config.vocabSize * config.hiddenSize
        #expect(mixed.breakdown[.trainableParameters] == section + 2 * (linears + head))
        for plan in [fp32, mixed] {
            #expect(plan.breakdown[.gradients] == section)
            #expect(plan.breakdown[.optimizerState] == 2 * section)
            #expect(plan.breakdown[.quantizedWeights] == 0 && plan.breakdown[.otherFrozenWeights] == 0)
            let counts = ActivationLayout.counts(config: config, lora: nil, shape: options.activationShape)
            #expect(plan.breakdown[.activations] == counts.saved * 4)
        }
    }

    // MARK: - Published configs

    @Test(arguments: [("llama-2-7b", 6_738_415_616), ("llama-3-8b", 8_030_261_248), ("llama-3-70b", 70_553_706_496),
                      ("smollm2-135m", 134_515_008), ("tinyllama-1.1b", 1_100_048_384),
                      // Qwen3 (q/k norms, head_dim 128): 0.6B by hand in Fixtures/configs/README.md.
                      ("qwen3-0.6b", 596_049_920), ("qwen3-1.7b", 1_720_574_976), ("qwen3-4b", 4_022_468_096),
                      ("qwen3-8b", 8_190_735_360),
                      // Gemma 3 (four norms per layer, head_dim 256): 270M and 1B as published; 4B is its text decoder.
                      ("gemma3-270m", 268_098_176), ("gemma3-1b", 999_885_952), ("gemma3-4b", 3_880_263_168),
                      ("smollm3-3b", 3_075_098_624),
                      // Phi-4-mini (fused qkv / gate_up, tied): HF's 3,836,021,760.
                      ("phi-4-mini", 3_836_021_760)])
    func publishedConfigsHaveTheirPublishedParameterCounts(_ name: String, _ parameters: Int) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/\(name).json"))
        #expect(config.totalParameterCount == parameters)
    }

    @Test(arguments: ["llama-2-7b", "llama-3-8b", "llama-3-70b", "smollm2-135m", "tinyllama-1.1b", "qwen3-0.6b", "qwen3-1.7b",
                      "qwen3-4b", "qwen3-8b", "gemma3-270m", "gemma3-1b", "gemma3-4b", "smollm3-3b", "phi-4-mini"])
    func largeConfigsPlanWithoutWeights(_ name: String) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/\(name).json"))
        let start = Date()
        let options = MemoryPlan.Options(seqLen: 2048, gradientCheckpointing: true)
        let plans = try MemoryPlan.compareSet(config: config, options: options)
        let elapsed = Date().timeIntervalSince(start)
        print("memory plan \(name): 4 plans in \(String(format: "%.2f", elapsed * 1000)) ms (debug build)")
        #expect(plans.count == 4)
        let qlora = plans[3]
        #expect(qlora.quantizedParameterCount == config.decoderLinearParameterCount)
        // The stored figure is the formula up to the per-tensor offset and partial nested blocks; the
        // resident one is the same (block scales are computed while dequantizing, never held).
        let nominal = QuantizedTensor.bitsPerParameter(blocksize: 64, doubleQuant: true)
        #expect(abs(qlora.quantizedStorageBitsPerParameter - nominal) < 1e-3)
        #expect(qlora.quantizedResidentBitsPerParameter == qlora.quantizedStorageBitsPerParameter)
        #expect(qlora.quantizedResidentBitsPerParameter < 4.13, "double quantization's saving must be kept in memory")
        // The ordering every memory table shows: full fp32 < full bf16 mixed, QLoRA < LoRA on bf16 for big models.
        #expect(plans[0].totalBytes < plans[1].totalBytes)
        if config.totalParameterCount > 1_000_000_000 { #expect(plans[3].totalBytes < plans[2].totalBytes) }
    }

    // MARK: - Checkpointing (the formula of docs/memory.md)

    @Test(arguments: [false, true])
    func savedActivationsFollowTheDocumentedFormula(_ checkpointing: Bool) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/smollm2-135m.json"))
        let lora = LoRAConfig(r: 16, loraAlpha: 32, targetModules: ["all-linear"])
        let plan = try MemoryPlan(config: config, options: .init(lora: lora, batch: 1, seqLen: 256, gradientCheckpointing: checkpointing))
        func pad(_ n: Int) -> Int { (n + 15) & ~15 }
        let n = 256, c = config.hiddenSize, f = config.intermediateSize, l = config.numHiddenLayers
        let qd = config.queryDim, kvd = config.keyValueDim, h = config.numAttentionHeads
        let final = 2 * pad(n * c) + pad(n)
        // Layer input, xMid, rstd1/2, q, attn, k, v, attention row stats (max, sum), gate, up, 7 LoRA
        // intermediates (the normed inputs, the SwiGLU product and the attention probabilities are recomputed).
        let perLayer = 2 * pad(n * c) + 2 * pad(n) + 2 * pad(n * qd) + 2 * pad(n * kvd) + pad(h * n * 2)
            + 2 * pad(n * f) + 7 * pad(n * 16)
        let expected = checkpointing ? l * pad(n * c) + final : l * perLayer + final
        #expect(plan.breakdown[.activations] == 4 * expected)
    }

    /// Qwen3 keeps the q/k projections (the norms' inputs, in place of q and k) and the q/k norms' rstds;
    /// the normed, rotated q and k are rebuilt in backward into one shared buffer (docs/memory.md).
    @Test(arguments: [false, true])
    func qwen3SavedActivationsFollowTheDocumentedFormula(_ checkpointing: Bool) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/qwen3-0.6b.json"))
        var llama = config
        llama.qkNorm = false
        let lora = LoRAConfig(r: 16, loraAlpha: 32, targetModules: ["all-linear"])
        let options = MemoryPlan.Options(lora: lora, batch: 1, seqLen: 256, gradientCheckpointing: checkpointing)
        let qwen3 = try MemoryPlan(config: config, options: options), plain = try MemoryPlan(config: llama, options: options)
        func pad(_ n: Int) -> Int { (n + 15) & ~15 }
        let n = 256, l = config.numHiddenLayers
        let rstds = pad(n * config.numAttentionHeads) + pad(n * config.numKeyValueHeads)
        // With checkpointing the rstds belong to the one recomputed set of layer internals (workspace).
        #expect(qwen3.breakdown[.activations] - plain.breakdown[.activations] == 4 * (checkpointing ? 0 : l * rstds))
        #expect(qwen3.breakdown[.workspace] - plain.breakdown[.workspace]
                == 4 * (pad(n * config.queryDim) + pad(n * config.keyValueDim) + (checkpointing ? rstds : 0)))
        #expect(qwen3.breakdown[.otherFrozenWeights] - plain.breakdown[.otherFrozenWeights] == 4 * l * 2 * config.headDim)
    }

    // MARK: - Bad options

    @Test func badOptionsNameTheOption() throws {
        let config = Self.randomConfig("qkv-bias")
        var options = MemoryPlan.Options(baseFormat: .quantized(QuantizationOptions(blocksize: 48)))
        #expect(throws: MemoryPlanError.badOption(option: "blocksize", reason: "\(QuantError.badBlocksize(48))")) {
            try MemoryPlan(config: config, options: options)
        }
        options = MemoryPlan.Options(lora: nil)
        #expect { try MemoryPlan(config: config, options: options) } throws: { error in
            guard case MemoryPlanError.badOption(let option, _) = error else { return false }
            return option == "full fine-tuning"
        }
        options = MemoryPlan.Options(batch: 0)
        #expect { try MemoryPlan(config: config, options: options) } throws: { error in
            guard case MemoryPlanError.badOption(let option, _) = error else { return false }
            return option == "batch"
        }
        options = MemoryPlan.Options(lora: LoRAConfig(r: 4, targetModules: ["q_proj"], layersToTransform: [2]))
        #expect { try MemoryPlan(config: config, options: options) } throws: { error in
            guard case MemoryPlanError.badOption(let option, let reason) = error else { return false }
            return option == "layers" && reason.contains("0..<2")
        }
        options = MemoryPlan.Options(lora: LoRAConfig(r: 4, targetModules: ["mlp"]))
        #expect { try MemoryPlan(config: config, options: options) } throws: { error in
            guard case LoRAError.badConfig(let reason) = error else { return false }
            return reason.contains("'mlp'")
        }
    }

    // MARK: - Runtime overhead

    @Test func runtimeProbeMeasuresThisProcess() throws {
        let probe = try RuntimeOverhead.probe(gemmSize: 256)
        #expect(probe.atStart > 0)
        #expect(probe.afterGEMM >= probe.afterLoadingBLAS)
        #expect(probe.blasThreads >= 1)
        #expect(RuntimeOverhead.measuredBytes > 0)
    }
}

@Suite struct MemoryMeasurementTests {
    /// `qlora memory --measure`'s engine: real buffers and steps; every category but the runtime
    /// overhead must equal the plan to the byte (peak RSS is process-wide, so it is not asserted here,
    /// where other tests run in the same process; docs/memory.md records the measured figures).
    @Test(arguments: [(false, 1), (true, 1), (false, 3)])
    func measuredBuffersEqualThePlan(checkpointing: Bool, accumulation: Int) throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("tiny-llama/untied-fp32"))
        var options = MemoryPlan.Options()
        options.lora = LoRAConfig(r: 4, loraAlpha: 8)
        options.batch = 2
        options.seqLen = 12
        options.gradientCheckpointing = checkpointing
        // Accumulating micro-batches keeps one more gradient section (the earlier ones' sum).
        options.gradientAccumulation = accumulation
        let result = try MemoryMeasurement.run(config: config, directory: FixturePaths.url("tiny-llama/untied-fp32"), options: options, steps: 2)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            #expect(result.measured[category] == result.planned[category], "\(category)")
        }
        let plan = try MemoryPlan(config: config, options: options)
        #expect(result.planned[.gradients] == (accumulation > 1 ? 2 : 1) * plan.gradientSectionBytes)
        #expect(result.peakTrainingRSS > 0 && result.baselineRSS > 0)
    }
}

/// `qlora memory --ranks N`: what a data-parallel step sums and sends.
@Suite struct DataParallelTrafficTests {
    @Test func aStepSumsTheGradientSectionAndThreeCounts() throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("tiny-llama/untied-fp32"))
        var options = MemoryPlan.Options()
        options.lora = LoRAConfig(r: 4, loraAlpha: 8)
        let plan = try MemoryPlan(config: config, options: options)
        // The section the trainer allreduces is the arena's gradient section, padding included.
        let adapters = try LoRAAdapters(modelConfig: config, config: options.lora!)
        #expect(plan.gradientSectionBytes == adapters.parameters.sectionBytes)
        let four = DataParallelTraffic(gradientSectionBytes: plan.gradientSectionBytes, ranks: 4)
        #expect(four.allreducedBytes == adapters.parameters.count * 4 + 24)
        #expect(four.ringBytesSentPerRank == 2 * 3 * four.allreducedBytes / 4)
        #expect(DataParallelTraffic(gradientSectionBytes: 64, ranks: 1).ringBytesSentPerRank == 0)
        let text = MemoryReport.dataParallel(plan, ranks: 4)
        #expect(text.contains(MemoryReport.withCommas(four.allreducedBytes)) && text.contains("4 micro-batches"))
        let json = try JSONValue.parse(data: Data(MemoryReport.json([plan], model: "m", ranks: 4).utf8))
        guard case .array(let plans)? = json["plans"] else { Issue.record("no plans in \(json)"); return }
        #expect(plans.first?["data_parallel"]?["allreduced_bytes_per_step"]?.intValue == four.allreducedBytes)
    }
}
