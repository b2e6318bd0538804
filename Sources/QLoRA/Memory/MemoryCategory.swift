/// The categories every memory figure is reported in, plan and measurement alike.
public enum MemoryCategory: String, CaseIterable, Sendable, Codable {
    case quantizedWeights = "quantized weights"
    case otherFrozenWeights = "other frozen weights"
    case trainableParameters = "trainable parameters"
    case gradients
    case optimizerState = "optimizer state"
    case activations = "saved activations"
    case workspace
    /// The training data's batch buffers and row index (the token file itself stays mapped, not resident).
    case dataset
    case runtimeOverhead = "runtime overhead"
}

/// Bytes per category.
public struct MemoryBreakdown: Sendable, Equatable {
    public var bytes: [MemoryCategory: Int]

    public init(bytes: [MemoryCategory: Int] = [:]) { self.bytes = bytes }

    public subscript(_ category: MemoryCategory) -> Int {
        get { bytes[category] ?? 0 }
        set { bytes[category] = newValue }
    }

    public var total: Int { bytes.values.reduce(0, +) }
}
