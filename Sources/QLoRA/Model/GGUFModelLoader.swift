import Foundation
import GGUF

/// A Llama-family model from a GGUF file (llama.cpp's format): hyperparameters from the `{arch}.*`
/// metadata, tensors by llama.cpp's names, the base linears kept in their GGUF blocks (`.stored`) or
/// converted on load like a safetensors checkpoint's.
public enum GGUFModelLoader {
    /// Architectures whose block is our decoder block. llama.cpp's converter permutes q/k rows for its
    /// rotary layout in `llama` (which SmolLM2 and Mistral use) and `smollm3`; qwen2, qwen3, gemma3 and
    /// phi3 keep Hugging Face's order (phi3's q/k/v are fused in attn_qkv, gate/up in ffn_up, as in the
    /// checkpoint).
    static let architectures = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "smollm3", "phi3"]
    /// llama.cpp's `smollm3`: no RoPE on every 4th layer, hard-coded (n_no_rope_layer_step; no GGUF key),
    /// which is transformers' default `no_rope_layer_interval`.
    static let smolLM3NoRoPEInterval = 4
    static let unpermuted: Set<String> = ["qwen2", "qwen3", "gemma3_text", "phi3"]

    /// Our model_type of a GGUF architecture (Gemma 3's text decoder is `gemma3_text` in transformers).
    static func modelType(architecture: String) -> String { architecture == "gemma3" ? "gemma3_text" : architecture }

    public static func isGGUF(_ url: URL) -> Bool { url.pathExtension.lowercased() == "gguf" }

    /// The HF-style config the file's metadata describes.
    public static func config(_ file: GGUFFile) throws -> LlamaConfig {
        let path = file.path
        guard let arch = file.architecture else { throw GGUFError.missingKey(path: path, key: "general.architecture") }
        guard architectures.contains(arch) else {
            throw ModelError.unsupported(path: path, reason: "GGUF architecture '\(arch)' (supported: \(architectures.joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = file["\(arch).\(key)"]?.int else { throw GGUFError.missingKey(path: path, key: "\(arch).\(key)") }
            return v
        }
        func optional(_ key: String) -> GGUFValue? { file["\(arch).\(key)"] }
        let hidden = try int("embedding_length"), heads = try int("attention.head_count")
        let embed = try file.info("token_embd.weight")
        guard embed.dimensions.count == 2 else {
            throw ModelError.wrongShape(path: path, tensor: "token_embd.weight", expected: [-1, hidden], actual: embed.shape)
        }
        let vocab = optional("vocab_size")?.int ?? embed.dimensions[1]
        var config = LlamaConfig(
            vocabSize: vocab, hiddenSize: hidden, intermediateSize: try int("feed_forward_length"),
            numHiddenLayers: try int("block_count"), numAttentionHeads: heads,
            numKeyValueHeads: optional("attention.head_count_kv")?.int ?? heads,
            headDim: optional("attention.key_length")?.int,
            rmsNormEps: Float(optional("attention.layer_norm_rms_epsilon")?.double ?? 1e-5),
            ropeTheta: optional("rope.freq_base")?.double ?? 10000,
            maxPositionEmbeddings: optional("context_length")?.int ?? 2048,
            tieWordEmbeddings: !file.contains("output.weight"), modelType: modelType(architecture: arch))
        if let type = optional("rope.scaling.type")?.string, type != "none" {
            guard type == "linear", let factor = optional("rope.scaling.factor")?.double else {
                throw ModelError.unsupported(path: path, reason: "GGUF rope scaling '\(type)' (supported: none, linear)")
            }
            config.ropeScaling = RoPEScaling(type: "linear", factor: factor, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192)
        }
        if file.contains("rope_freqs.weight") {
            guard config.ropeScaling == nil else {
                throw ModelError.unsupported(path: path, reason: "rope_freqs.weight together with \(arch).rope.scaling.type (two RoPE scalings)")
            }
            config.ropeScaling = try ropeFrequencyFactors(file, rotaryDim: config.rotaryDim, maxPositions: config.maxPositionEmbeddings)
        }
        config.qkvBiasOnly = file.contains("blk.0.attn_q.bias") && !file.contains("blk.0.attn_output.bias")
        config.attentionBias = file.contains("blk.0.attn_output.bias")
        config.mlpBias = file.contains("blk.0.ffn_up.bias")
        config.qkNorm = arch == "qwen3" || arch == "gemma3"
        if !config.qkNorm && (file.contains("blk.0.attn_q_norm.weight") || file.contains("blk.0.attn_k_norm.weight")) {
            throw ModelError.unsupported(path: path, reason: "tensor 'blk.0.attn_q_norm.weight' (per-head q/k norm) in a '\(arch)' GGUF; only architectures qwen3 and gemma3 apply q/k norms")
        }
        if arch == "gemma3" {
            // What transformers' GGUF loader fills in from Gemma3TextConfig's defaults (llama.cpp hard-codes
            // the same: every 6th layer global, local RoPE base 10000).
            config.normWeightOffset = 1
            config.sandwichNorms = true
            config.activation = .geluTanh
            config.embeddingScale = Float(Double(hidden).squareRoot())
            config.attentionScale = Float(Foundation.pow(256.0, -0.5))   // query_pre_attn_scalar's default
            config.slidingWindow = optional("attention.sliding_window")?.int ?? 4096
            config.layerTypes = (0..<config.numHiddenLayers).map { ($0 + 1) % 6 == 0 ? .full : .sliding }
            config.localRope = RoPEParameters(theta: 10_000, scaling: nil)
            if let cap = optional("final_logit_softcapping")?.double { config.finalLogitSoftcap = Float(cap) }
            if optional("attn_logit_softcapping") != nil {
                throw ModelError.unsupported(path: path, reason: "gemma3.attn_logit_softcapping (soft-capped attention scores are not implemented)")
            }
        } else if arch == "smollm3" {
            config.ropeLayers = (0..<config.numHiddenLayers).map { ($0 + 1) % smolLM3NoRoPEInterval != 0 }
        } else if arch == "phi3" {
            try readPhi3(file, into: &config)
        } else if arch == "mistral" || arch == "llama", let window = optional("attention.sliding_window")?.int, window > 0 {
            config.slidingWindow = window
            config.layerTypes = Array(repeating: .sliding, count: config.numHiddenLayers)
        }
        config.bosTokenID = file["tokenizer.ggml.bos_token_id"]?.int
        config.eosTokenIDs = file["tokenizer.ggml.eos_token_id"]?.int.map { [$0] } ?? []
        config.padTokenID = file["tokenizer.ggml.padding_token_id"]?.int
        config.dtype = "float32"
        guard embed.dimensions == [hidden, vocab] else {
            throw ModelError.wrongShape(path: path, tensor: "token_embd.weight", expected: [vocab, hidden], actual: embed.shape)
        }
        try config.validate(path: path)
        return config
    }

    /// What convert_hf_to_gguf's Phi3MiniModel writes: fused linears, `rope.dimension_count` (the rotary
    /// dims), LongRoPE as the tensors rope_factors_long / rope_factors_short with
    /// `rope.scaling.original_context_length` and `rope.scaling.attn_factor`, `attention.sliding_window`
    /// (0: none). The factors are applied as transformers applies them (the long set for a pass past the
    /// original length).
    /// Llama 3.1+: llama.cpp's converter stores the llama3 scaling as one divisor per frequency,
    /// `rope_freqs.weight` (theta_i / factor_i): LongRoPE's table with one factor set and no cos/sin factor
    /// (written to config.json as such, which transformers applies to any family).
    static func ropeFrequencyFactors(_ file: GGUFFile, rotaryDim: Int, maxPositions: Int) throws -> RoPEScaling {
        let name = "rope_freqs.weight"
        let values = try file.floats(name)
        guard values.count == rotaryDim / 2 else {
            throw ModelError.wrongShape(path: file.path, tensor: name, expected: [rotaryDim / 2], actual: try file.info(name).shape)
        }
        guard values.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw GGUFError.invalid(path: file.path, detail: "\(name) holds a factor that is not a positive finite number")
        }
        let factors = values.map(Double.init)
        // Both sets equal: which one a pass picks does not matter.
        return RoPEScaling(type: "longrope", factor: 1, originalMaxPositions: maxPositions, shortFactor: factors, longFactor: factors, attentionFactor: 1)
    }

    static func readPhi3(_ file: GGUFFile, into config: inout LlamaConfig) throws {
        let path = file.path
        func optional(_ key: String) -> GGUFValue? { file["phi3.\(key)"] }
        config.fusedProjections = true
        let rotary = optional("rope.dimension_count")?.int ?? config.headDim
        config.partialRotaryFactor = Double(rotary) / Double(config.headDim)
        guard config.rotaryDim == rotary else {
            throw ModelError.unsupported(path: path, reason: "phi3.rope.dimension_count \(rotary) of head_dim \(config.headDim) (not a factor this decoder reproduces)")
        }
        let hasLong = file.contains("rope_factors_long.weight"), hasShort = file.contains("rope_factors_short.weight")
        if hasLong || hasShort {
            guard hasLong && hasShort else {
                throw ModelError.missingTensor(path: path, tensor: hasLong ? "rope_factors_short.weight" : "rope_factors_long.weight")
            }
            guard let original = optional("rope.scaling.original_context_length")?.int, original > 0 else {
                throw GGUFError.missingKey(path: path, key: "phi3.rope.scaling.original_context_length")
            }
            func factors(_ name: String) throws -> [Double] {
                let values = try file.floats(name)
                guard values.count == rotary / 2, values.allSatisfy({ $0 > 0 }) else {
                    throw ModelError.wrongShape(path: path, tensor: name, expected: [rotary / 2], actual: try file.info(name).shape)
                }
                return values.map(Double.init)
            }
            let factor = Double(config.maxPositionEmbeddings) / Double(original)
            config.ropeScaling = RoPEScaling(
                type: "longrope", factor: factor, originalMaxPositions: original,
                shortFactor: try factors("rope_factors_short.weight"), longFactor: try factors("rope_factors_long.weight"),
                attentionFactor: optional("rope.scaling.attn_factor")?.double
                    ?? RoPEScaling.longRoPEAttentionFactor(factor: factor, originalMaxPositions: original))
        }
        if let window = optional("attention.sliding_window")?.int, window > 0 {
            config.slidingWindow = window
            config.layerTypes = Array(repeating: .sliding, count: config.numHiddenLayers)
        }
    }

    /// llama.cpp's name of a layer's projection.
    static func tensorName(layer: Int, _ projection: Projection) -> String {
        let short: String
        switch projection {
        case .q: short = "attn_q"
        case .k: short = "attn_k"
        case .v: short = "attn_v"
        case .o: short = "attn_output"
        case .gate: short = "ffn_gate"
        case .up: short = "ffn_up"
        case .down: short = "ffn_down"
        // llama.cpp's phi3: the fused q/k/v, and gate + up fused under ffn_up.
        case .qkv: short = "attn_qkv"
        case .gateUp: short = "ffn_up"
        }
        return "blk.\(layer).\(short)"
    }

    /// The stored row of each Hugging Face row of q (heads = H) or k (heads = KV) in the `llama`
    /// architecture: convert_hf_to_gguf's `permute` interleaves the two rotary halves of every head
    /// (HF row h*D + j*D/2 + i is stored at h*D + 2i + j). Nil where nothing was permuted.
    static func storedRows(config: LlamaConfig, projection: Projection) -> [Int32]? {
        guard !unpermuted.contains(config.modelType), projection == .q || projection == .k else { return nil }
        let heads = projection == .q ? config.numAttentionHeads : config.numKeyValueHeads
        let d = config.headDim, half = d / 2
        var rows = [Int32](repeating: 0, count: heads * d)
        for h in 0..<heads { for j in 0..<2 { for i in 0..<half { rows[h * d + j * half + i] = Int32(h * d + 2 * i + j) } } }
        return rows
    }

    /// What a model loaded with `.stored` holds in frozen weights, from the tensor infos alone (the
    /// memory plan of a GGUF base).
    public static func storedBytes(_ file: GGUFFile, config: LlamaConfig) throws -> StoredWeightBytes {
        var bytes = StoredWeightBytes(quantizedLinears: 0, quantizedElements: 0, denseLinears: 0,
                                      embedding: try file.info("token_embd.weight").byteCount, output: 0)
        for layer in 0..<config.numHiddenLayers {
            for projection in config.layerProjections {
                let info = try file.info(tensorName(layer: layer, projection) + ".weight")
                if (info.type?.blockGeometry.elements ?? 1) > 1 {
                    bytes.quantizedLinears += info.byteCount
                    bytes.quantizedElements += info.elementCount
                } else {
                    bytes.denseLinears += info.byteCount
                }
            }
        }
        if !config.tieWordEmbeddings { bytes.output = try file.info("output.weight").byteCount }
        return bytes
    }

    public static func load(path: String, format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        let file = try GGUFFile(path: path)
        let config = try config(file)
        let c = config.hiddenSize

        func vector(_ name: String, count: Int, minus offset: Float = 0) throws -> UnsafeMutableBufferPointer<Float> {
            let info = try file.info(name)
            guard info.elementCount == count else {
                throw ModelError.wrongShape(path: path, tensor: name, expected: [count], actual: info.shape)
            }
            let values = try file.floats(name)
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
            _ = buffer.initialize(from: values.map { $0 - offset })
            return buffer
        }
        /// A norm: llama.cpp stores Gemma's scale 1 + w, we keep w (as transformers' GGUF loader does).
        func norm(_ name: String, count: Int) throws -> UnsafeMutableBufferPointer<Float> {
            try vector(name, count: count, minus: config.normWeightOffset)
        }
        /// A matrix as a frozen weight in `format` (`.stored`: its blocks in place).
        func weight(_ name: String, outFeatures: Int, inFeatures: Int, storedRows: [Int32]?, format: BaseWeightFormat) throws -> any FrozenWeight {
            let info = try file.info(name)
            guard info.shape == [outFeatures, inFeatures] else {
                throw ModelError.wrongShape(path: path, tensor: name, expected: [outFeatures, inFeatures], actual: info.shape)
            }
            let stored = try GGUFWeight(file: file, tensor: name, storedRow: storedRows)
            if format == .stored { return stored }
            let values = [Float](unsafeUninitializedCapacity: outFeatures * inFeatures) { out, count in
                stored.writeTile(rows: 0..<outFeatures, into: out.baseAddress!, precision: .fp32)
                count = outFeatures * inFeatures
            }
            // Converted: the blocks' mapped pages are not read again, so they leave the resident set.
            CheckpointQuantizer.releasePages(try file.data(name))
            return try LlamaLoader.makeWeight(values, outFeatures: outFeatures, inFeatures: inFeatures, format: format)
        }
        // The embedding table and an untied output: kept in their blocks unless a dense base is asked for.
        let tableFormat: BaseWeightFormat = format == .dense32 || format == .denseBF16 ? format : .stored
        func table(_ name: String) throws -> any FrozenWeight {
            try weight(name, outFeatures: config.vocabSize, inFeatures: c, storedRows: nil, format: tableFormat)
        }
        // Dense or in blocks, the table is read through the weight's own tiles (no second copy).
        let embed = EmbeddingTable(weight: try table("token_embd.weight"))

        var layers: [LlamaModel.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            var linears: [Projection: BaseLinear] = [:]
            for projection in config.layerProjections {
                let name = tensorName(layer: layer, projection)
                let shape = config.shape(of: projection)
                let rows = storedRows(config: config, projection: projection)
                let w = try weight(name + ".weight", outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, storedRows: rows, format: format)
                var bias: [Float]?
                if config.hasBias(projection.moduleName) {
                    let stored = Array(try vector(name + ".bias", count: shape.outFeatures))
                    bias = rows.map { order in order.map { stored[Int($0)] } } ?? stored
                }
                linears[projection] = BaseLinear(weight: w, bias: bias, precision: precision)
            }
            var norms: [LayerNorm: UnsafeMutableBufferPointer<Float>] = [:]
            for kind in config.layerNorms {
                norms[kind] = try norm("blk.\(layer).\(kind.ggufName).weight", count: config.width(of: kind))
            }
            layers.append(LlamaModel.Layer(norms: norms, linears: linears))
        }
        let finalNorm = try norm("output_norm.weight", count: c)
        var lmHead: BaseLinear?
        if !config.tieWordEmbeddings {
            let w = try table("output.weight")
            lmHead = BaseLinear(weight: w, precision: LlamaModel.headPrecision(w, model: precision))
        }
        return LlamaModel(config: config, embedTokens: embed, layers: layers, norm: finalNorm, lmHead: lmHead, precision: precision)
    }
}
