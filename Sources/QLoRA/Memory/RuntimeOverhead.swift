/// The memory of the `qlora` process that is not a model, an adapter or an arena: the Swift runtime,
/// Foundation, the loaded OpenBLAS (code, data, its thread pool) and the buffers OpenBLAS allocates for
/// packing GEMM panels. Measured, not derived: `probe()` measures it in the running process, and
/// `measuredBytes` is the figure the memory plan uses (see docs/memory.md for how it was taken).
public enum RuntimeOverhead {
    /// Resident bytes of a release `qlora` on Debian 12 / x86-64 (OpenBLAS 0.3.21, Haswell kernel, 2 cores)
    /// after loading OpenBLAS and running one GEMM, before any model: `qlora memory --probe-runtime`.
    public static let measuredBytes = 24_780_800

    public struct Probe: Sendable, Equatable {
        /// RSS when the probe started (Swift runtime, Foundation, the command's own state).
        public var atStart: Int
        /// RSS after OpenBLAS was loaded (its code and data, thread pool started).
        public var afterLoadingBLAS: Int
        /// RSS after one GEMM (OpenBLAS' per-thread packing buffers touched), operands excluded.
        public var afterGEMM: Int
        /// OpenBLAS' thread count.
        public var blasThreads: Int

        public var loadingBLAS: Int { afterLoadingBLAS - atStart }
        /// The part of RSS that OpenBLAS' GEMM buffers took.
        public var blasBuffers: Int { afterGEMM - afterLoadingBLAS }
    }

    /// Measures the runtime overhead in this process: loads OpenBLAS if needed and runs one (n, n, n) GEMM
    /// on operands allocated and touched before the measurement, so only OpenBLAS' own buffers add up.
    public static func probe(gemmSize n: Int = 1024) throws -> Probe {
        let atStart = ProcessMemory.residentBytes().current
        let blas = try OpenBLAS.ensureLoaded()
        let afterLoad = ProcessMemory.residentBytes().current
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        a.initialize(repeating: 1, count: n * n)
        b.initialize(repeating: 1, count: n * n)
        c.initialize(repeating: 0, count: n * n)
        let withOperands = ProcessMemory.residentBytes().current
        Blas.sgemm(c, ldc: n, a, lda: n, b, ldb: n, m: n, n: n, k: n)
        let afterGEMM = ProcessMemory.residentBytes().current
        return Probe(atStart: atStart, afterLoadingBLAS: afterLoad,
                     afterGEMM: afterLoad + max(0, afterGEMM - withOperands), blasThreads: blas.threads)
    }
}
