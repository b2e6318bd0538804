import CQLoRAKernels

/// The frozen part of a linear layer: y = x W^T (+ bias). W is never materialized whole unless it is
/// already dense fp32. With bf16 compute on the bf16 kernel (GemmKernel), BF16Gemm packs W panel by panel
/// straight from its storage; otherwise each GEMM walks W in tiles of `tileRows` output rows, writing one
/// tile into the 16-bit-precision compute buffer and multiplying with it through sgemm, forward
/// (y = x W^T) and backward (dx += dy W).
///
/// Dims: N rows of activations, I = in features, O = out features, R = tile rows.
public final class BaseLinear {
    public let weight: any FrozenWeight
    public let bias: UnsafeMutableBufferPointer<Float>?   /// (O), frozen
    public let precision: ComputePrecision
    /// The kernel of the GEMMs with bf16 compute (ignored otherwise); per layer so that one process can
    /// hold models on different kernels (the reference tests compare them).
    public var kernel: GemmKernel = GemmKernel.current

    public var outFeatures: Int { weight.outFeatures }
    public var inFeatures: Int { weight.inFeatures }

    public init(weight: any FrozenWeight, bias: [Float]? = nil, precision: ComputePrecision) {
        self.weight = weight
        self.precision = precision
        if let bias {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: bias.count)
            _ = buffer.initialize(from: bias)
            self.bias = buffer
        } else {
            self.bias = nil
        }
    }

    deinit { bias?.deallocate() }

    /// fp32 storage usable without a tile (dense fp32 weight computed in fp32).
    private var direct: UnsafePointer<Float>? { precision == .fp32 ? weight.denseStorage : nil }

    /// Whether this layer's GEMMs need the tile workspace.
    public var needsTile: Bool { direct == nil }

    /// Up to this many rows go through the matrix-vector kernels (decoding one token, or one per
    /// sequence of a batch); more through the GEMM.
    public static let matrixVectorRows = 8

    /// Whether the GEMMs run on the bf16 kernel (bf16 compute, and the kernel in use is a bf16 one).
    public var usesBF16Kernel: Bool { precision == .bf16 && kernel.usesBF16 }

    /// y (N, O) = x (N, I) W^T + bias.
    public func forward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows n: Int, workspace: GemmWorkspace) {
        let o = outFeatures, i = inFeatures
        let tile = workspace.base, tileRows = workspace.tileRows
        if n <= Self.matrixVectorRows, weight.hasMatrixVector(precision: precision) {
            // A few rows (decoding tokens): read W once, straight from storage, both threads on its rows;
            // each row's result is bit-identical to running it alone.
            if usesBF16Kernel {
                let pairs = UnsafeMutableRawPointer(tile).assumingMemoryBound(to: UInt32.self)
                let ldx = (i + 31) / 32 * 16
                precondition(workspace.floats >= n * ldx, "GEMM workspace too small for \(n) bf16 rows")
                for row in 0..<n { (pairs + row * ldx + i / 2).update(repeating: 0, count: ldx - i / 2) }
                qlora_bf16_from_f32_rows(GemmKernel.fastestLevel, UnsafeMutableRawPointer(pairs).assumingMemoryBound(to: UInt16.self),
                                         2 * ldx, x, i, n, i)
                let level = kernel.level
                Parallel.forEachRange(o, minimumPerChunk: 64) { rows in
                    weight.matrixVectorBF16(y: y + rows.lowerBound, ldy: o, x: pairs, ldx: ldx, vectors: n, rows: rows, level: level)
                }
            } else {
                Parallel.forEachRange(o, minimumPerChunk: 64) { rows in
                    for row in 0..<n {
                        weight.matrixVector(y: y + row * o + rows.lowerBound, x: x + row * i, rows: rows, precision: precision)
                    }
                }
            }
        } else if usesBF16Kernel {
            StepProfiler.measure(.gemm) {
                BF16Gemm.forward(y: y, x: x, rows: n, weight: weight, level: kernel.level, workspace: workspace.raw, bytes: workspace.bytes)
            }
        } else if let w = direct {
            StepProfiler.measure(.gemm) {
                Blas.sgemmParallel(y, ldc: o, x, lda: i, w, ldb: i, transB: true, m: n, n: o, k: i)
            }
        } else {
            var r0 = 0
            while r0 < o {
                let r1 = min(o, r0 + tileRows)
                writeTile(rows: r0..<r1, into: tile)
                StepProfiler.measure(.gemm) {
                    Blas.sgemmParallel(y + r0, ldc: o, x, lda: i, tile, ldb: i, transB: true, m: n, n: r1 - r0, k: i)
                }
                r0 = r1
            }
        }
        if let bias {
            for row in 0..<n {
                let yr = y + row * o
                for c in 0..<o { yr[c] += bias[c] }
            }
        }
    }

    /// dx (N, I) += dy (N, O) W.
    public func backwardInput(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, rows n: Int, workspace: GemmWorkspace) {
        let o = outFeatures, i = inFeatures
        let tile = workspace.base, tileRows = workspace.tileRows
        if usesBF16Kernel {
            StepProfiler.measure(.gemm) {
                BF16Gemm.backwardInput(dx: dx, dy: dy, rows: n, weight: weight, level: kernel.level, workspace: workspace.raw, bytes: workspace.bytes)
            }
            return
        }
        if let w = direct {
            StepProfiler.measure(.gemm) {
                Blas.sgemmParallel(dx, ldc: i, dy, lda: o, w, ldb: i, m: n, n: i, k: o, beta: 1)
            }
            return
        }
        var r0 = 0
        while r0 < o {
            let r1 = min(o, r0 + tileRows)
            writeTile(rows: r0..<r1, into: tile)
            StepProfiler.measure(.gemm) {
                Blas.sgemmParallel(dx, ldc: i, dy + r0, lda: o, tile, ldb: i, m: n, n: i, k: r1 - r0, beta: 1)
            }
            r0 = r1
        }
    }

    /// Rows [rows) of W into the tile (rows.count, I), the rows split across threads.
    private func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>) {
        StepProfiler.measure(.dequant) {
            let i = inFeatures
            let parts = rows.count * i >= 32768 ? Parallel.threads : 1
            Parallel.forEach(parts) { part in
                let sub = Parallel.range(chunk: part, of: parts, total: rows.count)
                weight.writeTile(rows: (rows.lowerBound + sub.lowerBound)..<(rows.lowerBound + sub.upperBound),
                                 into: tile + sub.lowerBound * i, precision: precision)
            }
        }
    }
}
