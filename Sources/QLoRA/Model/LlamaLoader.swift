import Foundation
import SafeTensors

/// How the frozen base linears are kept in memory.
public enum BaseWeightFormat: Sendable, Equatable {
    /// fp32 dense (plain LoRA on a full-precision base).
    case dense32
    /// bf16 dense (LoRA on a 16-bit base).
    case denseBF16
    /// 4-bit, quantized on load if the checkpoint is dense (QLoRA). Pre-quantized checkpoints load as they are.
    case quantized(QuantizationOptions)
    /// As the file stores them: a GGUF file's blocks (Q4_K, Q8_0, ...) in place; a dense checkpoint in
    /// its own precision (bf16 stays bf16, else fp32).
    case stored
}

/// Builds LlamaModels from Hugging Face checkpoints (dense or bitsandbytes 4-bit) or at random.
public enum LlamaLoader {
    /// Loads `directory` (config.json + safetensors, single or sharded).
    /// A `.gguf` file goes to GGUFModelLoader.
    public static func load(directory: URL, format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        if GGUFModelLoader.isGGUF(directory) { return try GGUFModelLoader.load(path: directory.path, format: format, precision: precision) }
        let config = try LlamaConfig.load(directory: directory)
        let format = format == .stored ? (config.frozenTableStorage == .bfloat16 ? .denseBF16 : .dense32) : format
        let checkpoint = try SafeTensorsCheckpoint(directory: directory.path)
        let path = directory.path

        func dense(_ name: String, shape: [Int]) throws -> [Float] {
            guard checkpoint.contains(name) else { throw ModelError.missingTensor(path: path, tensor: name) }
            let info = try checkpoint.info(name)
            guard info.dtype.isFloat16or32 else {
                throw ModelError.unsupportedDType(path: path, tensor: name, dtype: info.dtype.rawValue)
            }
            guard info.shape == shape else { throw ModelError.wrongShape(path: path, tensor: name, expected: shape, actual: info.shape) }
            return try checkpoint.floats(name)
        }
        let c = config.hiddenSize
        // q/k norms the config does not switch on would be silently skipped: refuse instead.
        if !config.qkNorm, let name = checkpoint.names.first(where: { $0.hasSuffix("self_attn.q_norm.weight") || $0.hasSuffix("self_attn.k_norm.weight") }) {
            throw ModelError.unsupported(path: path, reason: "tensor '\(name)' (per-head q/k norm) with model_type '\(config.modelType)'; only model_types qwen3 and gemma3_text apply q_norm / k_norm")
        }
        if !checkpoint.contains("model.embed_tokens.weight"),
           let name = checkpoint.names.first(where: { $0.contains("language_model.") && $0.hasSuffix("embed_tokens.weight") }) {
            throw ModelError.unsupported(path: path, reason: "tensor '\(name)': a multimodal checkpoint (its language model under language_model.); only text-only decoders (e.g. Gemma3ForCausalLM) load")
        }
        let embed = EmbeddingTable(values: try dense("model.embed_tokens.weight", shape: [config.vocabSize, c]),
                                   rows: config.vocabSize, dim: c, storage: config.frozenTableStorage)
        var layers: [LlamaModel.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            let prefix = "model.layers.\(layer)."
            var linears: [Projection: BaseLinear] = [:]
            for projection in config.layerProjections {
                let module = LlamaConfig.modulePath(layer: layer, projection)
                let shape = config.shape(of: projection)
                if !checkpoint.contains(module + ".weight"), let fused = Self.fusedCounterpart(projection, config: config),
                   checkpoint.contains(LlamaConfig.modulePath(layer: layer, fused) + ".weight") {
                    throw ModelError.unsupported(path: path, reason: "tensor '\(LlamaConfig.modulePath(layer: layer, fused)).weight' with model_type '\(config.modelType)', whose layers have \(config.layerLinears.joined(separator: ", ")) (is model_type right?)")
                }
                let weight = try frozenWeight(checkpoint: checkpoint, path: path, name: module + ".weight",
                                              outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, format: format)
                let bias = config.hasBias(projection.moduleName) ? try dense(module + ".bias", shape: [shape.outFeatures]) : nil
                linears[projection] = BaseLinear(weight: weight, bias: bias, precision: precision)
            }
            var norms: [LayerNorm: UnsafeMutableBufferPointer<Float>] = [:]
            for norm in config.layerNorms {
                norms[norm] = buffer(try dense(config.normTensorName(layer: layer, norm), shape: [config.width(of: norm)]))
            }
            layers.append(LlamaModel.Layer(norms: norms, linears: linears))
        }
        let norm = buffer(try dense("model.norm.weight", shape: [c]))
        var lmHead: BaseLinear?
        if !config.tieWordEmbeddings {
            // lm_head stays dense, in the checkpoint's precision like the embeddings (bitsandbytes skips it by
            // default too); a 4-bit one is read as it is.
            let weight = try frozenWeight(checkpoint: checkpoint, path: path, name: "lm_head.weight",
                                          outFeatures: config.vocabSize, inFeatures: c,
                                          format: config.frozenTableStorage == .bfloat16 ? .denseBF16 : .dense32)
            lmHead = BaseLinear(weight: weight, precision: LlamaModel.headPrecision(weight, model: precision))
        }
        return LlamaModel(config: config, embedTokens: embed, layers: layers, norm: norm, lmHead: lmHead, precision: precision)
    }

    /// The projection the other layout (fused or split) stores instead of `projection`, for a clear error.
    private static func fusedCounterpart(_ projection: Projection, config: LlamaConfig) -> Projection? {
        switch projection {
        case .q, .k, .v: .qkv
        case .gate, .up: .gateUp
        case .qkv: .q
        case .gateUp: .gate
        default: nil
        }
    }

    /// One linear weight: a bitsandbytes 4-bit tensor as it is, or a dense one kept per `format`.
    static func frozenWeight(checkpoint: SafeTensorsCheckpoint, path: String, name: String, outFeatures: Int, inFeatures: Int,
                             format: BaseWeightFormat) throws -> any FrozenWeight {
        guard checkpoint.contains(name) else { throw ModelError.missingTensor(path: path, tensor: name) }
        let info = try checkpoint.info(name)
        if checkpoint.names.contains(where: { $0.hasPrefix(name + "." + BitsAndBytesFormat.quantStatePrefix) }) {
            // A bitsandbytes 4-bit weight (ours or theirs): used as it is, whatever `format` asks.
            let tensor: QuantizedTensor
            do {
                tensor = try BitsAndBytesFormat.load(weightName: name, path: path, names: Set(checkpoint.names)) {
                    (try checkpoint.info($0), try checkpoint.rawBytes($0))
                }
            } catch let error as QuantError {
                throw QuantError.inFile(path: (try? checkpoint.file(for: name).path) ?? path, error)
            }
            guard tensor.shape == [outFeatures, inFeatures] else {
                throw ModelError.wrongShape(path: path, tensor: name, expected: [outFeatures, inFeatures], actual: tensor.shape)
            }
            return QuantizedWeight(tensor)
        }
        guard info.dtype.isFloat16or32 else { throw ModelError.unsupportedDType(path: path, tensor: name, dtype: info.dtype.rawValue) }
        guard info.shape == [outFeatures, inFeatures] else {
            throw ModelError.wrongShape(path: path, tensor: name, expected: [outFeatures, inFeatures], actual: info.shape)
        }
        return try makeWeight(try checkpoint.floats(name), outFeatures: outFeatures, inFeatures: inFeatures, format: format)
    }

    /// Builds a linear weight from fp32 values in the requested format.
    static func makeWeight(_ values: [Float], outFeatures: Int, inFeatures: Int, format: BaseWeightFormat) throws -> any FrozenWeight {
        switch format {
        case .dense32: return DenseFloatWeight(outFeatures: outFeatures, inFeatures: inFeatures, values: values)
        case .denseBF16: return DenseBFloat16Weight(outFeatures: outFeatures, inFeatures: inFeatures, floats: values)
        case .quantized(let options): return try QuantizedWeight.quantize(values, shape: [outFeatures, inFeatures], options: options)
        case .stored: return DenseFloatWeight(outFeatures: outFeatures, inFeatures: inFeatures, values: values)
        }
    }

    private static func buffer(_ values: [Float]) -> UnsafeMutableBufferPointer<Float> {
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
        _ = b.initialize(from: values)
        return b
    }

    /// A model with random weights (transformers-like init: normal(0, std) linears and embeddings, unit
    /// norms), deterministic in `seed`. For the demo, benchmarks and tests.
    public static func random(config: LlamaConfig, format: BaseWeightFormat, precision: ComputePrecision,
                              seed: UInt64, std: Float = 0.02) throws -> LlamaModel {
        var generator = SeededGenerator(seed: seed)
        func normal(_ count: Int) -> [Float] { (0..<count).map { _ in generator.normal() * std } }
        return try build(config: config, format: format, precision: precision,
                         embed: { normal(config.vocabSize * config.hiddenSize) },
                         // Unit scales: w = 1, or w = 0 where the family scales by (1 + w).
                         norm: { _, kind in [Float](repeating: 1 - config.normWeightOffset, count: config.width(of: kind)) },
                         finalNorm: { [Float](repeating: 1 - config.normWeightOffset, count: config.hiddenSize) },
                         linear: { _, _, count in normal(count) },
                         bias: { _, _, count in normal(count) },
                         lmHead: { normal(config.vocabSize * config.hiddenSize) })
    }

    /// A copy of `model` with its linears in `format` (e.g. quantizing a trained fp32 model to NF4).
    public static func copy(_ model: LlamaModel, format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        let config = model.config
        func dense(_ linear: BaseLinear) -> [Float] {
            [Float](unsafeUninitializedCapacity: linear.outFeatures * linear.inFeatures) { out, count in
                linear.weight.writeTile(rows: 0..<linear.outFeatures, into: out.baseAddress!, precision: .fp32)
                count = linear.outFeatures * linear.inFeatures
            }
        }
        return try build(config: config, format: format, precision: precision,
                         embed: { model.embedTokens.floats() },
                         norm: { layer, kind in Array(model.layers[layer].norm(kind)!) },
                         finalNorm: { Array(model.norm) },
                         linear: { layer, projection, _ in dense(model.layers[layer].linear(projection)) },
                         bias: { layer, projection, _ in Array(model.layers[layer].linear(projection).bias!) },
                         lmHead: { dense(model.lmHead) })
    }

    /// Assembles a model from value providers: `norm(layer, kind)` for each of `config.layerNorms`,
    /// `finalNorm()` the final norm.
    private static func build(config: LlamaConfig, format: BaseWeightFormat, precision: ComputePrecision,
                              embed: () -> [Float], norm: (Int, LayerNorm) -> [Float], finalNorm: () -> [Float],
                              linear: (Int, Projection, Int) -> [Float], bias: (Int, Projection, Int) -> [Float],
                              lmHead: () -> [Float]) throws -> LlamaModel {
        let c = config.hiddenSize
        let embedTable = EmbeddingTable(values: embed(), rows: config.vocabSize, dim: c, storage: config.frozenTableStorage)
        var layers: [LlamaModel.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            var linears: [Projection: BaseLinear] = [:]
            for projection in config.layerProjections {
                let shape = config.shape(of: projection)
                let values = linear(layer, projection, shape.outFeatures * shape.inFeatures)
                let weight = try makeWeight(values, outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, format: format)
                let biasValues = config.hasBias(projection.moduleName) ? bias(layer, projection, shape.outFeatures) : nil
                linears[projection] = BaseLinear(weight: weight, bias: biasValues, precision: precision)
            }
            var norms: [LayerNorm: UnsafeMutableBufferPointer<Float>] = [:]
            for kind in config.layerNorms { norms[kind] = buffer(norm(layer, kind)) }
            layers.append(LlamaModel.Layer(norms: norms, linears: linears))
        }
        let normBuffer = buffer(finalNorm())
        var head: BaseLinear?
        if !config.tieWordEmbeddings {
            let weight = try makeWeight(lmHead(), outFeatures: config.vocabSize, inFeatures: c,
                                        format: config.frozenTableStorage == .bfloat16 ? .denseBF16 : .dense32)
            head = BaseLinear(weight: weight, precision: LlamaModel.headPrecision(weight, model: precision))
        }
        return LlamaModel(config: config, embedTokens: embedTable, layers: layers, norm: normBuffer, lmHead: head, precision: precision)
    }
}
