/// The processes of a data-parallel run (`mpirun -np N qlora train`): each rank computes the gradients
/// of its share of a step's micro-batches, and the group sums them so that every rank applies the same
/// update. Collective calls must be made by every rank, in the same order.
public protocol DataParallelGroup: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Element-wise sum over every rank, written back into `values` on every rank.
    func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    func sumInPlace(_ values: UnsafeMutablePointer<Double>, count: Int) throws
    /// Rank `root`'s `count` bytes at `bytes` copied into every other rank's `bytes`.
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws
}

extension DataParallelGroup {
    /// Makes every rank's trainable arena (parameters, and optimizer state when training) rank 0's:
    /// a resumed run reads its checkpoint on rank 0 only, so only rank 0 needs the output directory.
    public func broadcastFromRankZero(_ parameters: TrainableParameters) throws {
        try broadcast(UnsafeMutableRawPointer(parameters.parameters), count: parameters.sectionBytes * parameters.sections, root: 0)
    }

    /// Throws on every rank unless every rank's parameters are rank 0's, bit for bit. The ranks apply the
    /// same update only if the allreduce handed each the same sum; this checks it (at checkpoints and at
    /// the end) instead of trusting it.
    public func checkIdentical(_ parameters: TrainableParameters, step: Int) throws {
        let own = Self.fingerprint(parameters)
        var root = own
        try broadcast(&root, count: MemoryLayout<Double>.size, root: 0)
        var differing: Double = root == own ? 0 : 1
        try sumInPlace(&differing, count: 1)
        if differing > 0 { throw TrainError.ranksDiverged(step: step, ranks: Int(differing)) }
    }

    /// FNV-1a of the parameters' bits, cut to 52 bits so that a Double holds it exactly.
    static func fingerprint(_ parameters: TrainableParameters) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        let values = parameters.parameters
        for i in 0..<parameters.count {
            hash = (hash ^ UInt64(values[i].bitPattern)) &* 0x100_0000_01b3
        }
        return Double(hash & ((1 << 52) - 1))
    }
}

/// The world of an Open MPI job as a data-parallel group.
public final class MPIDataParallelGroup: DataParallelGroup {
    public let mpi: OpenMPI
    public let rank: Int
    public let size: Int

    /// Loads libmpi and initializes MPI (throws naming the packages when Open MPI is not installed).
    public init() throws {
        mpi = try OpenMPI.load()
        (rank, size) = try mpi.start()
    }

    public func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) throws { try mpi.sumInPlace(values, count: count) }
    public func sumInPlace(_ values: UnsafeMutablePointer<Double>, count: Int) throws { try mpi.sumInPlace(values, count: count) }
    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws {
        try mpi.broadcast(bytes, count: count, root: root)
    }
}
