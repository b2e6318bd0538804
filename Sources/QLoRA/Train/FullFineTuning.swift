/// Gradient buffers for every weight of the model (full fine-tuning). Pointers into a
/// TrainableParameters arena; `lmHead` is nil when the head is tied (its gradient goes to `embedTokens`).
public struct ModelGradients {
    public struct Layer {
        public var inputLayernorm: UnsafeMutablePointer<Float>
        public var postAttentionLayernorm: UnsafeMutablePointer<Float>
        /// Indexed by Projection.rawValue; (out, in) each.
        public var linears: [UnsafeMutablePointer<Float>]
    }
    public var embedTokens: UnsafeMutablePointer<Float>?
    /// Empty when only the embeddings / lm_head train (modules_to_save beside LoRA).
    public var layers: [Layer]
    public var norm: UnsafeMutablePointer<Float>?
    public var lmHead: UnsafeMutablePointer<Float>?

    public func layer(_ index: Int) -> Layer? { layers.isEmpty ? nil : layers[index] }
}

/// Full-parameter training of a dense fp32 model: every weight lives in one TrainableParameters arena
/// (parameters, gradients, AdamW state) under its Hugging Face name, and the model reads it in place.
public final class FullFineTuning {
    public let parameters: TrainableParameters
    public let model: LlamaModel
    public let gradients: ModelGradients

    /// Copies `source`'s weights (which must be dense fp32) into a fresh trainable arena.
    public init(copying source: LlamaModel) throws {
        let config = source.config
        var tensors: [(key: String, shape: [Int])] = [("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize])]
        for layer in 0..<config.numHiddenLayers {
            tensors.append(("model.layers.\(layer).input_layernorm.weight", [config.hiddenSize]))
            tensors.append(("model.layers.\(layer).post_attention_layernorm.weight", [config.hiddenSize]))
            for projection in Projection.allCases {
                let shape = config.linearShape(projection.moduleName)!
                tensors.append((LlamaConfig.modulePath(layer: layer, linear: projection.moduleName) + ".weight",
                                [shape.outFeatures, shape.inFeatures]))
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
        var layers: [LlamaModel.Layer] = []
        var gradientLayers: [ModelGradients.Layer] = []
        for layer in 0..<config.numHiddenLayers {
            let input = slot("model.layers.\(layer).input_layernorm.weight")
            let post = slot("model.layers.\(layer).post_attention_layernorm.weight")
            _ = input.value.update(fromContentsOf: source.layers[layer].inputLayernorm)
            _ = post.value.update(fromContentsOf: source.layers[layer].postAttentionLayernorm)
            var linears: [BaseLinear] = []
            var linearGradients: [UnsafeMutablePointer<Float>] = []
            for projection in Projection.allCases {
                let name = LlamaConfig.modulePath(layer: layer, linear: projection.moduleName) + ".weight"
                let weight = slot(name)
                let original = source.layers[layer].linears[projection.rawValue]
                try copyDense(original.weight, into: weight.value, name: name)
                let borrowed = BorrowedFloatWeight(outFeatures: original.outFeatures, inFeatures: original.inFeatures,
                                                   values: UnsafePointer(weight.value.baseAddress!))
                linears.append(BaseLinear(weight: borrowed, bias: original.bias.map(Array.init), precision: .fp32))
                linearGradients.append(weight.grad)
            }
            layers.append(LlamaModel.Layer(inputLayernorm: input.value, postAttentionLayernorm: post.value, linears: linears))
            gradientLayers.append(ModelGradients.Layer(inputLayernorm: input.grad, postAttentionLayernorm: post.grad, linears: linearGradients))
        }
        let norm = slot("model.norm.weight")
        _ = norm.value.update(fromContentsOf: source.norm)
        var lmHead: BaseLinear?
        var lmHeadGradient: UnsafeMutablePointer<Float>?
        if !config.tieWordEmbeddings {
            let head = slot("lm_head.weight")
            try copyDense(source.lmHead.weight, into: head.value, name: "lm_head.weight")
            lmHead = BaseLinear(weight: BorrowedFloatWeight(outFeatures: config.vocabSize, inFeatures: config.hiddenSize,
                                                            values: UnsafePointer(head.value.baseAddress!)), precision: .fp32)
            lmHeadGradient = head.grad
        }
        model = LlamaModel(config: config, embedTokens: EmbeddingTable(borrowing: embed.value.baseAddress!, rows: config.vocabSize,
                                                                       dim: config.hiddenSize), layers: layers, norm: norm.value, lmHead: lmHead,
                           precision: .fp32, ownsBuffers: false)
        gradients = ModelGradients(embedTokens: embed.grad, layers: gradientLayers, norm: norm.grad,
                                   lmHead: config.tieWordEmbeddings ? embed.grad : lmHeadGradient)
    }

    /// The trained weights as a dense fp32 model that owns its buffers (e.g. to quantize it).
    public func exportModel(format: BaseWeightFormat, precision: ComputePrecision) throws -> LlamaModel {
        try LlamaLoader.copy(model, format: format, precision: precision)
    }
}
