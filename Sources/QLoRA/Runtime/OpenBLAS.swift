import Foundation

/// The system OpenBLAS, loaded with `dlopen` on first use.
///
/// Why not link it: Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernel when the library is
/// initialized, and it does not recognize some CPUs we run on (a virtualized AVX-512 Xeon falls back to
/// the SSE3 "Prescott" kernel, 4.5x slower). Setting `OPENBLAS_CORETYPE` inside `main` is too late
/// for a linked library, so we choose the kernel from CPUID flags, set the variable, then load.
/// A user's own `OPENBLAS_CORETYPE` always wins.
public final class OpenBLAS: @unchecked Sendable {
    public typealias SgemmFunction = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float,
        UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32, Float,
        UnsafeMutablePointer<Float>?, Int32
    ) -> Void

    /// How the kernel was chosen, for `qlora --version` and benchmark headers.
    public enum KernelChoice: Sendable, Equatable {
        case user(String)       // OPENBLAS_CORETYPE was already set
        case chosen(String)     // we set it from CPU flags
        case library            // left to OpenBLAS' own detection
    }

    public let sgemm: SgemmFunction
    public let corename: String
    public let config: String
    public let choice: KernelChoice
    private let setNumThreads: (@convention(c) (Int32) -> Void)?
    private let getNumThreads: (@convention(c) () -> Int32)?

    /// The loaded library. Every command calls `ensureLoaded()` first, which reports a missing OpenBLAS
    /// as an error; reaching here without it is a programming error.
    public static var shared: OpenBLAS {
        if let loaded = loadLock.withLock({ loadedInstance }) { return loaded }
        do { return try ensureLoaded() } catch { fatalError("\(error)") }
    }

    /// Loads OpenBLAS if needed; throws a clear error (with the install command) when it is not installed.
    /// `QLORA_OPENBLAS_LIBRARY` names a library file to load instead of the system's.
    public static func ensureLoaded() throws -> OpenBLAS {
        try loadLock.withLock {
            if let loaded = loadedInstance { return loaded }
            let custom = ProcessInfo.processInfo.environment["QLORA_OPENBLAS_LIBRARY"].flatMap { $0.isEmpty ? nil : [$0] }
            let instance = try load(candidates: custom ?? systemLibraries)
            loadedInstance = instance
            return instance
        }
    }
    nonisolated(unsafe) private static var loadedInstance: OpenBLAS?
    private static let loadLock = NSLock()
    static let systemLibraries = ["libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0"]

    /// The OpenBLAS core type to request for these CPU flags, or nil to let OpenBLAS decide.
    public static func preferredCoretype(for cpu: CPUFeatures) -> String? {
        if cpu.hasAVX512 { return "SkylakeX" }
        if cpu.hasAVX2 { return "Haswell" }
        return nil
    }

    /// The first of `candidates` that opens; throws `openBLASMissing` when none does.
    static func load(candidates: [String]) throws -> OpenBLAS {
        let choice: KernelChoice
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], !user.isEmpty {
            choice = .user(user)
        } else if let preferred = preferredCoretype(for: .current) {
            setenv("OPENBLAS_CORETYPE", preferred, 1)
            choice = .chosen(preferred)
        } else {
            choice = .library
        }
        var handle: UnsafeMutableRawPointer?
        for name in candidates {
            handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
            if handle != nil { break }
        }
        guard let handle else {
            let reason = dlerror().map { String(cString: $0) } ?? "not found"
            throw RuntimeError.openBLASMissing(reason: reason)
        }
        func symbol<T>(_ name: String, _ type: T.Type) -> T? {
            guard let pointer = dlsym(handle, name) else { return nil }
            return unsafeBitCast(pointer, to: type)
        }
        guard let sgemm = symbol("cblas_sgemm", SgemmFunction.self) else {
            throw RuntimeError.openBLASMissing(reason: "the loaded library has no cblas_sgemm")
        }
        let corenameFunction = symbol("openblas_get_corename", (@convention(c) () -> UnsafePointer<CChar>?).self)
        let configFunction = symbol("openblas_get_config", (@convention(c) () -> UnsafePointer<CChar>?).self)
        let corename = corenameFunction?().map { String(cString: $0) } ?? "unknown"
        let config = configFunction?().map { String(cString: $0) } ?? "unknown"
        let instance = OpenBLAS(
            sgemm: sgemm, corename: corename, config: config, choice: choice,
            setNumThreads: symbol("openblas_set_num_threads", (@convention(c) (Int32) -> Void).self),
            getNumThreads: symbol("openblas_get_num_threads", (@convention(c) () -> Int32).self))
        // qlora parallelizes around BLAS (Blas.sgemmParallel, Parallel.forEach) and keeps OpenBLAS'
        // own pool at one thread: two pools never nest, and a GEMM's rounding never depends on how many
        // threads OpenBLAS happened to use (its results differ bit-wise between 1 and 2 threads).
        instance.threads = 1
        return instance
    }

    private init(sgemm: @escaping SgemmFunction, corename: String, config: String, choice: KernelChoice,
                 setNumThreads: (@convention(c) (Int32) -> Void)?, getNumThreads: (@convention(c) () -> Int32)?) {
        self.sgemm = sgemm
        self.corename = corename
        self.config = config
        self.choice = choice
        self.setNumThreads = setNumThreads
        self.getNumThreads = getNumThreads
    }

    /// OpenBLAS' own thread pool size for one GEMM call. Set to 1 when we split work across our own
    /// threads, so that two thread pools are never nested.
    public var threads: Int {
        get { Int(getNumThreads?() ?? 1) }
        set { setNumThreads?(Int32(max(1, newValue))) }
    }

    /// One line for `--version` and benchmark headers, e.g. "OpenBLAS 0.3.21 kernel SkylakeX (chosen from CPU flags)".
    public var summary: String {
        let how: String
        switch choice {
        case .user(let name): how = "OPENBLAS_CORETYPE=\(name) from the environment"
        case .chosen: how = "chosen from CPU flags"
        case .library: how = "OpenBLAS' own detection"
        }
        let version = config.split(separator: " ").prefix(2).joined(separator: " ")
        return "\(version) kernel \(corename) (\(how))"
    }
}
