import Foundation

/// Plan vs reality: builds the model and buffers a MemoryPlan describes, runs a few real training
/// steps, and reports the bytes each category really holds and the process' peak RSS during training.
public enum MemoryMeasurement {
    public struct Result: Sendable {
        public var planned: MemoryBreakdown
        public var measured: MemoryBreakdown
        /// VmHWM over the training steps (the high-water mark is reset after loading, where Linux allows).
        public var peakTrainingRSS: Int
        /// VmHWM up to the end of loading.
        public var peakLoadingRSS: Int
        /// RSS before the model was built: the process baseline (runtime, libraries).
        public var baselineRSS: Int
        public var steps: Int
        public var secondsPerStep: Double

        /// Peak training RSS relative to the planned total: 0.03 = 3 % above plan.
        public var relativeError: Double { Double(peakTrainingRSS - planned.total) / Double(max(planned.total, 1)) }
    }

    /// `directory`: a model directory with weights, or nil to use random weights of `config`'s shape
    /// (the buffers, and so the memory, are the same).
    public static func run(config: LlamaConfig, directory: URL?, options: MemoryPlan.Options, steps: Int, seed: UInt64 = 0) throws -> Result {
        let plan = try MemoryPlan(config: config, options: options)
        if options.method == .fullBF16Mixed {
            throw MemoryPlanError.badOption(option: "--measure", reason: "qlora trains full models in fp32 only; bf16 mixed precision can be planned but not measured (use --base-dtype fp32)")
        }
        _ = try OpenBLAS.ensureLoaded()
        let baseline = ProcessMemory.residentBytes().current
        var result = try measure(config: config, directory: directory, options: options, steps: steps, seed: seed)
        result.planned = plan.breakdown
        result.baselineRSS = baseline
        result.measured[.runtimeOverhead] = baseline
        return result
    }

    /// A generation plan (`options.generationAdapters`) against reality: loads the base and that many
    /// adapters (random, of the plan's settings), decodes `batch` sequences of `seqLen` positions (half
    /// prompt, half generated; the rows spread over the adapters) and reports the buffers' bytes and the
    /// peak RSS while decoding. `steps` is not used: one generation is the run.
    public static func runGeneration(config: LlamaConfig, directory: URL?, options: MemoryPlan.Options, seed: UInt64 = 0) throws -> Result {
        let plan = try MemoryPlan(config: config, options: options)
        guard let adapterCount = options.generationAdapters, let lora = options.lora else {
            throw MemoryPlanError.badOption(option: "--measure", reason: "needs a generation plan (--adapters N)")
        }
        _ = try OpenBLAS.ensureLoaded()
        let baseline = ProcessMemory.residentBytes().current
        let model = try directory.map { try LlamaLoader.load(directory: $0, format: options.baseFormat, precision: options.computePrecision) }
            ?? LlamaLoader.random(config: config, format: options.baseFormat, precision: options.computePrecision, seed: seed)
        let adapters = try (0..<adapterCount).map { index -> LoRAAdapters in
            let adapter = try LoRAAdapters(modelConfig: config, config: lora, training: false)
            adapter.initialize(seed: seed + UInt64(index))
            adapter.initializeModulesToSave(from: model)
            return adapter
        }
        let peakLoading = ProcessMemory.residentBytes().peak
        ProcessMemory.releaseFreedMemory()
        let reset = ProcessMemory.resetPeak()

        let length = min(options.seqLen, config.maxPositionEmbeddings)
        let promptLength = max(1, length / 2), newTokens = max(1, length - promptLength)
        var generator = SeededGenerator(seed: seed)
        let requests = (0..<options.batch).map { row -> (prompt: [Int32], lora: LoRAAdapters?) in
            let prompt = (0..<promptLength).map { _ in Int32(generator.next() % UInt64(config.vocabSize)) }
            return (prompt, adapters.isEmpty ? nil : adapters[row % adapters.count])
        }
        var decoderBytes = (cache: 0, working: 0)
        let start = Date()
        if options.batch == 1 {
            let single = Generator(model: model, lora: requests[0].lora, maxSeqLen: promptLength + newTokens)
            _ = try single.generate(prompt: requests[0].prompt, maxNewTokens: newTokens)
            decoderBytes = (single.decoder.cache.bytes, single.decoder.bytes - single.decoder.cache.bytes)
        } else {
            _ = try Generator.generateBatch(model: model, requests: requests, maxNewTokens: newTokens) { decoders in
                for decoder in decoders {
                    decoderBytes.cache += decoder.cache.bytes
                    decoderBytes.working += decoder.bytes - decoder.cache.bytes
                }
            }
        }
        let seconds = Date().timeIntervalSince(start)
        let peak = ProcessMemory.residentBytes().peak
        var measured = MemoryBreakdown()
        let frozen = model.frozenBytes
        measured[.quantizedWeights] = frozen.quantized
        measured[.otherFrozenWeights] = frozen.other
        measured[.trainableParameters] = adapters.reduce(0) { $0 + $1.parameters.sectionBytes }
        measured[.activations] = decoderBytes.cache
        measured[.workspace] = decoderBytes.working
        measured[.runtimeOverhead] = baseline
        return Result(planned: plan.breakdown, measured: measured, peakTrainingRSS: reset ? peak : max(peak, peakLoading),
                      peakLoadingRSS: peakLoading, baselineRSS: baseline, steps: 1, secondsPerStep: seconds)
    }

    private static func measure(config: LlamaConfig, directory: URL?, options: MemoryPlan.Options, steps: Int, seed: UInt64) throws -> Result {
        let shape = options.activationShape
        // Build everything the plan describes, then forget how it was loaded.
        let model: LlamaModel
        let full: FullFineTuning?
        let lora: LoRAAdapters?
        if options.lora == nil {
            let dense = try directory.map { try LlamaLoader.load(directory: $0, format: .dense32, precision: .fp32) }
                ?? LlamaLoader.random(config: config, format: .dense32, precision: .fp32, seed: seed)
            let trainable = try FullFineTuning(copying: dense)
            full = trainable
            model = trainable.model
            lora = nil
        } else {
            model = try directory.map { try LlamaLoader.load(directory: $0, format: options.baseFormat, precision: options.computePrecision) }
                ?? LlamaLoader.random(config: config, format: options.baseFormat, precision: options.computePrecision, seed: seed)
            let adapters = try LoRAAdapters(modelConfig: config, config: options.lora!)
            adapters.initialize(seed: seed)
            adapters.initializeModulesToSave(from: model)
            lora = adapters
            full = nil
        }
        let executor = LlamaExecutor(model: model, lora: lora, gradients: full?.gradients, shape: shape)
        let peakLoading = ProcessMemory.residentBytes().peak
        ProcessMemory.releaseFreedMemory()
        let reset = ProcessMemory.resetPeak()

        var trainerOptions = TrainerOptions()
        trainerOptions.maxSteps = steps
        trainerOptions.schedule = .constant
        trainerOptions.learningRate = 1e-4
        trainerOptions.gradientAccumulationSteps = options.gradientAccumulation
        let trainer = Trainer(executor: executor, parameters: (lora?.parameters ?? full?.parameters)!, options: trainerOptions)
        var generator = SeededGenerator(seed: seed)
        let count = shape.batch * shape.seqLen
        let ids = (0..<count).map { _ in Int32(generator.next() % UInt64(config.vocabSize)) }
        struct Repeat: BatchSource {
            let batch: TokenBatch
            func batch(step: Int, micro: Int) -> TokenBatch { batch }
        }
        let source = Repeat(batch: TokenBatch(inputIDs: ids, labels: ids, batch: shape.batch, seqLen: shape.seqLen))
        var seconds = 0.0
        for _ in 0..<max(1, steps) { seconds += try trainer.trainStep(source).seconds }
        let peak = ProcessMemory.residentBytes().peak
        var measured = LiveMemory.breakdown(executor: executor)
        if let full {
            // Full fine-tuning: the weights live in the trainable arena, which LiveMemory counts as trainable.
            measured[.otherFrozenWeights] = 0
            measured[.quantizedWeights] = 0
            let section = full.parameters.sectionBytes
            measured[.trainableParameters] = section
            measured[.gradients] = section
            measured[.optimizerState] = 2 * section
        }
        measured[.gradients] += trainer.accumulationBytes
        return Result(planned: MemoryBreakdown(), measured: measured, peakTrainingRSS: reset ? peak : max(peak, peakLoading),
                      peakLoadingRSS: peakLoading, baselineRSS: 0, steps: max(1, steps), secondsPerStep: seconds / Double(max(1, steps)))
    }
}
