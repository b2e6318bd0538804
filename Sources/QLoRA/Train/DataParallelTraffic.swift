/// What one data-parallel step sends between ranks: every collective `Trainer.trainStep` makes.
public struct DataParallelTraffic: Sendable, Equatable {
    public let ranks: Int
    /// Bytes each rank contributes to the step's sums: the gradient section (fp32, arena padding
    /// included) and three Doubles (target count; loss sum and tokens).
    public let allreducedBytes: Int
    /// Allreduce calls per step (target count, gradients, loss and tokens).
    public static let callsPerStep = 3

    public init(gradientSectionBytes: Int, ranks: Int) {
        self.ranks = ranks
        allreducedBytes = gradientSectionBytes + 3 * MemoryLayout<Double>.size
    }

    /// Bytes each rank sends (and receives) per step with a ring allreduce, the bandwidth-optimal
    /// algorithm Open MPI uses for large messages: 2 (N - 1) / N of the payload. Other algorithms
    /// (recursive doubling for small messages) send more, log2(N) times the payload.
    public var ringBytesSentPerRank: Int { ranks > 1 ? 2 * (ranks - 1) * allreducedBytes / ranks : 0 }
}
