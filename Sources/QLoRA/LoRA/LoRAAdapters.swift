import Foundation

/// Every LoRA adapter of a model, their parameters (and, when training, gradients and AdamW state) in
/// one TrainableParameters arena. Keys and shapes are PEFT's:
/// `base_model.model.model.layers.<i>.self_attn.q_proj.lora_A.weight` (r, in) / `lora_B.weight` (out, r).
public final class LoRAAdapters {
    public let config: LoRAConfig
    public let parameters: TrainableParameters
    /// [layer][projection]; nil where the linear is not adapted.
    public let adapters: [[LoRAAdapter?]]

    public init(modelConfig: LlamaConfig, config: LoRAConfig, training: Bool = true) throws {
        try Self.validate(config, for: modelConfig)
        self.config = config
        self.modelConfig = modelConfig
        let parameters = TrainableParameters(tensors: Self.tensorShapes(modelConfig: modelConfig, config: config), withOptimizerState: training)
        self.parameters = parameters
        var adapters: [[LoRAAdapter?]] = []
        var stream: UInt64 = 0
        for layer in 0..<modelConfig.numHiddenLayers {
            // Indexed by Projection.rawValue; a fused linear (Phi-3's qkv_proj) is one adapter, as in PEFT.
            var row = [LoRAAdapter?](repeating: nil, count: Projection.allCases.count)
            for projection in modelConfig.layerProjections where config.adapts(layer: layer, linear: projection.moduleName) {
                let prefix = Self.keyPrefix(layer: layer, projection: projection)
                let a = parameters.entry(prefix + ".lora_A.weight")!
                let b = parameters.entry(prefix + ".lora_B.weight")!
                let shape = modelConfig.shape(of: projection)
                stream += 1
                row[projection.rawValue] = (LoRAAdapter(
                    rank: config.r, inFeatures: shape.inFeatures, outFeatures: shape.outFeatures,
                    scale: config.scaling, dropout: Float(config.loraDropout),
                    a: parameters.parameter(a), b: parameters.parameter(b),
                    gradA: training ? parameters.gradient(a) : nil, gradB: training ? parameters.gradient(b) : nil,
                    maskStream: stream))
            }
            adapters.append(row)
        }
        self.adapters = adapters
    }

    public let modelConfig: LlamaConfig

    /// Checks a LoRA config against a model (shared by the adapters and the memory plan).
    public static func validate(_ config: LoRAConfig, for modelConfig: LlamaConfig) throws {
        try config.validate()
        if let layers = config.layersToTransform, let bad = layers.first(where: { $0 < 0 || $0 >= modelConfig.numHiddenLayers }) {
            throw LoRAError.badConfig("layers_to_transform has \(bad), but the model has layers 0..<\(modelConfig.numHiddenLayers)")
        }
        // PEFT raises when a named target matches no module of the model; so does this.
        if !config.targetModules.contains("all-linear"), let missing = config.resolvedTargets.first(where: { !modelConfig.layerLinears.contains($0) }) {
            throw LoRAError.badConfig("target module '\(missing)' is not a linear of model_type \(modelConfig.modelType), whose layers have \(modelConfig.layerLinears.joined(separator: ", "))")
        }
        if modelConfig.tieWordEmbeddings && !config.modulesToSave.isEmpty {
            throw LoRAError.badConfig("modules_to_save (\(config.modulesToSave.joined(separator: ", "))) on a model whose lm_head is tied to embed_tokens would untie them; not supported")
        }
    }

    /// Every trainable tensor in arena order: per layer and projection A (r, in) then B (out, r), then the
    /// modules_to_save (full copies, under the keys PEFT saves them with). The memory plan uses this too.
    public static func tensorShapes(modelConfig: LlamaConfig, config: LoRAConfig) -> [(key: String, shape: [Int])] {
        var tensors: [(key: String, shape: [Int])] = []
        for layer in 0..<modelConfig.numHiddenLayers {
            for projection in modelConfig.layerProjections where config.adapts(layer: layer, linear: projection.moduleName) {
                let shape = modelConfig.shape(of: projection)
                let prefix = keyPrefix(layer: layer, projection: projection)
                tensors.append((prefix + ".lora_A.weight", [config.r, shape.inFeatures]))
                tensors.append((prefix + ".lora_B.weight", [shape.outFeatures, config.r]))
            }
        }
        for module in LoRAConfig.savableModules where config.modulesToSave.contains(module) {
            tensors.append((moduleKey(module), [modelConfig.vocabSize, modelConfig.hiddenSize]))
        }
        return tensors
    }

    /// PEFT's adapter key of a module trained in full (its `modules_to_save.default` wrapper removed).
    public static func moduleKey(_ module: String) -> String {
        module == "lm_head" ? "base_model.model.lm_head.weight" : "base_model.model.model.embed_tokens.weight"
    }

    /// The trainable copy of `embed_tokens` / `lm_head`, if `modules_to_save` has it.
    public func trainedModule(_ module: String) -> TrainableParameters.Entry? { parameters.entry(Self.moduleKey(module)) }

    /// Starts the modules_to_save copies from the base model's weights (a fresh run; a loaded adapter
    /// brings its own values).
    public func initializeModulesToSave(from model: LlamaModel) {
        if let entry = trainedModule("embed_tokens") {
            model.embedTokens.writeTile(rows: 0..<model.embedTokens.outFeatures, into: parameters.parameter(entry), precision: .fp32)
        }
        if let entry = trainedModule("lm_head") {
            model.lmHead.weight.writeTile(rows: 0..<model.lmHead.outFeatures, into: parameters.parameter(entry), precision: .fp32)
        }
    }

    /// `model` as these adapters see it: embed_tokens / lm_head replaced by their trainable copies
    /// (modules_to_save); the model itself when there are none.
    public func applied(to model: LlamaModel) -> LlamaModel {
        let embed = trainedModule("embed_tokens"), head = trainedModule("lm_head")
        guard embed != nil || head != nil else { return model }
        let config = model.config
        let embedTable = embed.map { EmbeddingTable(borrowing: parameters.parameter($0), rows: config.vocabSize, dim: config.hiddenSize) }
            ?? model.embedTokens
        let lmHead = head.map {
            BaseLinear(weight: BorrowedFloatWeight(outFeatures: config.vocabSize, inFeatures: config.hiddenSize,
                                                   values: UnsafePointer(parameters.parameter($0))), precision: .fp32)
        } ?? model.lmHead
        return LlamaModel(viewOf: model, embedTokens: embedTable, lmHead: lmHead, keepingAlive: self)
    }

    /// Gradient buffers of the modules_to_save (nil when there are none or when not training).
    public var moduleGradients: ModelGradients? {
        guard parameters.sections == 4 else { return nil }
        let embed = trainedModule("embed_tokens").map { parameters.gradient($0) }
        let head = trainedModule("lm_head").map { parameters.gradient($0) }
        guard embed != nil || head != nil else { return nil }
        return ModelGradients(embedTokens: embed, layers: [], norm: nil, lmHead: head)
    }

    public static func keyPrefix(layer: Int, projection: Projection) -> String {
        "base_model.model." + LlamaConfig.modulePath(layer: layer, projection)
    }

    /// PEFT's default init: A kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
    /// `gaussian`: A ~ N(0, (1/r)^2); B = 0. Deterministic in `seed`.
    public func initialize(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        for entry in parameters.entries {
            let p = parameters.parameter(entry)
            if entry.key.hasSuffix("lora_B.weight") {
                p.update(repeating: 0, count: entry.count)
                continue
            }
            switch config.initLoRAWeights {
            case .kaiming:
                let bound = 1 / Float(entry.shape[1]).squareRoot()
                for i in 0..<entry.count { p[i] = generator.uniform(-bound, bound) }
            case .gaussian:
                let std = 1 / Float(config.r)
                for i in 0..<entry.count { p[i] = generator.normal() * std }
            }
        }
    }

    /// Trainable-parameter line in PEFT's `print_trainable_parameters` format. PEFT counts a 4-bit weight
    /// by its real element count (it doubles bitsandbytes' packed Params4bit numel), so `all` is the base
    /// model's parameter count plus the adapters'.
    public static func summaryLine(trainable: Int, all: Int) -> String {
        let percent = all == 0 ? 0 : 100 * Double(trainable) / Double(all)
        return "trainable params: \(formatWithCommas(trainable)) || all params: \(formatWithCommas(all)) || trainable%: \(formatPercent(percent))"
    }

    static func formatWithCommas(_ n: Int) -> String {
        let digits = String(n)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return out
    }

    /// Python's `f"{x:.4f}"`.
    static func formatPercent(_ x: Double) -> String { String(format: "%.4f", x) }
}
