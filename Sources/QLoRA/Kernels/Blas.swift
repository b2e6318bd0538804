/// Row-major single-precision GEMM on the runtime-loaded OpenBLAS (see Runtime/OpenBLAS.swift).
/// The only place that calls BLAS.
public enum Blas {
    private static let rowMajor: Int32 = 101
    private static let noTrans: Int32 = 111
    private static let trans: Int32 = 112

    /// C (M, N) = alpha * op(A) * op(B) + beta * C, all row-major.
    /// op(A) is (M, K): A is (M, K) with lda >= K, or (K, M) with lda >= M when transA.
    /// op(B) is (K, N): B is (K, N) with ldb >= N, or (N, K) with ldb >= K when transB.
    @inline(__always)
    public static func sgemm(
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        _ a: UnsafePointer<Float>, lda: Int, transA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transB: Bool = false,
        m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            // BLAS leaves C untouched when K = 0 only if beta = 1; make beta's meaning explicit.
            if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
        OpenBLAS.shared.sgemm(rowMajor, transA ? trans : noTrans, transB ? trans : noTrans,
                              Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                              beta, c, Int32(ldc))
    }
}

extension Blas {
    /// `sgemm` split over `Parallel.threads` threads by rows of C (or by columns when C has few rows),
    /// each part a single-threaded OpenBLAS call. qlora keeps OpenBLAS itself single-threaded (see
    /// Runtime/OpenBLAS.swift) and parallelizes here, so no two thread pools ever nest and results do
    /// not depend on what other threads are doing.
    public static func sgemmParallel(
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        _ a: UnsafePointer<Float>, lda: Int, transA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transB: Bool = false,
        m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0
    ) {
        let threads = Parallel.threads
        // Below ~2 MFLOP a thread hand-off costs more than it saves.
        guard threads > 1, m * n * k >= 1 << 20 else {
            sgemm(c, ldc: ldc, a, lda: lda, transA: transA, b, ldb: ldb, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta)
            return
        }
        if m >= 16 * threads {
            Parallel.forEach(threads) { part in
                let rows = Parallel.range(chunk: part, of: threads, total: m)
                let aPart = transA ? a + rows.lowerBound : a + rows.lowerBound * lda
                sgemm(c + rows.lowerBound * ldc, ldc: ldc, aPart, lda: lda, transA: transA, b, ldb: ldb, transB: transB,
                      m: rows.count, n: n, k: k, alpha: alpha, beta: beta)
            }
        } else {
            Parallel.forEach(threads) { part in
                let columns = Parallel.range(chunk: part, of: threads, total: n)
                let bPart = transB ? b + columns.lowerBound * ldb : b + columns.lowerBound
                sgemm(c + columns.lowerBound, ldc: ldc, a, lda: lda, transA: transA, bPart, ldb: ldb, transB: transB,
                      m: m, n: columns.count, k: k, alpha: alpha, beta: beta)
            }
        }
    }
}
