import SafeTensors

/// Gradient buffers for every weight of the model (full fine-tuning). Pointers into a
/// TrainableParameters arena; `lmHead` is nil when the head is tied (its gradient goes to `embedTokens`).
public struct ModelGradients {
    public struct Layer {
        /// Indexed by `LayerNorm.rawValue`, nil where the family has no such norm.
        public var norms: [UnsafeMutablePointer<Float>?]
        /// Indexed by Projection.rawValue; (out, in) each; nil where the family has no such linear.
        public var linears: [UnsafeMutablePointer<Float>?]

        public func norm(_ kind: LayerNorm) -> UnsafeMutablePointer<Float>? { norms[kind.rawValue] }
    }
    public var embedTokens: UnsafeMutablePointer<Float>?
    /// Empty when only the embeddings / lm_head train (modules_to_save beside LoRA).
    public var layers: [Layer]
    public var norm: UnsafeMutablePointer<Float>?
    public var lmHead: UnsafeMutablePointer<Float>?

    public func layer(_ index: Int) -> Layer? { layers.isEmpty ? nil : layers[index] }
}

/// Full-parameter training: every weight lives in one fp32 TrainableParameters arena (parameters,
/// gradients, AdamW state) under its Hugging Face name.
///
/// `.fp32`: the model reads the arena in place. `.bf16Mixed` (mixed precision as torch autocast does
/// it): the decoder linears and an untied lm_head also get a bf16 working copy that the GEMMs read
/// (the bf16 kernels), refreshed from the fp32 master weights after every optimizer step; norms and
/// the embedding table stay fp32 and are read in place. Gradients and AdamW are fp32 either way.
public final class FullFineTuning {
    public enum Precision: String, Sendable {
        case fp32
        case bf16Mixed = "bf16-mixed"

        /// The mode a compute precision asks for: fp32, or bf16 mixed; nil for fp16.
        public init?(compute: ComputePrecision) {
            switch compute {
            case .fp32: self = .fp32
            case .bf16: self = .bf16Mixed
            case .fp16: return nil
            }
        }

        public var compute: ComputePrecision { self == .fp32 ? .fp32 : .bf16 }
        /// How the memory plan names this mode (`MemoryPlan.Method` follows the base format).
        public var planFormat: BaseWeightFormat { self == .fp32 ? .dense32 : .denseBF16 }
    }

    public let precision: Precision
    public let parameters: TrainableParameters
    /// What the executor runs: the master weights (fp32) or the bf16 working copies.
    public let model: LlamaModel
    /// The fp32 master weights as a model (what is saved); `model` itself with `.fp32`.
    public let masterModel: LlamaModel
    public let gradients: ModelGradients
    /// bf16 working copies and the master weights they are rounded from.
    private let workingCopies: [(copy: DenseBFloat16Weight, master: UnsafePointer<Float>)]

    /// Bytes of the bf16 working copies `.bf16Mixed` adds for `config` (the memory plan counts them).
    public static func workingCopyBytes(config: LlamaConfig) -> Int {
        let linears = config.layerProjections.reduce(0) { sum, projection in
            let shape = config.shape(of: projection)
            return sum + shape.outFeatures * shape.inFeatures
        }
        return 2 * (config.numHiddenLayers * linears + (config.tieWordEmbeddings ? 0 : config.vocabSize * config.hiddenSize))
    }

    public var workingCopyBytes: Int { workingCopies.reduce(0) { $0 + $1.copy.storageBytes } }

    /// Copies `source`'s weights (which must be dense) into a fresh trainable arena.
    public init(copying source: LlamaModel, precision: Precision = .fp32) throws {
        self.precision = precision
        let config = source.config
        var tensors: [(key: String, shape: [Int])] = [("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize])]
        for layer in 0..<config.numHiddenLayers {
            for norm in config.layerNorms { tensors.append((config.normTensorName(layer: layer, norm), [config.width(of: norm)])) }
            for projection in config.layerProjections {
                let shape = config.shape(of: projection)
                tensors.append((LlamaConfig.modulePath(layer: layer, projection) + ".weight", [shape.outFeatures, shape.inFeatures]))
            }
        }
        tensors.append(("model.norm.weight", [config.hiddenSize]))
        if !config.tieWordEmbeddings { tensors.append(("lm_head.weight", [config.vocabSize, config.hiddenSize])) }
        let parameters = TrainableParameters(tensors: tensors)
        self.parameters = parameters

        func slot(_ key: String) -> (value: UnsafeMutableBufferPointer<Float>, grad: UnsafeMutablePointer<Float>) {
            let entry = parameters.entry(key)!
            return (UnsafeMutableBufferPointer(start: parameters.parameter(entry), count: entry.count), parameters.gradient(entry))
        }
        func copyDense(_ weight: any FrozenWeight, into destination: UnsafeMutableBufferPointer<Float>, name: String) throws {
            guard weight.outFeatures * weight.inFeatures == destination.count else { throw ModelError.unsupported(path: name, reason: "shape") }
            // Dense weights write themselves exactly at fp32; quantized ones cannot be trained in full.
            guard weight is DenseFloatWeight || weight is BorrowedFloatWeight || weight is DenseBFloat16Weight else {
                throw ModelError.unsupported(path: name, reason: "full fine-tuning needs a dense base model, not a quantized one")
            }
            weight.writeTile(rows: 0..<weight.outFeatures, into: destination.baseAddress!, precision: .fp32)
        }

        let embed = slot("model.embed_tokens.weight")
        source.embedTokens.writeTile(rows: 0..<config.vocabSize, into: embed.value.baseAddress!, precision: .fp32)
        var layers: [LlamaModel.Layer] = [], workingLayers: [LlamaModel.Layer] = []
        var copies: [(copy: DenseBFloat16Weight, master: UnsafePointer<Float>)] = []
        /// The linear the executor runs: the master itself, or a bf16 copy of it.
        func working(_ master: BaseLinear, values: UnsafeMutableBufferPointer<Float>) -> BaseLinear {
            guard precision == .bf16Mixed else { return master }
            let copy = DenseBFloat16Weight(outFeatures: master.outFeatures, inFeatures: master.inFeatures, floats: Array(values))
            copies.append((copy, UnsafePointer(values.baseAddress!)))
            return BaseLinear(weight: copy, bias: master.bias.map(Array.init), precision: .bf16)
        }
        var gradientLayers: [ModelGradients.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            // Norms are fp32 and read in place in both precisions.
            var norms: [LayerNorm: UnsafeMutableBufferPointer<Float>] = [:]
            var normGradients = [UnsafeMutablePointer<Float>?](repeating: nil, count: LayerNorm.allCases.count)
            for norm in config.layerNorms {
                let entry = slot(config.normTensorName(layer: layer, norm))
                _ = entry.value.update(fromContentsOf: source.layers[layer].norm(norm)!)
                norms[norm] = entry.value
                normGradients[norm.rawValue] = entry.grad
            }
            var linears: [Projection: BaseLinear] = [:], workingLinears: [Projection: BaseLinear] = [:]
            var linearGradients = [UnsafeMutablePointer<Float>?](repeating: nil, count: Projection.allCases.count)
            for projection in config.layerProjections {
                let name = LlamaConfig.modulePath(layer: layer, projection) + ".weight"
                let weight = slot(name)
                let original = source.layers[layer].linear(projection)
                try copyDense(original.weight, into: weight.value, name: name)
                let borrowed = BorrowedFloatWeight(outFeatures: original.outFeatures, inFeatures: original.inFeatures,
                                                   values: UnsafePointer(weight.value.baseAddress!))
                let master = BaseLinear(weight: borrowed, bias: original.bias.map(Array.init), precision: .fp32)
                linears[projection] = master
                workingLinears[projection] = working(master, values: weight.value)
                linearGradients[projection.rawValue] = weight.grad
            }
            let weights = LlamaModel.Layer(norms: norms, linears: linears)
            let gradients = ModelGradients.Layer(norms: normGradients, linears: linearGradients)
            layers.append(weights)
            let workingWeights = LlamaModel.Layer(norms: norms, linears: workingLinears)
            workingLayers.append(workingWeights)
            gradientLayers.append(gradients)
        }
        let norm = slot("model.norm.weight")
        _ = norm.value.update(fromContentsOf: source.norm)
        var lmHead: BaseLinear?, workingHead: BaseLinear?
        var lmHeadGradient: UnsafeMutablePointer<Float>?
        if !config.tieWordEmbeddings {
            let head = slot("lm_head.weight")
            try copyDense(source.lmHead.weight, into: head.value, name: "lm_head.weight")
            lmHead = BaseLinear(weight: BorrowedFloatWeight(outFeatures: config.vocabSize, inFeatures: config.hiddenSize,
                                                            values: UnsafePointer(head.value.baseAddress!)), precision: .fp32)
            workingHead = working(lmHead!, values: head.value)
            lmHeadGradient = head.grad
        }
        func view(_ layers: [LlamaModel.Layer], head: BaseLinear?, precision: ComputePrecision) -> LlamaModel {
            LlamaModel(config: config, embedTokens: EmbeddingTable(borrowing: embed.value.baseAddress!, rows: config.vocabSize,
                                                                   dim: config.hiddenSize), layers: layers, norm: norm.value, lmHead: head,
                       precision: precision, ownsBuffers: false)
        }
        masterModel = view(layers, head: lmHead, precision: .fp32)
        model = precision == .bf16Mixed ? view(workingLayers, head: workingHead, precision: .bf16) : masterModel
        workingCopies = copies
        gradients = ModelGradients(embedTokens: embed.grad, layers: gradientLayers, norm: norm.grad,
                                   lmHead: config.tieWordEmbeddings ? embed.grad : lmHeadGradient)
    }

    /// Rounds the master weights into the bf16 working copies (after each optimizer step; no-op in fp32).
    public func refreshWorkingCopies() {
        Parallel.forEach(workingCopies.count) { index in
            let (copy, master) = workingCopies[index]
            for i in 0..<copy.bits.count { copy.bits[i] = HalfFloat.bfloat16FromFloat(master[i]) }
        }
    }

    /// The trained (master) weights as a dense model that owns its buffers (e.g. to quantize it).
    public func exportModel(format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        try LlamaLoader.copy(masterModel, format: format, precision: precision)
    }
}
