import Foundation

/// Open MPI's libmpi, loaded with `dlopen` when a run asks for it, so that the single-machine build and
/// binary need nothing new (as with OpenBLAS, Runtime/OpenBLAS.swift).
///
/// The MPI C ABI is not the same across implementations: in Open MPI the handles `MPI_COMM_WORLD`,
/// `MPI_FLOAT`, `MPI_SUM` ... are the addresses of exported globals (`ompi_mpi_comm_world`, ...) and
/// `MPI_IN_PLACE` is `(void *) 1`; MPICH uses integer constants. Only Open MPI (Debian's default) is
/// supported; another libmpi is refused with a clear error rather than called with the wrong handles.
public final class OpenMPI: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
                                           Int32, UnsafeMutablePointer<Int32>?) -> Int32
    typealias CommQuery = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
    typealias Bcast = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
    typealias Abort = @convention(c) (Handle, Int32) -> Int32
    typealias Finalize = @convention(c) () -> Int32
    typealias Flag = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32

    /// Open MPI's MPI_THREAD_FUNNELED: threads exist (our kernel pool), only the main thread calls MPI.
    static let threadFunneled: Int32 = 1
    /// Open MPI's MPI_IN_PLACE.
    static let inPlace = UnsafeRawPointer(bitPattern: 1)
    /// Elements per call: MPI counts are C ints.
    static let maxCount = 1 << 30

    public let library: String
    let commWorld: Handle, float: Handle, double: Handle, byte: Handle, sum: Handle
    private let initThread: InitThread, commRank: CommQuery, commSize: CommQuery
    private let allreduce: Allreduce, bcast: Bcast, abortFunction: Abort, finalizeFunction: Finalize
    private let initialized: Flag, finalized: Flag

    static let systemLibraries = ["libmpi.so.40", "libmpi.so"]

    /// Loads libmpi (`QLORA_MPI_LIBRARY` names another file); throws `mpiMissing` naming the packages when
    /// none opens, `mpiUnsupported` when the library is not Open MPI.
    public static func load() throws -> OpenMPI {
        let custom = ProcessInfo.processInfo.environment["QLORA_MPI_LIBRARY"].flatMap { $0.isEmpty ? nil : [$0] }
        return try load(candidates: custom ?? systemLibraries)
    }

    public static func load(candidates: [String]) throws -> OpenMPI {
        var handle: UnsafeMutableRawPointer?, opened = ""
        var reasons: [String] = []
        for name in candidates {
            // RTLD_GLOBAL: Open MPI's plugins (mca_*.so) resolve libmpi's symbols when they load.
            handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
            if handle != nil { opened = name; break }
            reasons.append(dlerror().map { String(cString: $0) } ?? "\(name): not found")
        }
        guard let handle else { throw RuntimeError.mpiMissing(reason: reasons.last ?? "no library named") }
        func symbol(_ name: String) -> UnsafeMutableRawPointer? { dlsym(handle, name) }
        guard let world = symbol("ompi_mpi_comm_world") else {
            let kind = symbol("MPIR_Err_return_comm") != nil || symbol("MPICH_VERSION") != nil ? "MPICH or a derivative" : "not Open MPI"
            throw RuntimeError.mpiUnsupported(library: opened, reason: "it is \(kind) (no ompi_mpi_comm_world)")
        }
        func function<T>(_ name: String, _ type: T.Type) throws -> T {
            guard let pointer = symbol(name) else {
                throw RuntimeError.mpiUnsupported(library: opened, reason: "it has no \(name)")
            }
            return unsafeBitCast(pointer, to: type)
        }
        func global(_ name: String) throws -> Handle {
            guard let pointer = symbol(name) else { throw RuntimeError.mpiUnsupported(library: opened, reason: "it has no \(name)") }
            return pointer
        }
        return OpenMPI(library: opened, commWorld: world, float: try global("ompi_mpi_float"), double: try global("ompi_mpi_double"),
                       byte: try global("ompi_mpi_byte"), sum: try global("ompi_mpi_op_sum"),
                       initThread: try function("MPI_Init_thread", InitThread.self), commRank: try function("MPI_Comm_rank", CommQuery.self),
                       commSize: try function("MPI_Comm_size", CommQuery.self), allreduce: try function("MPI_Allreduce", Allreduce.self),
                       bcast: try function("MPI_Bcast", Bcast.self), abort: try function("MPI_Abort", Abort.self),
                       finalize: try function("MPI_Finalize", Finalize.self), initialized: try function("MPI_Initialized", Flag.self),
                       finalized: try function("MPI_Finalized", Flag.self))
    }

    private init(library: String, commWorld: Handle, float: Handle, double: Handle, byte: Handle, sum: Handle,
                 initThread: @escaping InitThread, commRank: @escaping CommQuery, commSize: @escaping CommQuery,
                 allreduce: @escaping Allreduce, bcast: @escaping Bcast, abort: @escaping Abort, finalize: @escaping Finalize,
                 initialized: @escaping Flag, finalized: @escaping Flag) {
        self.library = library
        self.commWorld = commWorld
        self.float = float
        self.double = double
        self.byte = byte
        self.sum = sum
        self.initThread = initThread
        self.commRank = commRank
        self.commSize = commSize
        self.allreduce = allreduce
        self.bcast = bcast
        self.abortFunction = abort
        self.finalizeFunction = finalize
        self.initialized = initialized
        self.finalized = finalized
    }

    /// MPI_Init_thread (FUNNELED) unless already initialized; returns (rank, size) in MPI_COMM_WORLD.
    public func start() throws -> (rank: Int, size: Int) {
        var flag: Int32 = 0
        _ = initialized(&flag)
        if flag == 0 {
            var provided: Int32 = 0
            try check(initThread(nil, nil, Self.threadFunneled, &provided), "MPI_Init_thread")
            guard provided >= Self.threadFunneled else {
                throw RuntimeError.mpiFailed(call: "MPI_Init_thread", code: provided, detail: "this Open MPI does not allow threads beside MPI (MPI_THREAD_FUNNELED)")
            }
        }
        var rank: Int32 = 0, size: Int32 = 0
        try check(commRank(commWorld, &rank), "MPI_Comm_rank")
        try check(commSize(commWorld, &size), "MPI_Comm_size")
        return (Int(rank), Int(size))
    }

    /// In-place sum over every rank of `count` floats (chunked to C int counts).
    public func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        try sumInPlace(UnsafeMutableRawPointer(values), count: count, elementBytes: 4, type: float)
    }

    public func sumInPlace(_ values: UnsafeMutablePointer<Double>, count: Int) throws {
        try sumInPlace(UnsafeMutableRawPointer(values), count: count, elementBytes: 8, type: double)
    }

    private func sumInPlace(_ values: UnsafeMutableRawPointer, count: Int, elementBytes: Int, type: Handle) throws {
        var done = 0
        while done < count {
            let n = min(Self.maxCount, count - done)
            try check(allreduce(Self.inPlace, values + done * elementBytes, Int32(n), type, sum, commWorld), "MPI_Allreduce")
            done += n
        }
    }

    /// Rank `root`'s `count` bytes to every rank.
    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws {
        var done = 0
        while done < count {
            let n = min(Self.maxCount, count - done)
            try check(bcast(bytes + done, Int32(n), byte, Int32(root), commWorld), "MPI_Bcast")
            done += n
        }
    }

    /// Ends every rank of the job (a rank that failed must not leave the others waiting in a collective).
    public func abort(code: Int32) -> Never {
        _ = abortFunction(commWorld, code)
        exit(code)
    }

    /// MPI_Finalize, once, if MPI was started.
    public func finish() {
        var started: Int32 = 0, ended: Int32 = 0
        _ = initialized(&started)
        _ = finalized(&ended)
        if started != 0 && ended == 0 { _ = finalizeFunction() }
    }

    private func check(_ code: Int32, _ call: String) throws {
        guard code == 0 else { throw RuntimeError.mpiFailed(call: call, code: code, detail: "see Open MPI's message above") }
    }

    /// The job's rank and size as `mpirun` (Open MPI) announces them in the environment, nil outside mpirun.
    public static func launcherWorld(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> (rank: Int, size: Int, localSize: Int)? {
        guard let size = environment["OMPI_COMM_WORLD_SIZE"].flatMap({ Int($0) }),
              let rank = environment["OMPI_COMM_WORLD_RANK"].flatMap({ Int($0) }) else { return nil }
        let local = environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? size
        return (rank, size, local)
    }
}
