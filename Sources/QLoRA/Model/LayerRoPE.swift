/// The RoPE tables one pass rotates with: one per distinct RoPE of the layers (Gemma 3: global and
/// local), each over the config's rotary dims (Phi-3: a leading part of each head), and for LongRoPE also
/// the long-factor set, which transformers uses for every position of a forward whose largest position + 1
/// exceeds original_max_position_embeddings (`longrope_frequency_update`).
struct LayerRoPE {
    private let short: [RoPETable]
    /// Built only when `maxPositions` reaches past the original length; nil otherwise.
    private let long: [RoPETable?]
    private let scalings: [RoPEScaling?]
    private let ofLayer: [Int]
    let maxPositions: Int

    init(config: LlamaConfig, maxPositions: Int) {
        let tables = config.ropeTables
        self.maxPositions = maxPositions
        short = tables.map {
            RoPETable(headDim: config.headDim, rotaryDim: config.rotaryDim, maxPositions: maxPositions, theta: $0.theta, scaling: $0.scaling)
        }
        long = tables.map { parameters in
            Self.needsLongTable(parameters, maxPositions: maxPositions)
                ? RoPETable(headDim: config.headDim, rotaryDim: config.rotaryDim, maxPositions: maxPositions,
                            theta: parameters.theta, scaling: parameters.scaling, longFactors: true)
                : nil
        }
        scalings = tables.map(\.scaling)
        ofLayer = (0..<config.numHiddenLayers).map { layer in tables.firstIndex(of: config.rope(layer: layer))! }
    }

    private static func needsLongTable(_ parameters: RoPEParameters, maxPositions: Int) -> Bool {
        parameters.scaling?.usesLongFactors(sequenceLength: maxPositions) ?? false
    }

    /// The table of `layer` for a forward whose positions run up to `sequenceLength` - 1.
    func table(layer: Int, sequenceLength: Int) -> RoPETable {
        let index = ofLayer[layer]
        if let long = long[index], scalings[index]?.usesLongFactors(sequenceLength: sequenceLength) == true { return long }
        return short[index]
    }

    /// Whether a forward up to `sequenceLength` positions rotates with other factors than one within
    /// `shorter` positions does (LongRoPE crossing original_max_position_embeddings).
    static func factorsDiffer(config: LlamaConfig, sequenceLength: Int, shorter: Int) -> Bool {
        config.ropeTables.contains { parameters in
            guard let scaling = parameters.scaling else { return false }
            return scaling.usesLongFactors(sequenceLength: sequenceLength) != scaling.usesLongFactors(sequenceLength: shorter)
        }
    }

    /// Bytes of every table `init` builds (shared with the memory plans).
    static func bytes(config: LlamaConfig, maxPositions: Int) -> Int {
        let one = RoPETable.bytes(rotaryDim: config.rotaryDim, maxPositions: maxPositions)
        return config.ropeTables.reduce(0) { $0 + one * (needsLongTable($1, maxPositions: maxPositions) ? 2 : 1) }
    }

    var bytes: Int { short.reduce(0) { $0 + $1.bytes } + long.reduce(0) { $0 + ($1?.bytes ?? 0) } }
}
