import Foundation
import SafeTensors
import GGUF

/// A Llama-family architecture read from Hugging Face `config.json` (Llama 2/3, SmolLM2, TinyLlama,
/// Mistral-style, Qwen2 with q/k/v biases, Qwen3 with per-head q/k norms). Property names are camelCase
/// of the HF keys; the families differ only by the switches below, read by the one decoder block.
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
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = false
        self.qkvBiasOnly = false
        self.mlpBias = false
        self.qkNorm = false
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

    /// (out, in) of each Llama linear, by its HF module name.
    public func linearShape(_ module: String) -> (outFeatures: Int, inFeatures: Int)? {
        switch module {
        case "q_proj": return (queryDim, hiddenSize)
        case "k_proj", "v_proj": return (keyValueDim, hiddenSize)
        case "o_proj": return (hiddenSize, queryDim)
        case "gate_proj", "up_proj": return (intermediateSize, hiddenSize)
        case "down_proj": return (hiddenSize, intermediateSize)
        case "lm_head": return (vocabSize, hiddenSize)
        default: return nil
        }
    }

    public func hasBias(_ module: String) -> Bool {
        switch module {
        case "q_proj", "k_proj", "v_proj": return attentionBias || qkvBiasOnly
        case "o_proj": return attentionBias
        case "gate_proj", "up_proj", "down_proj": return mlpBias
        default: return false
        }
    }

    /// The `model_type` values of the families this decoder runs, as listed to users.
    public static let modelTypes = ["llama", "mistral", "qwen2", "qwen3"]
    /// Those and the aliases some Llama checkpoints write.
    static let supportedModelTypes = modelTypes + ["smollm", "smollm2", "tinyllama"]

    /// The seven projections of a decoder layer, in PEFT's usual order.
    public static let layerLinears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    /// The HF module path of a layer's linear: `model.layers.3.self_attn.q_proj`.
    public static func modulePath(layer: Int, linear: String) -> String {
        let group = ["gate_proj", "up_proj", "down_proj"].contains(linear) ? "mlp" : "self_attn"
        return "model.layers.\(layer).\(group).\(linear)"
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
            throw ModelError.unsupported(path: path, reason: "'use_sliding_window': true in config.json (sliding-window attention is not implemented; every layer attends over all positions)")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw ModelError.unsupported(path: path, reason: "hidden_act '\(act)' (only silu / SwiGLU)")
        }
        let heads = try int("num_attention_heads")
        var config = LlamaConfig(
            vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
            intermediateSize: try int("intermediate_size"), numHiddenLayers: try int("num_hidden_layers"),
            numAttentionHeads: heads, numKeyValueHeads: optionalInt("num_key_value_heads") ?? heads,
            // Qwen3Config's default head_dim is 128, not hidden / heads.
            headDim: optionalInt("head_dim") ?? (modelType == "qwen3" ? 128 : nil),
            rmsNormEps: Float((json["rms_norm_eps"] as? NSNumber)?.doubleValue ?? 1e-6),
            maxPositionEmbeddings: optionalInt("max_position_embeddings") ?? 2048,
            tieWordEmbeddings: try bool("tie_word_embeddings") ?? false, modelType: modelType)
        // RoPE: transformers 5 writes rope_parameters; older configs rope_theta + rope_scaling.
        let ropeParameters = json["rope_parameters"] as? [String: Any]
        let scaling = ropeParameters ?? (json["rope_scaling"] as? [String: Any])
        config.ropeTheta = ((ropeParameters?["rope_theta"] ?? json["rope_theta"]) as? NSNumber)?.doubleValue ?? 10000
        if let scaling {
            let type = (scaling["rope_type"] ?? scaling["type"]) as? String ?? "default"
            switch type {
            case "default": break
            case "linear", "llama3":
                config.ropeScaling = RoPEScaling(
                    type: type, factor: (scaling["factor"] as? NSNumber)?.doubleValue ?? 1,
                    lowFreqFactor: (scaling["low_freq_factor"] as? NSNumber)?.doubleValue ?? 1,
                    highFreqFactor: (scaling["high_freq_factor"] as? NSNumber)?.doubleValue ?? 4,
                    originalMaxPositions: (scaling["original_max_position_embeddings"] as? NSNumber)?.intValue ?? 8192)
            default:
                throw ModelError.unsupported(path: path, reason: "rope type '\(type)' (supported: default, linear, llama3)")
            }
        }
        config.attentionBias = try bool("attention_bias") ?? false
        config.qkvBiasOnly = modelType == "qwen2"
        config.mlpBias = try bool("mlp_bias") ?? false
        config.qkNorm = modelType == "qwen3"
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

    public func validate(path: String) throws {
        let checks: [(Bool, String)] = [
            (vocabSize > 0 && hiddenSize > 0 && intermediateSize > 0 && numHiddenLayers > 0, "sizes must be positive"),
            (numAttentionHeads > 0 && numKeyValueHeads > 0, "head counts must be positive"),
            (numAttentionHeads % numKeyValueHeads == 0, "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))"),
            (headDim > 0 && headDim % 2 == 0, "head_dim (\(headDim)) must be even for RoPE"),
        ]
        for (ok, reason) in checks where !ok {
            throw ModelError.badConfig(path: path, reason: "config.json: \(reason)")
        }
    }

    // MARK: - Parameter counts (shared with the memory plan)

    /// Elements of every linear weight in the decoder layers (what QLoRA quantizes).
    public var decoderLinearParameterCount: Int {
        Self.layerLinears.reduce(0) { total, name in
            let s = linearShape(name)!
            return total + s.outFeatures * s.inFeatures
        } * numHiddenLayers
    }

    /// One line for users: the family and the switches the decoder block runs it with, e.g.
    /// "qwen3: 28 layers, hidden 1024, 16 / 8 kv heads, head_dim 128, q/k norm, tied embeddings".
    public var architectureSummary: String {
        var parts = ["\(numHiddenLayers) layers", "hidden \(hiddenSize)", "intermediate \(intermediateSize)",
                     "\(numAttentionHeads) / \(numKeyValueHeads) kv heads", "head_dim \(headDim)", "vocab \(vocabSize)"]
        if qkNorm { parts.append("q/k norm") }
        if attentionBias { parts.append("q/k/v/o bias") } else if qkvBiasOnly { parts.append("q/k/v bias") }
        if mlpBias { parts.append("mlp bias") }
        if tieWordEmbeddings { parts.append("tied embeddings") }
        return "\(modelType): " + parts.joined(separator: ", ")
    }

    /// Norm weights of one decoder layer: input and post-attention (C each), q_norm and k_norm (D each).
    public var layerNormParameterCount: Int { 2 * hiddenSize + (qkNorm ? 2 * headDim : 0) }

    /// Every parameter of the model (tied lm_head counted once, as HF does).
    public var totalParameterCount: Int {
        let embed = vocabSize * hiddenSize
        let norms = numHiddenLayers * layerNormParameterCount + hiddenSize
        let biases = numHiddenLayers * Self.layerLinears.reduce(0) { $0 + (hasBias($1) ? linearShape($1)!.outFeatures : 0) }
        return embed + (tieWordEmbeddings ? 0 : embed) + norms + biases + decoderLinearParameterCount
    }
}
