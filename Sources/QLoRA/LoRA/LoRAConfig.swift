import Foundation

/// LoRA settings with PEFT's field names and meanings (peft.LoraConfig).
public struct LoRAConfig: Sendable, Equatable {
    public enum Init: String, Sendable {
        /// PEFT default (`init_lora_weights: true`): A kaiming-uniform(a = sqrt(5)), B zero.
        case kaiming = "true"
        /// `init_lora_weights: "gaussian"`: A ~ N(0, 1/r), B zero.
        case gaussian
    }

    public var r: Int
    public var loraAlpha: Double
    public var loraDropout: Double
    /// Module names (`q_proj`, ...; Phi-3's `qkv_proj`, `gate_up_proj`) or `["all-linear"]` (every decoder
    /// linear the model has; lm_head excluded, as PEFT).
    public var targetModules: [String]
    public var layersToTransform: [Int]?
    public var useRSLoRA: Bool
    public var initLoRAWeights: Init
    /// Modules trained in full and saved with the adapter (e.g. `lm_head`, `embed_tokens`).
    public var modulesToSave: [String]
    public var baseModelNameOrPath: String?

    public init(r: Int = 8, loraAlpha: Double = 16, loraDropout: Double = 0, targetModules: [String] = ["all-linear"],
                layersToTransform: [Int]? = nil, useRSLoRA: Bool = false, initLoRAWeights: Init = .kaiming,
                modulesToSave: [String] = [], baseModelNameOrPath: String? = nil) {
        self.r = r
        self.loraAlpha = loraAlpha
        self.loraDropout = loraDropout
        self.targetModules = targetModules
        self.layersToTransform = layersToTransform
        self.useRSLoRA = useRSLoRA
        self.initLoRAWeights = initLoRAWeights
        self.modulesToSave = modulesToSave
        self.baseModelNameOrPath = baseModelNameOrPath
    }

    /// alpha / r, or alpha / sqrt(r) with rsLoRA — computed in Double as PEFT does, then used as fp32.
    public var scaling: Float {
        Float(useRSLoRA ? loraAlpha / Double(r).squareRoot() : loraAlpha / Double(r))
    }

    /// The linear names this config adapts in any family (deduplicated, in `Projection` order; all-linear:
    /// every name). What a given model gets is `targets(in:)`.
    public var resolvedTargets: [String] {
        if targetModules.contains("all-linear") { return Projection.allModuleNames }
        return Projection.allModuleNames.filter { targetModules.contains($0) }
    }

    /// The linears of `model`'s layers this config adapts, in the model's layer order.
    public func targets(in model: LlamaConfig) -> [String] {
        model.layerLinears.filter { resolvedTargets.contains($0) }
    }

    public func adapts(layer: Int, linear: String) -> Bool {
        if let layers = layersToTransform, !layers.contains(layer) { return false }
        return resolvedTargets.contains(linear)
    }

    /// Modules that `modules_to_save` can train in full beside the adapters.
    public static let savableModules = ["embed_tokens", "lm_head"]

    public static let maxRank = 1 << 16

    public func validate() throws {
        guard r > 0 else { throw LoRAError.badConfig("r must be positive (got \(r))") }
        // A corrupt r would size the adapter matrices; 65536 is far beyond any useful rank.
        guard r <= Self.maxRank else { throw LoRAError.badConfig("r must be at most \(Self.maxRank) (got \(r))") }
        guard loraAlpha.isFinite else { throw LoRAError.badConfig("lora_alpha must be a finite number (got \(loraAlpha))") }
        guard loraDropout >= 0 && loraDropout < 1 else { throw LoRAError.badConfig("lora_dropout must be in [0, 1) (got \(loraDropout))") }
        let known = Set(Projection.allModuleNames + ["all-linear"])
        for name in targetModules where !known.contains(name) {
            throw LoRAError.badConfig("target module '\(name)' is not a decoder linear; use q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj) or all-linear")
        }
        guard !resolvedTargets.isEmpty else { throw LoRAError.badConfig("no target modules") }
        for name in modulesToSave where !LoRAConfig.savableModules.contains(name) {
            throw LoRAError.badConfig("modules_to_save '\(name)' is not supported; the modules trained in full can be \(LoRAConfig.savableModules.joined(separator: " and "))")
        }
    }
}

/// Errors of LoRA configuration and adapter files.
public enum LoRAError: Error, CustomStringConvertible, Equatable {
    case badConfig(String)
    case badAdapter(path: String, reason: String)

    public var description: String {
        switch self {
        case .badConfig(let reason): return "LoRA configuration: \(reason)"
        case .badAdapter(let path, let reason): return "\(path): \(reason)"
        }
    }
}
