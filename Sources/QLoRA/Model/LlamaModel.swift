/// A Llama-family decoder's frozen weights: fp32 embeddings and norms, base linears that are either
/// quantized (NF4/FP4, dequantized a tile at a time) or dense (fp32 / bf16), and the lm_head
/// (tied to the embeddings or its own weight). Immutable once built: training never writes here.
public final class LlamaModel {
    public struct Layer {
        /// Indexed by `LayerNorm.rawValue`: (C), or (D) for the q/k norms; nil where the family has no
        /// such norm (`LlamaConfig.layerNorms`).
        public var norms: [UnsafeMutableBufferPointer<Float>?]
        /// Indexed by `Projection.rawValue`; nil where the family has no such linear
        /// (`LlamaConfig.layerProjections`: Llama's seven, or Phi-3's fused four).
        public var linearSlots: [BaseLinear?]

        public init(norms: [LayerNorm: UnsafeMutableBufferPointer<Float>], linears: [Projection: BaseLinear]) {
            self.norms = LayerNorm.allCases.map { norms[$0] }
            self.linearSlots = Projection.allCases.map { linears[$0] }
        }

        /// A linear the layer has (asking for one it lacks is a programming error).
        public func linear(_ projection: Projection) -> BaseLinear { linearSlots[projection.rawValue]! }

        /// The layer's linears, in `Projection` order.
        public var linears: [BaseLinear] { linearSlots.compactMap { $0 } }

        public func norm(_ kind: LayerNorm) -> UnsafeMutableBufferPointer<Float>? { norms[kind.rawValue] }
        public var inputLayernorm: UnsafeMutableBufferPointer<Float> { norms[LayerNorm.input.rawValue]! }
        public var preMLPNorm: UnsafeMutableBufferPointer<Float> { norms[LayerNorm.preMLP.rawValue]! }
        public var qNorm: UnsafeMutableBufferPointer<Float>? { norms[LayerNorm.query.rawValue] }
        public var kNorm: UnsafeMutableBufferPointer<Float>? { norms[LayerNorm.key.rawValue] }
    }

    public let config: LlamaConfig
    public let embedTokens: EmbeddingTable   /// (V, C)
    public let layers: [Layer]
    public let norm: UnsafeMutableBufferPointer<Float>          /// (C)
    public let lmHead: BaseLinear
    public let precision: ComputePrecision
    /// False when the buffers belong to a TrainableParameters arena (full fine-tuning).
    private let ownsBuffers: Bool

    /// Takes ownership of the buffers unless `ownsBuffers` is false.
    public init(config: LlamaConfig, embedTokens: EmbeddingTable, layers: [Layer],
                norm: UnsafeMutableBufferPointer<Float>, lmHead: BaseLinear?, precision: ComputePrecision,
                ownsBuffers: Bool = true) {
        self.ownsBuffers = ownsBuffers
        base = nil
        owner = nil
        self.config = config
        self.embedTokens = embedTokens
        self.layers = layers
        self.norm = norm
        self.precision = precision
        // A tied lm_head reads the embedding table in place.
        self.lmHead = lmHead ?? BaseLinear(weight: embedTokens, precision: Self.headPrecision(embedTokens, model: precision))
    }

    /// The lm_head computes in bf16 only when its weight is stored in bf16 and the model computes in bf16
    /// (as transformers does for a bf16 checkpoint); an fp32 head keeps fp32 logits.
    public static func headPrecision(_ weight: any FrozenWeight, model precision: ComputePrecision) -> ComputePrecision {
        precision == .bf16 && weight.bfloat16Storage != nil ? .bf16 : .fp32
    }

    /// Puts every base linear (and the lm_head) on `kernel` for its bf16-compute GEMMs.
    public func useKernel(_ kernel: GemmKernel) {
        for layer in layers { for linear in layer.linears { linear.kernel = kernel } }
        lmHead.kernel = kernel
    }

    /// For a view: the model it views, and what its own buffers belong to (both kept alive).
    private let base: LlamaModel?
    private let owner: AnyObject?

    /// A view of `base` with other embeddings and lm_head (e.g. trainable copies); everything else is
    /// shared. `owner` (and `base`) stay alive as long as the view.
    public init(viewOf base: LlamaModel, embedTokens: EmbeddingTable, lmHead: BaseLinear, keepingAlive owner: AnyObject) {
        config = base.config
        self.embedTokens = embedTokens
        layers = base.layers
        norm = base.norm
        self.lmHead = lmHead
        precision = base.precision
        ownsBuffers = false
        self.base = base
        self.owner = owner
    }

    deinit {
        guard ownsBuffers else { return }
        norm.deallocate()
        for layer in layers { for norm in layer.norms { norm?.deallocate() } }
    }

    /// Largest in-features of any base linear (sizes the dequant tile).
    public var maxInFeatures: Int { config.maxLinearInFeatures }

    /// Bytes of quantized base weights, and of every other frozen weight.
    public var frozenBytes: (quantized: Int, other: Int) {
        // A view's replaced embeddings / lm_head are trainable copies; the frozen weights are the base's.
        if let base { return base.frozenBytes }
        var quantized = 0, other = 0
        for layer in layers {
            for linear in layer.linears {
                if linear.weight.isQuantized {
                    quantized += linear.weight.storageBytes
                } else {
                    other += linear.weight.storageBytes
                }
                other += (linear.bias?.count ?? 0) * 4
            }
            // Counted from the buffers themselves, so that the plan (LlamaConfig.layerNormParameterCount) is checked.
            other += layer.norms.reduce(0) { $0 + ($1?.count ?? 0) } * 4
        }
        other += embedTokens.storageBytes + norm.count * 4
        if !config.tieWordEmbeddings { other += lmHead.weight.storageBytes }
        return (quantized, other)
    }
}

/// A dense fp32 weight that lives in someone else's buffer (the tied lm_head).
public final class BorrowedFloatWeight: FrozenWeight {
    public let outFeatures: Int
    public let inFeatures: Int
    private let values: UnsafePointer<Float>

    public init(outFeatures: Int, inFeatures: Int, values: UnsafePointer<Float>) {
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.values = values
    }

    public var storageBytes: Int { 0 }   // counted with the embeddings
    public var denseStorage: UnsafePointer<Float>? { values }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        let count = rows.count * inFeatures
        tile.update(from: values + rows.lowerBound * inFeatures, count: count)
        precision.round(tile, count: count)
    }
}
