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
        try config.validate()
        if let layers = config.layersToTransform, let bad = layers.first(where: { $0 < 0 || $0 >= modelConfig.numHiddenLayers }) {
            throw LoRAError.badConfig("layers_to_transform has \(bad), but the model has layers 0..<\(modelConfig.numHiddenLayers)")
        }
        self.config = config
        var tensors: [(key: String, shape: [Int])] = []
        for layer in 0..<modelConfig.numHiddenLayers {
            for projection in Projection.allCases where config.adapts(layer: layer, linear: projection.moduleName) {
                let shape = modelConfig.linearShape(projection.moduleName)!
                let prefix = Self.keyPrefix(layer: layer, projection: projection)
                tensors.append((prefix + ".lora_A.weight", [config.r, shape.inFeatures]))
                tensors.append((prefix + ".lora_B.weight", [shape.outFeatures, config.r]))
            }
        }
        let parameters = TrainableParameters(tensors: tensors, withOptimizerState: training)
        self.parameters = parameters
        var adapters: [[LoRAAdapter?]] = []
        var stream: UInt64 = 0
        for layer in 0..<modelConfig.numHiddenLayers {
            var row: [LoRAAdapter?] = []
            for projection in Projection.allCases {
                guard config.adapts(layer: layer, linear: projection.moduleName) else { row.append(nil); continue }
                let prefix = Self.keyPrefix(layer: layer, projection: projection)
                let a = parameters.entry(prefix + ".lora_A.weight")!
                let b = parameters.entry(prefix + ".lora_B.weight")!
                let shape = modelConfig.linearShape(projection.moduleName)!
                stream += 1
                row.append(LoRAAdapter(
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

    public static func keyPrefix(layer: Int, projection: Projection) -> String {
        "base_model.model." + LlamaConfig.modulePath(layer: layer, linear: projection.moduleName)
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
