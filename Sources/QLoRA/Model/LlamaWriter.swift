import Foundation
import SafeTensors

/// Writes a LlamaModel as a Hugging Face model directory (config.json + model.safetensors) that
/// transformers loads with `from_pretrained`: the tensor names and layout of `save_pretrained`.
public enum LlamaWriter {
    /// `dtype` is F32 or BF16. `sourceConfig` is the original config.json (kept verbatim when nothing in it
    /// changes; otherwise rewritten without `quantization_config` and with the new dtype).
    public static func save(_ model: LlamaModel, to directory: URL, dtype: DType = .F32, sourceConfig: Data? = nil) throws {
        precondition(dtype == .F32 || dtype == .BF16)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = model.config
        var tensors: [(TensorEntry, Data)] = []
        func add(_ name: String, _ shape: [Int], _ values: UnsafeBufferPointer<Float>) {
            let data: Data
            if dtype == .F32 {
                data = Data(buffer: values)
            } else {
                data = Data(values.map { HalfFloat.bfloat16FromFloat($0) }.withUnsafeBufferPointer { Data(buffer: $0) })
            }
            tensors.append((TensorEntry(name: name, dtype: dtype, shape: shape), data))
        }
        func addLinear(_ name: String, _ linear: BaseLinear) {
            let values = [Float](unsafeUninitializedCapacity: linear.outFeatures * linear.inFeatures) { out, count in
                linear.weight.writeTile(rows: 0..<linear.outFeatures, into: out.baseAddress!, precision: .fp32)
                count = linear.outFeatures * linear.inFeatures
            }
            values.withUnsafeBufferPointer { add(name + ".weight", [linear.outFeatures, linear.inFeatures], $0) }
            if let bias = linear.bias { add(name + ".bias", [bias.count], UnsafeBufferPointer(bias)) }
        }
        model.embedTokens.floats().withUnsafeBufferPointer { add("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize], $0) }
        for (index, layer) in model.layers.enumerated() {
            for norm in config.layerNorms {
                add(config.normTensorName(layer: index, norm), [config.width(of: norm)], UnsafeBufferPointer(layer.norm(norm)!))
            }
            for projection in config.layerProjections {
                addLinear(LlamaConfig.modulePath(layer: index, projection), layer.linear(projection))
            }
        }
        add("model.norm.weight", [config.hiddenSize], UnsafeBufferPointer(model.norm))
        if !config.tieWordEmbeddings { addLinear("lm_head", model.lmHead) }
        try SafeTensorsWriter.write(path: directory.appendingPathComponent("model.safetensors").path, tensors: tensors,
                                    metadata: ["format": "pt"])
        try AtomicFile.write(configJSON(for: model, dtype: dtype, source: sourceConfig), to: directory.appendingPathComponent("config.json"))
    }

    /// The config.json to write: the source verbatim when it already describes this dense model.
    static func configJSON(for model: LlamaModel, dtype: DType, source: Data?) throws -> Data {
        let dtypeName = dtype == .F32 ? "float32" : "bfloat16"
        if let source, let parsed = try? JSONValue.parse(data: source), var members = parsed.members {
            let unchanged = members["quantization_config"] == nil && (members["dtype"] ?? members["torch_dtype"])?.stringValue == dtypeName
            if unchanged { return source }
            members["quantization_config"] = nil
            members["torch_dtype"] = nil
            members["dtype"] = .string(dtypeName)
            return Data((PythonJSON.dumps(.dictionary(members)) + "\n").utf8)
        }
        return Data((PythonJSON.dumps(minimalConfig(model.config, dtype: dtypeName)) + "\n").utf8)
    }

    /// A transformers-style LlamaConfig for models that did not come from a config.json (demo, random).
    public static func minimalConfig(_ c: LlamaConfig, dtype: String) -> JSONValue {
        var fields: [String: JSONValue] = [
            "architectures": .array([.string(Self.architecture(c.modelType))]),
            "attention_bias": .bool(c.attentionBias), "attention_dropout": .number(0), "dtype": .string(dtype),
            "head_dim": .int(c.headDim), "hidden_act": .string("silu"), "hidden_size": .int(c.hiddenSize),
            "intermediate_size": .int(c.intermediateSize), "max_position_embeddings": .int(c.maxPositionEmbeddings),
            "mlp_bias": .bool(c.mlpBias), "model_type": .string(c.modelType), "num_attention_heads": .int(c.numAttentionHeads),
            "num_hidden_layers": .int(c.numHiddenLayers), "num_key_value_heads": .int(c.numKeyValueHeads),
            "rms_norm_eps": .number(Double(c.rmsNormEps)), "tie_word_embeddings": .bool(c.tieWordEmbeddings),
            "vocab_size": .int(c.vocabSize), "use_cache": .bool(true),
        ]
        func rope(_ parameters: RoPEParameters) -> JSONValue {
            var rope: [String: JSONValue] = ["rope_theta": .number(parameters.theta), "rope_type": .string(parameters.scaling?.type ?? "default")]
            if let s = parameters.scaling {
                rope["factor"] = .number(s.factor)
                if s.type == "llama3" {
                    rope["low_freq_factor"] = .number(s.lowFreqFactor)
                    rope["high_freq_factor"] = .number(s.highFreqFactor)
                    rope["original_max_position_embeddings"] = .int(s.originalMaxPositions)
                }
                if s.type == "longrope" {
                    rope["short_factor"] = .array(s.shortFactor.map(JSONValue.number))
                    rope["long_factor"] = .array(s.longFactor.map(JSONValue.number))
                    rope["original_max_position_embeddings"] = .int(s.originalMaxPositions)
                    // Written only when it is not the one transformers derives from factor (as the source had it).
                    if s.attentionFactor != RoPEScaling.longRoPEAttentionFactor(factor: s.factor, originalMaxPositions: s.originalMaxPositions) {
                        rope["attention_factor"] = .number(s.attentionFactor)
                    }
                }
            }
            return .dictionary(rope)
        }
        let global = rope(RoPEParameters(theta: c.ropeTheta, scaling: c.ropeScaling))
        if LlamaConfig.gemmaModelTypes.contains(c.modelType) {
            // Gemma3TextConfig: one RoPE per layer type, hidden_activation, the attention scalar, the windows.
            fields["hidden_activation"] = .string(c.activation.rawValue)
            fields.removeValue(forKey: "hidden_act")
            fields["rope_parameters"] = .dictionary(["full_attention": global,
                                                     "sliding_attention": rope(c.localRope ?? RoPEParameters(theta: c.ropeTheta, scaling: c.ropeScaling))])
            // An integer, as Gemma3TextConfig declares it (transformers refuses 256.0).
            fields["query_pre_attn_scalar"] = .int(Int(Double(1 / (c.attentionScale * c.attentionScale)).rounded()))
            fields["layer_types"] = .array(c.layerTypes.map { .string($0.rawValue) })
            fields["sliding_window"] = c.slidingWindow.map(JSONValue.int) ?? .null
            fields["final_logit_softcapping"] = c.finalLogitSoftcap.map { .number(Double($0)) } ?? .null
            fields["attn_logit_softcapping"] = .null
        } else {
            fields["rope_parameters"] = global
            if let window = c.slidingWindow { fields["sliding_window"] = .int(window) }
            if c.partialRotaryFactor != 1, var members = fields["rope_parameters"]?.members {
                members["partial_rotary_factor"] = .number(c.partialRotaryFactor)
                fields["rope_parameters"] = .dictionary(members)
            }
            if let s = c.ropeScaling, s.type == "longrope" { fields["original_max_position_embeddings"] = .int(s.originalMaxPositions) }
            if c.modelType == "smollm3" { fields["no_rope_layers"] = .array((0..<c.numHiddenLayers).map { .int(c.usesRoPE(layer: $0) ? 1 : 0) }) }
        }
        if let bos = c.bosTokenID { fields["bos_token_id"] = .int(bos) }
        if let eos = c.eosTokenIDs.first { fields["eos_token_id"] = c.eosTokenIDs.count == 1 ? .int(eos) : .array(c.eosTokenIDs.map(JSONValue.int)) }
        if let pad = c.padTokenID { fields["pad_token_id"] = .int(pad) }
        return .dictionary(fields)
    }

    /// transformers' class of each model_type (aliases of llama are Llama).
    static func architecture(_ modelType: String) -> String {
        switch modelType {
        case "qwen2": return "Qwen2ForCausalLM"
        case "qwen3": return "Qwen3ForCausalLM"
        case "mistral": return "MistralForCausalLM"
        case "gemma3_text", "gemma3": return "Gemma3ForCausalLM"
        case "smollm3": return "SmolLM3ForCausalLM"
        case "phi3": return "Phi3ForCausalLM"
        default: return "LlamaForCausalLM"
        }
    }

    /// Files beside the weights that a model written from another one keeps (tokenizer, chat template,
    /// generation config).
    public static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                        "chat_template.jinja", "generation_config.json"]

    /// Copies the companion files `source` has into `directory` (each written atomically); returns their names.
    @discardableResult
    public static func copyCompanionFiles(from source: URL, to directory: URL) throws -> [String] {
        var copied: [String] = []
        for file in companionFiles {
            guard let data = try? Data(contentsOf: source.appendingPathComponent(file)) else { continue }
            try AtomicFile.write(data, to: directory.appendingPathComponent(file))
            copied.append(file)
        }
        return copied
    }
}
