/// The trainable low-rank branch of one linear: y += s * (drop(x) A^T) B^T, PEFT semantics.
/// A (r, I) and B (O, r) and their gradients live in the TrainableParameters arena.
///
/// Dims: N rows, I = in features, O = out features, r = rank.
public struct LoRAAdapter {
    public let rank: Int
    public let inFeatures: Int
    public let outFeatures: Int
    public let scale: Float
    public let dropout: Float
    public let a: UnsafeMutablePointer<Float>     /// (r, I)
    public let b: UnsafeMutablePointer<Float>     /// (O, r)
    public let gradA: UnsafeMutablePointer<Float>?  /// (r, I), nil when not training
    public let gradB: UnsafeMutablePointer<Float>?  /// (O, r)
    /// Distinguishes this adapter's dropout masks from every other adapter's.
    public let maskStream: UInt64

    /// t (N, r) = drop(x) A^T, saved for backward; y (N, O) += s * t B^T.
    /// `dropScratch` (N, I) is needed only when dropout > 0.
    public func forward(y: UnsafeMutablePointer<Float>, t: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows n: Int,
                        maskSeed: UInt64, dropScratch: UnsafeMutablePointer<Float>?) {
        let input = droppedInput(x, rows: n, maskSeed: maskSeed, scratch: dropScratch)
        Blas.sgemm(t, ldc: rank, input, lda: inFeatures, a, ldb: inFeatures, transB: true, m: n, n: rank, k: inFeatures)
        Blas.sgemm(y, ldc: outFeatures, t, lda: rank, b, ldb: rank, transB: true, m: n, n: outFeatures, k: rank,
                   alpha: scale, beta: 1)
    }

    /// dB += s dy^T t; dt = s dy B; dA += dt^T drop(x); dx += drop'(dt A).
    /// `dt` (N, r) is scratch; `dropScratch` (N, I) is needed only when dropout > 0.
    public func backward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, t: UnsafePointer<Float>, x: UnsafePointer<Float>,
                         rows n: Int, maskSeed: UInt64, dt: UnsafeMutablePointer<Float>, dropScratch: UnsafeMutablePointer<Float>?) {
        guard let gradA, let gradB else { return }
        Blas.sgemm(gradB, ldc: rank, dy, lda: outFeatures, transA: true, t, ldb: rank, m: outFeatures, n: rank, k: n,
                   alpha: scale, beta: 1)
        Blas.sgemm(dt, ldc: rank, dy, lda: outFeatures, b, ldb: rank, m: n, n: rank, k: outFeatures, alpha: scale)
        let input = droppedInput(x, rows: n, maskSeed: maskSeed, scratch: dropScratch)
        Blas.sgemm(gradA, ldc: inFeatures, dt, lda: rank, transA: true, input, ldb: inFeatures, m: rank, n: inFeatures, k: n, beta: 1)
        if dropout == 0 {
            Blas.sgemm(dx, ldc: inFeatures, dt, lda: rank, a, ldb: inFeatures, m: n, n: inFeatures, k: rank, beta: 1)
        } else {
            let scratch = dropScratch!
            Blas.sgemm(scratch, ldc: inFeatures, dt, lda: rank, a, ldb: inFeatures, m: n, n: inFeatures, k: rank)
            applyMask(scratch, rows: n, maskSeed: maskSeed)
            let count = n * inFeatures
            for i in 0..<count { dx[i] += scratch[i] }
        }
    }

    private func droppedInput(_ x: UnsafePointer<Float>, rows n: Int, maskSeed: UInt64, scratch: UnsafeMutablePointer<Float>?) -> UnsafePointer<Float> {
        guard dropout > 0, let scratch else { return x }
        scratch.update(from: x, count: n * inFeatures)
        applyMask(scratch, rows: n, maskSeed: maskSeed)
        return UnsafePointer(scratch)
    }

    /// Inverted dropout: zero with probability p, else scale by 1/(1-p). The mask is a pure function of
    /// (maskSeed, adapter, element), so backward regenerates it instead of storing it.
    private func applyMask(_ values: UnsafeMutablePointer<Float>, rows n: Int, maskSeed: UInt64) {
        let keep = 1 / (1 - dropout)
        let seed = maskSeed ^ (maskStream &* 0x9E37_79B9_7F4A_7C15)
        for i in 0..<(n * inFeatures) {
            values[i] = SeededGenerator.unitFloat(seed: seed, index: UInt64(i)) < dropout ? 0 : values[i] * keep
        }
    }
}
