/// What a training (or inference) run will hold in memory, per `MemoryCategory`, computed from the
/// model's config.json and the training options alone: no weights are read, a 70B plan takes
/// microseconds. Every figure comes from the same count functions the real buffers are laid out by
/// (`ActivationLayout.counts`, `TrainableParameters.arenaFloats`, `QuantizedWeightBytes` mirroring
/// `QuantizedTensor`), so planned bytes equal `LiveMemory.breakdown(executor:)` by construction
/// (tested), except the runtime overhead, which is a measured constant. See docs/memory.md.
/// A file's frozen weights in the bytes it stores them in (GGUF blocks), counted as LlamaModel.frozenBytes
/// counts a model loaded with the `.stored` format.
public struct StoredWeightBytes: Sendable, Equatable {
    /// Decoder linears in block formats (Q4_K, Q8_0, ...): bytes and elements.
    public var quantizedLinears: Int
    public var quantizedElements: Int
    /// Decoder linears stored dense (F32, F16, BF16).
    public var denseLinears: Int
    /// The embedding table and an untied output matrix (0 when tied).
    public var embedding: Int
    public var output: Int

    public init(quantizedLinears: Int, quantizedElements: Int, denseLinears: Int, embedding: Int, output: Int) {
        self.quantizedLinears = quantizedLinears
        self.quantizedElements = quantizedElements
        self.denseLinears = denseLinears
        self.embedding = embedding
        self.output = output
    }
}

public struct MemoryPlan: Sendable {
    /// The optimizer, for its state: AdamW keeps exp_avg and exp_avg_sq (2 fp32 per parameter),
    /// plain SGD none.
    public enum Optimizer: String, Sendable, CaseIterable {
        case adamw, sgd

        public var statesPerParameter: Int { self == .adamw ? 2 : 0 }
    }

    /// How the trainable weights are kept.
    public enum Method: String, Sendable {
        /// LoRA adapters (fp32) on a frozen base (dense fp32 / bf16, or 4-bit = QLoRA).
        case lora
        /// Every parameter trained in fp32: fp32 weights + fp32 grads + optimizer state.
        case fullFP32 = "full-fp32"
        /// Every parameter trained with bf16 mixed precision: fp32 master weights, bf16 working copies of
        /// the linears (`FullFineTuning.workingCopyBytes`), fp32 grads, fp32 optimizer state (up to
        /// 2 + 4 + 4 + 8 = 18 bytes per parameter with AdamW).
        case fullBF16Mixed = "full-bf16-mixed"
    }

    public struct Options: Sendable, Equatable {
        /// How frozen base linears are kept (ignored by full fine-tuning, where nothing is frozen).
        public var baseFormat: BaseWeightFormat
        public var computePrecision: ComputePrecision
        /// LoRA settings; nil = full fine-tuning (fp32 when `baseFormat` is dense32, bf16 mixed precision
        /// when it is denseBF16; a quantized base cannot be fully fine-tuned).
        public var lora: LoRAConfig?
        public var batch: Int
        public var seqLen: Int
        public var gradientCheckpointing: Bool
        public var optimizer: Optimizer
        /// False: inference only (adapters without gradients or optimizer state, no saved activations).
        public var training: Bool
        public var tileRows: Int
        public var logitsChunkRows: Int
        /// A generation plan (`qlora generate`, one base serving adapters): this many LoRA adapters of the
        /// `lora` settings loaded (parameters only), `batch` sequences of `seqLen` positions decoded
        /// together, their KV caches counted as saved activations; nil = a training (or evaluation) plan.
        public var generationAdapters: Int?
        /// Bytes of the process before any model (see `RuntimeOverhead`).
        public var runtimeOverheadBytes: Int
        /// What the training data holds in memory (`Batcher.heldBytes` plus the token file's index);
        /// 0 when the data is not known.
        public var datasetBytes = 0
        /// Micro-batches per optimizer step (per rank): above 1 the trainer keeps the earlier ones'
        /// gradient sum beside the gradients, one more gradient section (`Trainer.accumulationBytes`).
        public var gradientAccumulation = 1
        /// The frozen weights as a file stores them (a GGUF file's blocks: `GGUFModelLoader.storedBytes`):
        /// the linears for the `.stored` base format, the embedding table and output also for a 4-bit
        /// base converted on load; nil = a safetensors checkpoint.
        public var storedWeights: StoredWeightBytes?

        public init(baseFormat: BaseWeightFormat = .quantized(QuantizationOptions()), computePrecision: ComputePrecision = .bf16,
                    lora: LoRAConfig? = LoRAConfig(r: 16, loraAlpha: 32, targetModules: ["all-linear"]),
                    batch: Int = 1, seqLen: Int = 512, gradientCheckpointing: Bool = false, optimizer: Optimizer = .adamw,
                    training: Bool = true, tileRows: Int = 0, logitsChunkRows: Int = 64,
                    runtimeOverheadBytes: Int = RuntimeOverhead.measuredBytes) {
            self.baseFormat = baseFormat
            self.computePrecision = computePrecision
            self.lora = lora
            self.batch = batch
            self.seqLen = seqLen
            self.gradientCheckpointing = gradientCheckpointing
            self.optimizer = optimizer
            self.training = training
            self.tileRows = tileRows
            self.logitsChunkRows = logitsChunkRows
            self.runtimeOverheadBytes = runtimeOverheadBytes
            storedWeights = nil
            generationAdapters = nil
        }

        /// The activation arena's shape for these options (what `LlamaExecutor` is built with).
        public var activationShape: ActivationLayout.Shape {
            ActivationLayout.Shape(batch: batch, seqLen: seqLen, gradientCheckpointing: gradientCheckpointing,
                                   tileRows: tileRows, logitsChunkRows: logitsChunkRows, training: training)
        }

        public var method: Method {
            if lora != nil { return .lora }
            return baseFormat == .denseBF16 ? .fullBF16Mixed : .fullFP32
        }
    }

    public let config: LlamaConfig
    public let options: Options
    public let breakdown: MemoryBreakdown
    /// Trainable scalars (LoRA A and B, or every parameter), without the arena's alignment padding.
    public let trainableParameterCount: Int
    /// Parameters of the base model (tied lm_head once), as `LlamaConfig.totalParameterCount`.
    public let baseParameterCount: Int
    /// Elements of the 4-bit linears (0 unless the base is quantized).
    public let quantizedParameterCount: Int
    /// Stored bytes of the 4-bit linears (checkpoint format; the runtime holds exactly these).
    public let quantizedStorageBytes: Int
    /// Bytes of one fp32 section of the trainable arena (parameters, or gradients), padding included:
    /// what a data-parallel step sums across ranks.
    public let gradientSectionBytes: Int

    public init(config: LlamaConfig, options: Options) throws {
        try Self.validate(config: config, options: options)
        self.config = config
        self.options = options
        var breakdown = MemoryBreakdown()
        for category in MemoryCategory.allCases { breakdown[category] = 0 }
        var quantizedCount = 0, quantizedStorage = 0
        let method = options.method

        // Frozen weights: exactly what LlamaModel.frozenBytes adds up.
        if method == .lora {
            var quantized = 0, other = 0
            let stored = options.baseFormat == .stored ? options.storedWeights : nil
            // A GGUF file's embedding table and output stay in their blocks unless the base is dense
            // (GGUFModelLoader), also when its linears are converted to NF4 / FP4.
            let storedTables: StoredWeightBytes?
            switch options.baseFormat {
            case .stored, .quantized: storedTables = options.storedWeights
            case .dense32, .denseBF16: storedTables = nil
            }
            // `.stored`: a GGUF file's linears are counted from the file (below), a dense checkpoint's in
            // its own precision.
            let linearFormat: BaseWeightFormat = options.baseFormat != .stored || stored != nil ? options.baseFormat
                : config.frozenTableBytesPerElement == 2 ? .denseBF16 : .dense32
            for name in config.layerLinears {
                let shape = config.linearShape(name)!
                let elements = shape.outFeatures * shape.inFeatures
                switch linearFormat {
                case .stored: break
                case .dense32: other += 4 * elements
                case .denseBF16: other += 2 * elements
                case .quantized(let q):
                    quantized += QuantizedWeightBytes.resident(elements: elements, options: q)
                    quantizedStorage += QuantizedWeightBytes.storage(elements: elements, options: q)
                    quantizedCount += elements
                }
                if config.hasBias(name) { other += 4 * shape.outFeatures }
            }
            other += config.layerNormParameterCount * 4
            quantized *= config.numHiddenLayers
            quantizedStorage *= config.numHiddenLayers
            quantizedCount *= config.numHiddenLayers
            other *= config.numHiddenLayers
            // Embeddings and an untied lm_head in the checkpoint's precision (bf16 stays bf16, else fp32)
            // or as the file stores them; the final norm fp32.
            let table = config.vocabSize * config.hiddenSize * config.frozenTableBytesPerElement
            if let stored {
                quantized = stored.quantizedLinears
                quantizedStorage = stored.quantizedLinears
                quantizedCount = stored.quantizedElements
                other += stored.denseLinears
            }
            if let storedTables {
                other += storedTables.embedding + storedTables.output + config.hiddenSize * 4
            } else {
                other += table + config.hiddenSize * 4
                if !config.tieWordEmbeddings { other += table }
            }
            breakdown[.quantizedWeights] = quantized
            breakdown[.otherFrozenWeights] = other
        }

        // Trainable parameters, gradients, optimizer state: one padded fp32 arena section each.
        let shapes = method == .lora ? Self.loraShapes(config: config, lora: options.lora!) : Self.allParameterShapes(config: config)
        let sectionBytes = TrainableParameters.arenaFloats(shapes: shapes) * 4
        var trainableParameterCount = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        // bf16 mixed precision keeps a bf16 working copy of the linears beside the fp32 master weights.
        breakdown[.trainableParameters] = sectionBytes + (method == .fullBF16Mixed ? FullFineTuning.workingCopyBytes(config: config) : 0)
        if options.training && options.generationAdapters == nil {
            breakdown[.gradients] = sectionBytes * (options.gradientAccumulation > 1 ? 2 : 1)
            breakdown[.optimizerState] = options.optimizer.statesPerParameter * sectionBytes
        }

        if let adapters = options.generationAdapters {
            // Generation: each adapter one parameter section (no gradients, no optimizer state); the
            // decoders' KV caches as saved activations, their working buffers as workspace.
            trainableParameterCount *= adapters
            breakdown[.trainableParameters] = adapters * sectionBytes
            let decoders = Generator.decoderBytes(config: config, sequences: options.batch,
                                                  maxSeqLen: min(options.seqLen, config.maxPositionEmbeddings),
                                                  loraRank: adapters > 0 ? options.lora!.r : 0)
            breakdown[.activations] = decoders.cache
            breakdown[.workspace] = decoders.working
        } else {
            // Activations and workspace: the executor's arena plus its index buffers and RoPE tables.
            let counts = ActivationLayout.counts(config: config, lora: options.lora, shape: options.activationShape)
            breakdown[.activations] = counts.saved * 4
            breakdown[.workspace] = counts.workspace * 4 + LlamaExecutor.auxiliaryBytes(config: config, shape: options.activationShape)
        }
        breakdown[.dataset] = options.datasetBytes
        breakdown[.runtimeOverhead] = options.runtimeOverheadBytes

        self.breakdown = breakdown
        self.trainableParameterCount = trainableParameterCount
        gradientSectionBytes = sectionBytes
        baseParameterCount = config.totalParameterCount
        quantizedParameterCount = quantizedCount
        quantizedStorageBytes = quantizedStorage
    }

    /// Shapes of the trainable tensors in the order `LoRAAdapters` lays them out (A, B per adapted linear,
    /// then any modules_to_save): the adapters' own function.
    public static func loraShapes(config: LlamaConfig, lora: LoRAConfig) -> [[Int]] {
        LoRAAdapters.tensorShapes(modelConfig: config, config: lora).map(\.shape)
    }

    /// Every parameter tensor of the model (full fine-tuning), tied lm_head once.
    public static func allParameterShapes(config: LlamaConfig) -> [[Int]] {
        let c = config.hiddenSize
        var shapes: [[Int]] = [[config.vocabSize, c]]
        for _ in 0..<config.numHiddenLayers {
            for norm in config.layerNorms { shapes.append([config.width(of: norm)]) }
            for name in config.layerLinears {
                let shape = config.linearShape(name)!
                shapes.append([shape.outFeatures, shape.inFeatures])
                if config.hasBias(name) { shapes.append([shape.outFeatures]) }
            }
        }
        shapes.append([c])
        if !config.tieWordEmbeddings { shapes.append([config.vocabSize, c]) }
        return shapes
    }

    static let maxSeqLen = 1 << 24
    static let maxTokensPerStep = 1 << 31

    static func validate(config: LlamaConfig, options: Options) throws {
        let positives: [(String, Int)] = [("batch", options.batch), ("seq-len", options.seqLen),
                                          ("logits chunk rows", options.logitsChunkRows)]
        if options.tileRows < 0 { throw MemoryPlanError.badOption(option: "tile rows", reason: "must be positive, or 0 for automatic (got \(options.tileRows))") }
        for (name, value) in positives where value <= 0 {
            throw MemoryPlanError.badOption(option: name, reason: "must be positive (got \(value))")
        }
        if options.runtimeOverheadBytes < 0 {
            throw MemoryPlanError.badOption(option: "runtime overhead", reason: "must not be negative")
        }
        // Bounds that keep every byte count of the plan far inside Int (it multiplies tokens by widths,
        // layers and the vocabulary): 16 M tokens per sequence, 2^31 tokens per step.
        if options.seqLen > Self.maxSeqLen {
            throw MemoryPlanError.badOption(option: "seq-len", reason: "\(options.seqLen) is beyond what can be planned (at most \(Self.maxSeqLen) tokens per sequence)")
        }
        let (tokens, overflow) = options.batch.multipliedReportingOverflow(by: options.seqLen)
        if overflow || tokens > Self.maxTokensPerStep {
            throw MemoryPlanError.badOption(option: "batch x seq-len", reason: "\(options.batch) x \(options.seqLen) tokens per step is beyond what can be planned (at most \(Self.maxTokensPerStep))")
        }
        if case .quantized(let q) = options.baseFormat {
            do { try BlockwiseQuantizer.validate(blocksize: q.blocksize) } catch {
                throw MemoryPlanError.badOption(option: "blocksize", reason: "\(error)")
            }
            if options.lora == nil {
                throw MemoryPlanError.badOption(option: "full fine-tuning", reason: "a 4-bit base cannot be trained in full; use a dense base (fp32 or bf16) or LoRA")
            }
        }
        if let adapters = options.generationAdapters {
            if adapters < 0 { throw MemoryPlanError.badOption(option: "adapters", reason: "must be 0 or more (got \(adapters))") }
            if options.lora == nil {
                throw MemoryPlanError.badOption(option: "generation", reason: "serves LoRA adapters on a frozen base; full fine-tuning has none to plan (drop --full)")
            }
        }
        if let lora = options.lora {
            try lora.validate()
            if let layers = lora.layersToTransform, let bad = layers.first(where: { $0 < 0 || $0 >= config.numHiddenLayers }) {
                throw MemoryPlanError.badOption(option: "layers", reason: "layer \(bad) does not exist; the model has layers 0..<\(config.numHiddenLayers)")
            }
            try LoRAAdapters.validate(lora, for: config)
        } else if !options.training {
            throw MemoryPlanError.badOption(option: "inference", reason: "without LoRA is not planned; give LoRA settings (inference with an adapter) or plan training")
        }
    }

    // MARK: - Derived figures

    public var totalBytes: Int { breakdown.total }

    /// Nominal bits per quantized parameter as stored (4.127 for NF4, blocksize 64, double quant).
    public var quantizedStorageBitsPerParameter: Double {
        quantizedParameterCount == 0 ? 0 : Double(quantizedStorageBytes * 8) / Double(quantizedParameterCount)
    }

    /// Bits per quantized parameter as resident in memory (== stored: block scales are computed on the fly).
    public var quantizedResidentBitsPerParameter: Double {
        quantizedParameterCount == 0 ? 0 : Double(breakdown[.quantizedWeights] * 8) / Double(quantizedParameterCount)
    }

    /// Base parameters plus LoRA parameters (full fine-tuning: the base parameters).
    public var allParameterCount: Int { baseParameterCount + (options.method == .lora ? trainableParameterCount : 0) }

    /// A short name of the method and base, e.g. "QLoRA (nf4, bs 64, dq)", "LoRA on bf16 base".
    public var label: String {
        switch options.method {
        case .fullFP32: return "full fine-tuning fp32"
        case .fullBF16Mixed: return "full fine-tuning bf16 mixed"
        case .lora:
            switch options.baseFormat {
            case .dense32: return "LoRA on fp32 base"
            case .denseBF16: return "LoRA on bf16 base"
            case .quantized(let q): return "QLoRA (\(q.quantType.rawValue))"
            case .stored: return options.storedWeights == nil ? "LoRA on the stored base" : "QLoRA (GGUF blocks)"
            }
        }
    }

    /// The side-by-side set of `qlora memory --compare`: full fine-tuning in fp32, full fine-tuning in bf16
    /// mixed precision, LoRA on a bf16 base, and QLoRA; all with the same batch, sequence, checkpointing,
    /// optimizer and compute settings. LoRA settings come from `options.lora` (default r=16 all-linear),
    /// the 4-bit settings from `options.baseFormat` if it is quantized (default NF4, 64, double quant).
    public static func compareSet(config: LlamaConfig, options: Options) throws -> [MemoryPlan] {
        let lora = options.lora ?? Options().lora
        var full32 = options, full16 = options, loraBF16 = options, qlora = options
        full32.lora = nil
        full32.baseFormat = .dense32
        full16.lora = nil
        full16.baseFormat = .denseBF16
        loraBF16.lora = lora
        loraBF16.baseFormat = .denseBF16
        qlora.lora = lora
        if case .quantized = options.baseFormat {} else { qlora.baseFormat = .quantized(QuantizationOptions()) }
        return try [full32, full16, loraBF16, qlora].map { try MemoryPlan(config: config, options: $0) }
    }
}

/// Errors of memory planning: which option was wrong and what to use instead.
public enum MemoryPlanError: Error, CustomStringConvertible, Equatable {
    case badOption(option: String, reason: String)

    public var description: String {
        switch self {
        case .badOption(let option, let reason): return "memory plan: \(option): \(reason)"
        }
    }
}
