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
