import Foundation
import SafeTensors
import GGUF

/// A Llama-family architecture read from Hugging Face `config.json` (Llama 2/3, SmolLM2, TinyLlama,
/// Mistral with its sliding window, Qwen2 with q/k/v biases, Qwen3 with per-head q/k norms, Gemma 3 with
/// (1 + w) norms, GeGLU, sandwich norms, a scaled embedding and local/global layers, SmolLM3 with NoPE
/// layers, Phi-3 / Phi-4-mini with fused qkv / gate_up projections, partial rotary and LongRoPE). Property names are
/// camelCase of the HF keys; the families differ only by the switches below, read by the one decoder block.
public struct LlamaConfig: Sendable, Equatable {
    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RoPEScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// Biases on q, k, v (Qwen2) or on every attention projection (`attention_bias`).
    public var attentionBias: Bool
    public var qkvBiasOnly: Bool
    public var mlpBias: Bool
    /// Qwen3: an RMSNorm over each head of q and of k (weights `self_attn.q_norm` / `k_norm`, head_dim
    /// wide, eps `rms_norm_eps`) between the projection and RoPE.
    public var qkNorm: Bool
    /// Gemma: every RMSNorm scales by (1 + w) instead of w (the stored weight is centred on 0).
    public var normWeightOffset: Float
    /// The MLP's gate activation: SiLU (SwiGLU) or GELU with the tanh approximation (GeGLU, Gemma).
    public var activation: GatedActivation
    /// Gemma 3: RMSNorms on the attention and MLP outputs before their residual adds.
    public var sandwichNorms: Bool
    /// Gemma: the embedding rows are multiplied by this (sqrt(hidden_size)) on lookup; nil = 1.
    public var embeddingScale: Float?
    /// Attention scores are q k^T times this: `query_pre_attn_scalar`^-1/2 (Gemma), else head_dim^-1/2.
    public var attentionScale: Float
    /// Per layer: every position, or a window of `slidingWindow` positions (itself and the ones before).
    public var layerTypes: [LayerAttention]
    public var slidingWindow: Int?
    /// RoPE of the sliding-window layers when it differs from the global one (Gemma 3's
    /// `rope_local_base_freq`); nil = every layer uses `ropeTheta` / `ropeScaling`.
    public var localRope: RoPEParameters?
    /// Final logits become cap * tanh(logits / cap) (`final_logit_softcapping`); nil = off.
    public var finalLogitSoftcap: Float?
    /// SmolLM3: per layer, whether q and k are rotated (`no_rope_layers`: 1 = RoPE, 0 = none); empty = all.
    public var ropeLayers: [Bool]
    /// Phi-3: q/k/v are one linear `qkv_proj` and gate/up one `gate_up_proj` (`layerProjections`).
    public var fusedProjections: Bool
    /// Phi-3: the leading fraction of each head's dims that RoPE rotates (`partial_rotary_factor`); 1 = all.
    public var partialRotaryFactor: Double
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]
    public var padTokenID: Int?
    /// `dtype` / `torch_dtype` of the checkpoint, as written ("float32", "bfloat16", ...).
    public var dtype: String?
    /// The raw `quantization_config` object, if the checkpoint is pre-quantized.
    public var quantizationConfig: JSONValue?

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil, rmsNormEps: Float = 1e-5,
                ropeTheta: Double = 10000, ropeScaling: RoPEScaling? = nil, maxPositionEmbeddings: Int = 2048,
                tieWordEmbeddings: Bool = false, modelType: String = "llama") {
        self.modelType = modelType
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)  // 0 heads: validate refuses
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = false
        self.qkvBiasOnly = false
        self.mlpBias = false
        self.qkNorm = false
        self.normWeightOffset = 0
        self.activation = .silu
        self.sandwichNorms = false
        self.embeddingScale = nil
        self.attentionScale = Float(1 / Double(self.headDim).squareRoot())
        // Clamped: a corrupt layer count must reach validate(), not allocate (or trap on) its number.
        self.layerTypes = Array(repeating: .full, count: min(max(0, numHiddenLayers), Self.maxLayers + 1))
        self.slidingWindow = nil
        self.localRope = nil
        self.finalLogitSoftcap = nil
        self.ropeLayers = []
        self.fusedProjections = false
        self.partialRotaryFactor = 1
        self.bosTokenID = nil
        self.eosTokenIDs = []
        self.padTokenID = nil
        self.dtype = nil
        self.quantizationConfig = nil
    }

    /// Query width H*D and key/value width KV*D.
    public var queryDim: Int { numAttentionHeads * headDim }
    public var keyValueDim: Int { numKeyValueHeads * headDim }
    /// The widest input of any decoder linear (sizes the dequant tile).
    public var maxLinearInFeatures: Int { max(hiddenSize, queryDim, intermediateSize) }

    /// Dims of each head that RoPE rotates: int(head_dim * partial_rotary_factor), as transformers.
    public var rotaryDim: Int { Int(Double(headDim) * partialRotaryFactor) }

    /// The linears of one decoder layer, in checkpoint (and PEFT) order: Llama's seven, or Phi-3's fused four.
    public var layerProjections: [Projection] {
        fusedProjections ? [.qkv, .o, .gateUp, .down] : [.q, .k, .v, .o, .gate, .up, .down]
    }

    /// The projections that read the normed input of the attention (q/k/v, or qkv) and of the MLP (gate/up, or gate_up).
    public var attentionInputProjections: [Projection] { fusedProjections ? [.qkv] : [.q, .k, .v] }
    public var mlpInputProjections: [Projection] { fusedProjections ? [.gateUp] : [.gate, .up] }

    /// Their HF module names (`q_proj`, ...; `qkv_proj`, ... for Phi-3): what `all-linear` adapts.
    public var layerLinears: [String] { layerProjections.map(\.moduleName) }

    /// (out, in) of each linear, by its HF module name; nil for a name this family's layers do not have.
    public func linearShape(_ module: String) -> (outFeatures: Int, inFeatures: Int)? {
        if module == "lm_head" { return (vocabSize, hiddenSize) }
        guard let projection = Projection(moduleName: module), layerProjections.contains(projection) else { return nil }
        return shape(of: projection)
    }

    /// (out, in) of a projection; a fused one stacks its parts' rows.
    public func shape(of projection: Projection) -> (outFeatures: Int, inFeatures: Int) {
        switch projection {
        case .q: (queryDim, hiddenSize)
        case .k, .v: (keyValueDim, hiddenSize)
        case .o: (hiddenSize, queryDim)
        case .gate, .up: (intermediateSize, hiddenSize)
        case .down: (hiddenSize, intermediateSize)
        case .qkv: (queryDim + 2 * keyValueDim, hiddenSize)
        case .gateUp: (2 * intermediateSize, hiddenSize)
        }
    }

    public func hasBias(_ module: String) -> Bool {
        switch module {
        case "q_proj", "k_proj", "v_proj": return attentionBias || qkvBiasOnly
        case "o_proj": return attentionBias
        case "gate_proj", "up_proj", "down_proj": return mlpBias
        default: return false   // Phi3's fused linears have no bias (bias=False in modeling_phi3)
        }
    }

    /// The `model_type` values of the families this decoder runs, as listed to users.
    public static let modelTypes = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3", "phi3"]
    /// Gemma 3's text decoder, and the multimodal config whose text_config holds it.
    static let gemmaModelTypes: Set<String> = ["gemma3_text", "gemma3"]
    /// Those and the aliases some Llama checkpoints write.
    static let supportedModelTypes = modelTypes + ["gemma3", "smollm", "smollm2", "tinyllama"]

    /// The norms of one decoder layer, in checkpoint order.
    public var layerNorms: [LayerNorm] {
        [.input] + (sandwichNorms ? [.postAttention, .preMLP, .postMLP] : [.preMLP]) + (qkNorm ? [.query, .key] : [])
    }

    /// Elements of one of a layer's norms: head_dim for the per-head q/k norms, else hidden.
    public func width(of norm: LayerNorm) -> Int { norm == .query || norm == .key ? headDim : hiddenSize }

    /// `model.layers.3.post_attention_layernorm.weight`, as this family names the norm.
    public func normTensorName(layer: Int, _ norm: LayerNorm) -> String {
        "model.layers.\(layer).\(norm.huggingFaceName(sandwich: sandwichNorms)).weight"
    }

    /// The RoPE a layer rotates with: the local one on a sliding layer when the family has one.
    public func rope(layer: Int) -> RoPEParameters {
        if layerType(layer) == .sliding, let localRope { return localRope }
        return RoPEParameters(theta: ropeTheta, scaling: ropeScaling)
    }

    /// The distinct RoPE tables the layers use (one, or Gemma's global and local).
    public var ropeTables: [RoPEParameters] {
        var tables: [RoPEParameters] = []
        for layer in 0..<numHiddenLayers where !tables.contains(rope(layer: layer)) { tables.append(rope(layer: layer)) }
        return tables
    }

    /// Whether a layer rotates q and k (every layer but SmolLM3's NoPE ones).
    public func usesRoPE(layer: Int) -> Bool { layer >= ropeLayers.count || ropeLayers[layer] }

    /// How many earlier positions (itself included) a layer's queries see; nil = all.
    public func attentionWindow(layer: Int) -> Int? { layerType(layer) == .sliding ? slidingWindow : nil }

    /// A layer's attention type; layers past `layerTypes` (a config edited in code) attend fully.
    public func layerType(_ layer: Int) -> LayerAttention { layer < layerTypes.count ? layerTypes[layer] : .full }

    /// The HF module path of a layer's linear: `model.layers.3.self_attn.q_proj`.
    public static func modulePath(layer: Int, linear: String) -> String {
        let group = Projection(moduleName: linear)?.group ?? "self_attn"
        return "model.layers.\(layer).\(group).\(linear)"
    }

    public static func modulePath(layer: Int, _ projection: Projection) -> String {
        "model.layers.\(layer).\(projection.group).\(projection.moduleName)"
    }

    // MARK: - Loading

    /// From `directory`/config.json, a config.json path, or a `.gguf` file's metadata.
    public static func load(directory: URL) throws -> LlamaConfig {
        if GGUFModelLoader.isGGUF(directory) { return try GGUFModelLoader.config(try GGUFFile(path: directory.path)) }
        let url = directory.hasDirectoryPath || !directory.lastPathComponent.hasSuffix(".json")
            ? directory.appendingPathComponent("config.json") : directory
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError.missingConfig(path: directory.path)
        }
        return try decode(data, path: url.path)
    }

    public static func decode(_ data: Data, path: String) throws -> LlamaConfig {
        guard let object = try? JSONSerialization.jsonObject(with: data), let dict = object as? [String: Any] else {
            throw ModelError.badConfig(path: path, reason: "config.json is not a JSON object")
        }
        // Multimodal / nested configs keep the language model under text_config.
        let json = (dict["text_config"] as? [String: Any]).map { dict.merging($0) { _, inner in inner } } ?? dict
        func int(_ key: String) throws -> Int {
            guard let value = json[key] as? NSNumber else {
                throw ModelError.badConfig(path: path, reason: "config.json lacks the integer '\(key)'")
            }
            return value.intValue
        }
        func optionalInt(_ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }
        /// A boolean key: absent or null is nil, anything but true / false is refused by name.
        func bool(_ key: String) throws -> Bool? {
            guard let value = json[key], !(value is NSNull) else { return nil }
            guard let flag = value as? Bool else {
                throw ModelError.badConfig(path: path, reason: "config.json: '\(key)' must be true or false (got \(value))")
            }
            return flag
        }
        guard let modelType = (json["model_type"] ?? "llama") as? String else {
            throw ModelError.badConfig(path: path, reason: "config.json: 'model_type' must be a string")
        }
        guard Self.supportedModelTypes.contains(modelType) else {
            throw ModelError.unsupported(path: path, reason: "model_type '\(modelType)' in config.json; supported: \(Self.modelTypes.joined(separator: ", ")) (Llama-family decoders)")
        }
        // Qwen2/Qwen3 attend over a window only when use_sliding_window is set; no released checkpoint
        // does, and this decoder attends over every position, so such a config is refused, not run wrongly.
        if try bool("use_sliding_window") == true {
            throw ModelError.unsupported(path: path, reason: "'use_sliding_window': true in config.json (Qwen's sliding-window layers are not implemented; every layer would attend over all positions)")
        }
        let gemma = Self.gemmaModelTypes.contains(modelType)
        let phi3 = modelType == "phi3"
        if try bool("use_bidirectional_attention") == true {
            throw ModelError.unsupported(path: path, reason: "'use_bidirectional_attention': true in config.json (an encoder such as EmbeddingGemma; only causal decoders run)")
        }
        let activationKey = json["hidden_activation"] != nil ? "hidden_activation" : "hidden_act"
        var activation = GatedActivation.silu
        if let value = json[activationKey], !(value is NSNull) {
            guard let name = value as? String, let parsed = GatedActivation(configValue: name) else {
                throw ModelError.unsupported(path: path, reason: "\(activationKey) '\(value)' in config.json (supported: silu, gelu_pytorch_tanh)")
            }
            activation = parsed
        }
        let heads = try int("num_attention_heads")
        var config = LlamaConfig(
            vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
            intermediateSize: try int("intermediate_size"), numHiddenLayers: try int("num_hidden_layers"),
            numAttentionHeads: heads, numKeyValueHeads: optionalInt("num_key_value_heads") ?? heads,
            // Qwen3Config's default head_dim is 128 and Gemma3TextConfig's 256, not hidden / heads.
            headDim: optionalInt("head_dim") ?? (modelType == "qwen3" ? 128 : gemma ? 256 : nil),
            rmsNormEps: Float((json["rms_norm_eps"] as? NSNumber)?.doubleValue ?? 1e-6),
            maxPositionEmbeddings: optionalInt("max_position_embeddings") ?? 2048,
            tieWordEmbeddings: try bool("tie_word_embeddings") ?? gemma, modelType: modelType)
        config.activation = activation
        // The sizes first: the per-layer lists below are as long as num_hidden_layers says.
        try config.validate(path: path)
        // RoPE: transformers 5 writes rope_parameters (Gemma 3: one per layer type); older configs
        // rope_theta + rope_scaling (+ Gemma's rope_local_base_freq for the sliding layers).
        let ropeParameters = json["rope_parameters"] as? [String: Any]
        if gemma {
            let global = ropeParameters?["full_attention"] as? [String: Any]
            let local = ropeParameters?["sliding_attention"] as? [String: Any]
            let globalRoPE = try Self.rope(global ?? (json["rope_scaling"] as? [String: Any]),
                                           theta: global?["rope_theta"] ?? json["rope_theta"], defaultTheta: 1_000_000, path: path)
            config.ropeTheta = globalRoPE.theta
            config.ropeScaling = globalRoPE.scaling
            config.localRope = try Self.rope(local, theta: local?["rope_theta"] ?? json["rope_local_base_freq"], defaultTheta: 10_000, path: path)
        } else {
            // Phi3Config: partial_rotary_factor at the top level or in rope_parameters, and LongRoPE's
            // pretraining length original_max_position_embeddings at the top level (class default 4096),
            // which transformers prefers over the one in the rope dict.
            let rotary = ropeParameters?["partial_rotary_factor"] ?? json["partial_rotary_factor"]
            if let rotary, !(rotary is NSNull) {
                guard let factor = (rotary as? NSNumber)?.doubleValue, factor > 0, factor <= 1 else {
                    throw ModelError.badConfig(path: path, reason: "config.json: partial_rotary_factor must be a number in (0, 1] (got \(rotary))")
                }
                guard phi3 || factor == 1 else {
                    throw ModelError.unsupported(path: path, reason: "partial_rotary_factor \(factor) in config.json with model_type '\(modelType)' (partial rotary is applied for model_type phi3 only)")
                }
                config.partialRotaryFactor = factor
            }
            let original = phi3 ? (optionalInt("original_max_position_embeddings") ?? 4096) : nil
            let rope = try Self.rope(ropeParameters ?? (json["rope_scaling"] as? [String: Any]),
                                     theta: ropeParameters?["rope_theta"] ?? json["rope_theta"], defaultTheta: 10000, path: path,
                                     longRoPE: (maxPositions: config.maxPositionEmbeddings, originalMaxPositions: original,
                                                frequencies: config.rotaryDim / 2, phi3: phi3))
            config.ropeTheta = rope.theta
            config.ropeScaling = rope.scaling
        }
        // Attention windows: Gemma 3 per layer (layer_types, or every 6th layer global); Mistral on every
        // layer when sliding_window is set.
        let window = optionalInt("sliding_window")
        if gemma {
            config.slidingWindow = window ?? 4096
            if let types = json["layer_types"] as? [Any] {
                config.layerTypes = try types.enumerated().map { index, value in
                    guard let name = value as? String, let type = LayerAttention(rawValue: name) else {
                        throw ModelError.unsupported(path: path, reason: "layer_types[\(index)] '\(value)' in config.json (supported: full_attention, sliding_attention)")
                    }
                    return type
                }
            } else {
                let pattern = optionalInt("sliding_window_pattern") ?? 6
                config.layerTypes = (0..<config.numHiddenLayers).map { (pattern > 0 && ($0 + 1) % pattern == 0) ? .full : .sliding }
            }
            guard config.layerTypes.count == config.numHiddenLayers else {
                throw ModelError.badConfig(path: path, reason: "config.json: layer_types has \(config.layerTypes.count) entries for \(config.numHiddenLayers) layers")
            }
        } else if modelType == "mistral" || phi3, let window {
            // Phi3Model builds create_sliding_window_causal_mask for every layer when sliding_window is set.
            config.slidingWindow = window
            config.layerTypes = Array(repeating: .sliding, count: config.numHiddenLayers)
        }
        if let window = config.slidingWindow, window <= 0, config.layerTypes.contains(.sliding) {
            throw ModelError.badConfig(path: path, reason: "config.json: sliding_window (\(window)) must be positive")
        }
        if gemma {
            config.normWeightOffset = 1
            config.sandwichNorms = true
            config.embeddingScale = Float(Double(config.hiddenSize).squareRoot())
            let scalar = (json["query_pre_attn_scalar"] as? NSNumber)?.doubleValue ?? 256
            guard scalar > 0 else { throw ModelError.badConfig(path: path, reason: "config.json: query_pre_attn_scalar must be positive") }
            config.attentionScale = Float(Foundation.pow(scalar, -0.5))
        }
        if modelType == "smollm3" {
            // SmolLM3Config: no_rope_layers, or a NoPE layer every no_rope_layer_interval layers.
            if let flags = json["no_rope_layers"] as? [Any] {
                config.ropeLayers = try flags.enumerated().map { index, value in
                    guard let flag = (value as? NSNumber)?.intValue, flag == 0 || flag == 1 else {
                        throw ModelError.badConfig(path: path, reason: "config.json: no_rope_layers[\(index)] must be 0 or 1 (got \(value))")
                    }
                    return flag == 1
                }
                guard config.ropeLayers.count == config.numHiddenLayers else {
                    throw ModelError.badConfig(path: path, reason: "config.json: no_rope_layers has \(config.ropeLayers.count) entries for \(config.numHiddenLayers) layers")
                }
            } else {
                let interval = optionalInt("no_rope_layer_interval") ?? 4
                config.ropeLayers = (0..<config.numHiddenLayers).map { interval <= 0 || ($0 + 1) % interval != 0 }
            }
        }
        if let cap = json["attn_logit_softcapping"], !(cap is NSNull) {
            throw ModelError.unsupported(path: path, reason: "attn_logit_softcapping \(cap) in config.json (soft-capped attention scores are not implemented)")
        }
        if let cap = json["final_logit_softcapping"], !(cap is NSNull) {
            guard let value = (cap as? NSNumber)?.floatValue, value > 0 else {
                throw ModelError.badConfig(path: path, reason: "config.json: final_logit_softcapping must be a positive number (got \(cap))")
            }
            config.finalLogitSoftcap = value
        }
        config.attentionBias = try bool("attention_bias") ?? false
        config.qkvBiasOnly = modelType == "qwen2"
        config.mlpBias = try bool("mlp_bias") ?? false
        if phi3 {
            // Phi3ForCausalLM: fused qkv_proj / gate_up_proj, no biases whatever the config says (transformers
            // would build bias-free linears and drop a checkpoint's biases), so a config asking for them is refused.
            config.fusedProjections = true
            for key in ["attention_bias", "mlp_bias"] where try bool(key) == true {
                throw ModelError.unsupported(path: path, reason: "'\(key)': true in config.json with model_type phi3 (Phi3ForCausalLM's qkv_proj, o_proj, gate_up_proj and down_proj have no bias)")
            }
            config.attentionBias = false
            config.mlpBias = false
        }
        config.qkNorm = modelType == "qwen3" || gemma
        config.bosTokenID = optionalInt("bos_token_id")
        if let eos = json["eos_token_id"] as? NSNumber {
            config.eosTokenIDs = [eos.intValue]
        } else if let list = json["eos_token_id"] as? [NSNumber] {
            config.eosTokenIDs = list.map(\.intValue)
        }
        config.padTokenID = optionalInt("pad_token_id")
        config.dtype = (json["dtype"] ?? json["torch_dtype"]) as? String
        if json["quantization_config"] != nil {
            guard let quant = try? JSONValue.parse(data: data)["quantization_config"], quant.members != nil else {
                throw ModelError.badConfig(path: path, reason: "quantization_config is not an object")
            }
            config.quantizationConfig = quant
        }
        try config.validate(path: path)
        return config
    }

    /// What LongRoPE needs of the rest of the config: max_position_embeddings, Phi-3's top-level
    /// original_max_position_embeddings, the rotated frequencies per head (R/2), whether the family is Phi-3.
    typealias LongRoPEContext = (maxPositions: Int, originalMaxPositions: Int?, frequencies: Int, phi3: Bool)

    /// One RoPE table's parameters from a `rope_parameters` / `rope_scaling` object (nil = plain RoPE).
    static func rope(_ scaling: [String: Any]?, theta: Any?, defaultTheta: Double, path: String,
                     longRoPE: LongRoPEContext? = nil) throws -> RoPEParameters {
        var result = RoPEParameters(theta: (theta as? NSNumber)?.doubleValue ?? defaultTheta, scaling: nil)
        guard let scaling else { return result }
        var type = (scaling["rope_type"] ?? scaling["type"]) as? String ?? "default"
        // Phi3Config.convert_rope_params_to_dict renames the older "su" and "yarn" to "longrope".
        if longRoPE?.phi3 == true, type == "su" || type == "yarn" { type = "longrope" }
        switch type {
        case "default": break
        case "linear", "llama3":
            result.scaling = RoPEScaling(
                type: type, factor: (scaling["factor"] as? NSNumber)?.doubleValue ?? 1,
                lowFreqFactor: (scaling["low_freq_factor"] as? NSNumber)?.doubleValue ?? 1,
                highFreqFactor: (scaling["high_freq_factor"] as? NSNumber)?.doubleValue ?? 4,
                originalMaxPositions: (scaling["original_max_position_embeddings"] as? NSNumber)?.intValue ?? 8192)
        case "longrope":
            // Any family, as transformers' ROPE_INIT_FUNCTIONS (a Llama 3.1 GGUF's rope_freqs is written so).
            guard let context = longRoPE else {
                throw ModelError.unsupported(path: path, reason: "rope type 'longrope' in config.json for Gemma's local/global tables (supported there: default, linear, llama3)")
            }
            func factors(_ key: String) throws -> [Double] {
                guard let list = scaling[key] as? [Any] else {
                    throw ModelError.badConfig(path: path, reason: "config.json: longrope needs '\(key)', a list of \(context.frequencies) numbers")
                }
                let values = list.compactMap { ($0 as? NSNumber)?.doubleValue }
                guard values.count == list.count, values.count == context.frequencies, values.allSatisfy({ $0 > 0 }) else {
                    throw ModelError.badConfig(path: path, reason: "config.json: longrope '\(key)' must be \(context.frequencies) positive numbers (head_dim * partial_rotary_factor / 2), got \(list.count) entries")
                }
                return values
            }
            // transformers' _compute_longrope_parameters (after standardize_rope_params).
            let original = context.originalMaxPositions ?? (scaling["original_max_position_embeddings"] as? NSNumber)?.intValue ?? context.maxPositions
            guard original > 0 else { throw ModelError.badConfig(path: path, reason: "config.json: original_max_position_embeddings must be positive") }
            let factor = (scaling["factor"] as? NSNumber)?.doubleValue ?? Double(context.maxPositions) / Double(original)
            let attention = (scaling["attention_factor"] as? NSNumber)?.doubleValue
                ?? RoPEScaling.longRoPEAttentionFactor(factor: factor, originalMaxPositions: original)
            result.scaling = RoPEScaling(type: type, factor: factor, originalMaxPositions: original,
                                         shortFactor: try factors("short_factor"), longFactor: try factors("long_factor"),
                                         attentionFactor: attention)
        default:
            throw ModelError.unsupported(path: path, reason: "rope type '\(type)' in config.json (supported: default, linear, llama3\(longRoPE != nil ? ", longrope" : ""))")
        }
        return result
    }

    /// Upper bounds `validate` enforces (2^31 ids fit Int32 token ids; 2^20 is 1000x a 70B model's width).
    public static let maxVocabSize = Int(Int32.max), maxWidth = 1 << 20, maxLayers = 1 << 12, maxPositions = 1 << 30

    public func validate(path: String) throws {
        // In order, each check only once the ones before it hold (a remainder by zero heads, a product
        // of negative sizes would trap otherwise).
        func check(_ ok: @autoclosure () -> Bool, _ reason: @autoclosure () -> String) throws {
            guard ok() else { throw ModelError.badConfig(path: path, reason: "config.json: \(reason())") }
        }
        try check(vocabSize > 0 && hiddenSize > 0 && intermediateSize > 0 && numHiddenLayers > 0, "sizes must be positive")
        try check(numAttentionHeads > 0 && numKeyValueHeads > 0, "head counts must be positive")
        // Bounds far above any real model, so that every size product fits an Int and no allocation is
        // sized by a corrupt number.
        try check(vocabSize <= Self.maxVocabSize, "vocab_size (\(vocabSize)) must be at most \(Self.maxVocabSize)")
        try check(hiddenSize <= Self.maxWidth && intermediateSize <= Self.maxWidth,
                  "hidden_size (\(hiddenSize)) and intermediate_size (\(intermediateSize)) must be at most \(Self.maxWidth)")
        try check(numHiddenLayers <= Self.maxLayers, "num_hidden_layers (\(numHiddenLayers)) must be at most \(Self.maxLayers)")
        try check(numAttentionHeads <= Self.maxLayers && numKeyValueHeads <= Self.maxLayers,
                  "head counts (\(numAttentionHeads), \(numKeyValueHeads)) must be at most \(Self.maxLayers)")
        try check(numAttentionHeads % numKeyValueHeads == 0, "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        try check(headDim > 0 && headDim % 2 == 0, "head_dim (\(headDim)) must be even for RoPE")
        try check(rotaryDim > 0 && rotaryDim % 2 == 0, "head_dim * partial_rotary_factor (\(rotaryDim)) must be even and positive for RoPE")
        try check(headDim <= Self.maxWidth && numAttentionHeads * headDim <= Self.maxWidth,
                  "num_attention_heads x head_dim (\(numAttentionHeads) x \(headDim)) must be at most \(Self.maxWidth)")
        try check(maxPositionEmbeddings > 0 && maxPositionEmbeddings <= Self.maxPositions,
                  "max_position_embeddings (\(maxPositionEmbeddings)) must be in 1...\(Self.maxPositions)")
        try check(!layerTypes.contains(.sliding) || (slidingWindow ?? 0) > 0, "sliding_window must be set and positive for sliding_attention layers")
        try check(layerTypes.isEmpty || layerTypes.count == numHiddenLayers, "layer_types has \(layerTypes.count) entries for \(numHiddenLayers) layers")
    }

    // MARK: - Parameter counts (shared with the memory plan)

    /// Elements of every linear weight in the decoder layers (what QLoRA quantizes).
    public var decoderLinearParameterCount: Int {
        layerProjections.reduce(0) { total, projection in
            let s = shape(of: projection)
            return total + s.outFeatures * s.inFeatures
        } * numHiddenLayers
    }

    /// One line for users: the family and the switches the decoder block runs it with, e.g.
    /// "qwen3: 28 layers, hidden 1024, 16 / 8 kv heads, head_dim 128, q/k norm, tied embeddings".
    public var architectureSummary: String {
        var parts = ["\(numHiddenLayers) layers", "hidden \(hiddenSize)", "intermediate \(intermediateSize)",
                     "\(numAttentionHeads) / \(numKeyValueHeads) kv heads", "head_dim \(headDim)", "vocab \(vocabSize)"]
        if qkNorm { parts.append("q/k norm") }
        if normWeightOffset != 0 { parts.append("(1 + w) norms") }
        if sandwichNorms { parts.append("sandwich norms") }
        if activation == .geluTanh { parts.append("GeGLU") }
        if embeddingScale != nil { parts.append("scaled embeddings") }
        if let slidingWindow, layerTypes.contains(.sliding) {
            let sliding = layerTypes.filter { $0 == .sliding }.count
            parts.append("sliding window \(slidingWindow) on \(sliding) of \(numHiddenLayers) layers")
        }
        if localRope != nil { parts.append("local RoPE base \(localRope!.theta)") }
        if let finalLogitSoftcap { parts.append("logit softcap \(finalLogitSoftcap)") }
        if ropeLayers.contains(false) { parts.append("no RoPE on \(ropeLayers.filter { !$0 }.count) of \(numHiddenLayers) layers") }
        if attentionBias { parts.append("q/k/v/o bias") } else if qkvBiasOnly { parts.append("q/k/v bias") }
        if mlpBias { parts.append("mlp bias") }
        if fusedProjections { parts.append("fused qkv / gate_up") }
        if rotaryDim != headDim { parts.append("RoPE on \(rotaryDim) of \(headDim) dims") }
        if let scaling = ropeScaling, scaling.type == "longrope" { parts.append("LongRoPE from \(scaling.originalMaxPositions) positions") }
        if tieWordEmbeddings { parts.append("tied embeddings") }
        return "\(modelType): " + parts.joined(separator: ", ")
    }

    /// Norm weights of one decoder layer: input and pre-MLP (C each), q_norm and k_norm (D each), the
    /// sandwich norms (C each).
    public var layerNormParameterCount: Int { layerNorms.reduce(0) { $0 + width(of: $1) } }

    /// Every parameter of the model (tied lm_head counted once, as HF does).
    public var totalParameterCount: Int {
        let embed = vocabSize * hiddenSize
        let norms = numHiddenLayers * layerNormParameterCount + hiddenSize
        let biases = numHiddenLayers * layerLinears.reduce(0) { $0 + (hasBias($1) ? linearShape($1)!.outFeatures : 0) }
        return embed + (tieWordEmbeddings ? 0 : embed) + norms + biases + decoderLinearParameterCount
    }
}
