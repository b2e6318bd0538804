// N = rows (B*T), C = hidden size (dim).

/// Llama RMSNorm as Hugging Face computes it in fp32: `weight * (x * rsqrt(mean(x^2) + eps))`; with
/// `offset` 1, Gemma's `(1 + weight) * (...)` (the scale is weight + offset; gradients are the same).
public enum RMSNorm {
    /// Rows per thread below which splitting is not worth it (in elements: rows * C).
    static let minimumElementsPerChunk = 16_384

    /// out (N, C) = weight * (x * rstd); rstd (N) = 1 / sqrt(mean(x^2) + eps), saved for backward.
    /// x (N, C), weight (C). out may alias x.
    public static func forward(
        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        x: UnsafePointer<Float>, weight: UnsafePointer<Float>, offset: Float = 0, rows: Int, dim: Int, eps: Float
    ) {
        let C = dim
        Parallel.forEachRange(rows, minimumPerChunk: max(1, minimumElementsPerChunk / max(C, 1))) { rowRange in
            for n in rowRange {
                let xRow = x + n * C, outRow = out + n * C
                let meanSquare = VectorMath.sumOfSquares(xRow, C) / Float(C)
                let r = 1 / (meanSquare + eps).squareRoot()
                rstd[n] = r
                for c in 0..<C { outRow[c] = (weight[c] + offset) * (xRow[c] * r) }
            }
        }
    }

    /// dx (N, C) += d out / d x applied to dy; dWeight (C) += Σ_n dy * x * rstd (skipped when nil: frozen norm).
    /// dy (N, C), x (N, C), weight (C), rstd (N) from `forward`.
    /// With y_c = w_c x_c r and r = (mean(x^2) + eps)^-1/2: dx_c = r w_c dy_c - x_c r^3 / C * Σ_k dy_k w_k x_k.
    public static func backward(
        dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
        dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, offset: Float = 0,
        rstd: UnsafePointer<Float>, rows: Int, dim: Int
    ) {
        let C = dim
        let rowsPerChunk = max(1, minimumElementsPerChunk / max(C, 1))
        Parallel.forEachRange(rows, minimumPerChunk: rowsPerChunk) { rowRange in
            for n in rowRange {
                let xRow = x + n * C, dyRow = dy + n * C, dxRow = dx + n * C
                let r = rstd[n]
                let projection = offset == 0 ? VectorMath.dot3(dyRow, weight, xRow, C) : offsetDot(dyRow, weight, offset, xRow, C)
                let coefficient = projection * r * r * r / Float(C)
                for c in 0..<C { dxRow[c] += r * (weight[c] + offset) * dyRow[c] - coefficient * xRow[c] }
            }
        }
        guard let dWeight else { return }
        accumulateWeightGradient(dWeight, dy: dy, x: x, rstd: rstd, rows: rows, dim: dim)
    }

    /// `backward` with dx written over dy instead of added to another buffer: for the per-head q/k
    /// norms, whose output gradient is dead once the input gradient exists (no second (N, H*D) buffer).
    /// dWeight (C) += Σ_n dy * x * rstd is taken first, from the output gradient.
    public static func backwardInPlace(
        dy: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
        x: UnsafePointer<Float>, weight: UnsafePointer<Float>, offset: Float = 0,
        rstd: UnsafePointer<Float>, rows: Int, dim: Int
    ) {
        let C = dim
        if let dWeight { accumulateWeightGradient(dWeight, dy: UnsafePointer(dy), x: x, rstd: rstd, rows: rows, dim: dim) }
        Parallel.forEachRange(rows, minimumPerChunk: max(1, minimumElementsPerChunk / max(C, 1))) { rowRange in
            for n in rowRange {
                let xRow = x + n * C, dyRow = dy + n * C
                let r = rstd[n]
                // The row's projection is read before any element of it is overwritten.
                let projection = offset == 0 ? VectorMath.dot3(dyRow, weight, xRow, C) : offsetDot(dyRow, weight, offset, xRow, C)
                let coefficient = projection * r * r * r / Float(C)
                for c in 0..<C { dyRow[c] = r * (weight[c] + offset) * dyRow[c] - coefficient * xRow[c] }
            }
        }
    }

    /// Σ_c dy_c (w_c + offset) x_c (the projection of a row with Gemma's offset scale).
    @inline(__always)
    private static func offsetDot(_ dy: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ offset: Float,
                                  _ x: UnsafePointer<Float>, _ count: Int) -> Float {
        var total: Float = 0
        for c in 0..<count { total += dy[c] * (weight[c] + offset) * x[c] }
        return total
    }

    /// dWeight (C) += Σ_n dy * x * rstd.
    private static func accumulateWeightGradient(_ dWeight: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                                 x: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, dim: Int) {
        let C = dim
        // Columns split across threads so that each thread owns its slice of dWeight.
        let columnChunks = min(Parallel.chunkCount(rows * C, minimumPerChunk: minimumElementsPerChunk), max(1, C / 64))
        Parallel.forEach(columnChunks) { chunk in
            let columns = Parallel.range(chunk: chunk, of: columnChunks, total: C)
            let width = columns.count
            let dW = dWeight + columns.lowerBound
            for n in 0..<rows {
                let r = rstd[n]
                let xRow = x + n * C + columns.lowerBound, dyRow = dy + n * C + columns.lowerBound
                for c in 0..<width { dW[c] += dyRow[c] * xRow[c] * r }
            }
        }
    }

    /// Naive twin: plain loops, Double accumulation.
    public enum Reference {
        public static func forward(
            out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
            x: UnsafePointer<Float>, weight: UnsafePointer<Float>, offset: Float = 0, rows: Int, dim: Int, eps: Float
        ) {
            for n in 0..<rows {
                var sumSquares = 0.0
                for c in 0..<dim { let v = Double(x[n * dim + c]); sumSquares += v * v }
                let r = 1 / (sumSquares / Double(dim) + Double(eps)).squareRoot()
                rstd[n] = Float(r)
                for c in 0..<dim { out[n * dim + c] = Float((Double(weight[c]) + Double(offset)) * Double(x[n * dim + c]) * r) }
            }
        }

        public static func backward(
            dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
            dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, offset: Float = 0,
            rstd: UnsafePointer<Float>, rows: Int, dim: Int
        ) {
            for n in 0..<rows {
                let r = Double(rstd[n])
                var projection = 0.0
                for c in 0..<dim { projection += Double(dy[n * dim + c]) * (Double(weight[c]) + Double(offset)) * Double(x[n * dim + c]) }
                for c in 0..<dim {
                    let i = n * dim + c
                    let grad = r * (Double(weight[c]) + Double(offset)) * Double(dy[i]) - Double(x[i]) * r * r * r / Double(dim) * projection
                    dx[i] += Float(grad)
                }
            }
            guard let dWeight else { return }
            for c in 0..<dim {
                var total = 0.0
                for n in 0..<rows { total += Double(dy[n * dim + c]) * Double(x[n * dim + c]) * Double(rstd[n]) }
                dWeight[c] += Float(total)
            }
        }
    }
}
