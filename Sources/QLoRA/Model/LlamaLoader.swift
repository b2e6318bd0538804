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
}

/// Builds LlamaModels from Hugging Face checkpoints (dense or bitsandbytes 4-bit) or at random.
public enum LlamaLoader {
    /// Loads `directory` (config.json + safetensors, single or sharded).
    public static func load(directory: URL, format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        let config = try LlamaConfig.load(directory: directory)
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
        func buffer(_ values: [Float]) -> UnsafeMutableBufferPointer<Float> {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
            _ = b.initialize(from: values)
            return b
        }
        let c = config.hiddenSize
        let embed = buffer(try dense("model.embed_tokens.weight", shape: [config.vocabSize, c]))
        var layers: [LlamaModel.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            let prefix = "model.layers.\(layer)."
            var linears: [BaseLinear] = []
            for projection in Projection.allCases {
                let module = LlamaConfig.modulePath(layer: layer, linear: projection.moduleName)
                let shape = config.linearShape(projection.moduleName)!
                let weight = try frozenWeight(checkpoint: checkpoint, path: path, name: module + ".weight",
                                              outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, format: format)
                let bias = config.hasBias(projection.moduleName) ? try dense(module + ".bias", shape: [shape.outFeatures]) : nil
                linears.append(BaseLinear(weight: weight, bias: bias, precision: precision))
            }
            layers.append(LlamaModel.Layer(
                inputLayernorm: buffer(try dense(prefix + "input_layernorm.weight", shape: [c])),
                postAttentionLayernorm: buffer(try dense(prefix + "post_attention_layernorm.weight", shape: [c])),
                linears: linears))
        }
        let norm = buffer(try dense("model.norm.weight", shape: [c]))
        var lmHead: BaseLinear?
        if !config.tieWordEmbeddings {
            // lm_head stays dense fp32 (bitsandbytes skips it by default too); a 4-bit one is read as it is.
            let weight = try frozenWeight(checkpoint: checkpoint, path: path, name: "lm_head.weight",
                                          outFeatures: config.vocabSize, inFeatures: c, format: .dense32)
            lmHead = BaseLinear(weight: weight, precision: .fp32)
        }
        return LlamaModel(config: config, embedTokens: embed, layers: layers, norm: norm, lmHead: lmHead, precision: precision)
    }

    /// One linear weight: a bitsandbytes 4-bit tensor as it is, or a dense one kept per `format`.
    static func frozenWeight(checkpoint: SafeTensorsCheckpoint, path: String, name: String, outFeatures: Int, inFeatures: Int,
                             format: BaseWeightFormat) throws -> any FrozenWeight {
        guard checkpoint.contains(name) else { throw ModelError.missingTensor(path: path, tensor: name) }
        let info = try checkpoint.info(name)
        if checkpoint.contains(name + ".absmax") {
            throw ModelError.unsupported(path: path, reason: "pre-quantized bitsandbytes weights are not loaded yet (\(name))")
        }
        guard info.dtype.isFloat16or32 else { throw ModelError.unsupportedDType(path: path, tensor: name, dtype: info.dtype.rawValue) }
        guard info.shape == [outFeatures, inFeatures] else {
            throw ModelError.wrongShape(path: path, tensor: name, expected: [outFeatures, inFeatures], actual: info.shape)
        }
        let values = try checkpoint.floats(name)
        switch format {
        case .dense32: return DenseFloatWeight(outFeatures: outFeatures, inFeatures: inFeatures, values: values)
        case .denseBF16: return DenseBFloat16Weight(outFeatures: outFeatures, inFeatures: inFeatures, floats: values)
        case .quantized(let options):
            return try QuantizedWeight.quantize(values, shape: [outFeatures, inFeatures], options: options)
        }
    }

    /// A model with random weights (transformers-like init: normal(0, std) linears and embeddings, unit
    /// norms), deterministic in `seed`. For the demo, benchmarks and tests.
    public static func random(config: LlamaConfig, format: BaseWeightFormat, precision: ComputePrecision,
                              seed: UInt64, std: Float = 0.02) throws -> LlamaModel {
        var generator = SeededGenerator(seed: seed)
        func normal(_ count: Int) -> [Float] { (0..<count).map { _ in generator.normal() * std } }
        func buffer(_ values: [Float]) -> UnsafeMutableBufferPointer<Float> {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
            _ = b.initialize(from: values)
            return b
        }
        let c = config.hiddenSize
        let embed = buffer(normal(config.vocabSize * c))
        var layers: [LlamaModel.Layer] = []
        for _ in 0..<config.numHiddenLayers {
            var linears: [BaseLinear] = []
            for projection in Projection.allCases {
                let shape = config.linearShape(projection.moduleName)!
                let values = normal(shape.outFeatures * shape.inFeatures)
                let weight: any FrozenWeight
                switch format {
                case .dense32: weight = DenseFloatWeight(outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, values: values)
                case .denseBF16: weight = DenseBFloat16Weight(outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, floats: values)
                case .quantized(let options):
                    weight = try QuantizedWeight.quantize(values, shape: [shape.outFeatures, shape.inFeatures], options: options)
                }
                let bias = config.hasBias(projection.moduleName) ? normal(shape.outFeatures) : nil
                linears.append(BaseLinear(weight: weight, bias: bias, precision: precision))
            }
            layers.append(LlamaModel.Layer(inputLayernorm: buffer([Float](repeating: 1, count: c)),
                                           postAttentionLayernorm: buffer([Float](repeating: 1, count: c)), linears: linears))
        }
        let norm = buffer([Float](repeating: 1, count: c))
        var lmHead: BaseLinear?
        if !config.tieWordEmbeddings {
            lmHead = BaseLinear(weight: DenseFloatWeight(outFeatures: config.vocabSize, inFeatures: c, values: normal(config.vocabSize * c)),
                                precision: .fp32)
        }
        return LlamaModel(config: config, embedTokens: embed, layers: layers, norm: norm, lmHead: lmHead, precision: precision)
    }
}
