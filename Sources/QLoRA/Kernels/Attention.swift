import Foundation

// B = batch, T = sequence length, H = query heads, KV = key/value heads, D = head dim,
// G = H / KV query heads per key/value head (GQA: query head h reads kv head h / G).

/// Causal grouped-query attention as Hugging Face's "eager" Llama attention:
/// probs = softmax(q k^T * scale + causal mask) in fp32, out = probs v; scale is D^-1/2 unless the
/// family sets its own (Gemma's query_pre_attn_scalar^-1/2). With a `window` W (sliding-window layers),
/// query i sees keys i-W+1 ... i only (transformers' `kv_idx > q_idx - sliding_window`).
///
/// All B batch rows in one call. The GEMMs go to OpenBLAS per (batch, head) on the strided layout
/// (no copies), in blocks of `rowBlock` query rows: rows [r0, r1) only meet keys [0, r1), which skips
/// most of the work above the diagonal. Only each row's softmax max and sum are kept for backward, which
/// recomputes a block's probabilities (one more q k^T GEMM) instead of storing B·H·T² floats. Work is split over (batch, head) units in the forward and over
/// (batch, kv head) units in the backward (a kv head's dk / dv belong to one thread), with OpenBLAS
/// single-threaded inside (see Parallel.swift).
public enum Attention {
    /// Query rows per block (the causal skip works at this granularity).
    static let rowBlock = 64
    /// Below this many multiply-adds the call runs on one thread.
    static let minimumWorkToSplit = 1 << 21

    /// Dims and row strides of the (B, T, H, D) / (B, T, KV, D) layout, and the score scale D^-1/2.
    private struct Shape {
        let B, T, H, KV, D, G, ldq, ldk: Int
        let scale: Float
        /// Keys a query sees, itself included; Int.max = every earlier one.
        let window: Int
        init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float?, window: Int?) {
            B = batch; T = seqLen; H = heads; KV = kvHeads; D = headDim
            G = heads / kvHeads
            ldq = heads * headDim
            ldk = kvHeads * headDim
            self.scale = scale ?? defaultScale(headDim: headDim)
            self.window = window ?? Int.max
        }
    }

    /// D^-1/2 in fp32, the score scale of every family but Gemma.
    public static func defaultScale(headDim: Int) -> Float { Float(1 / Double(headDim).squareRoot()) }

    /// The first key query row i sees.
    @inline(__always) static func firstKey(row i: Int, window: Int) -> Int { window == Int.max ? 0 : max(0, i - window + 1) }

    /// Floats of scratch `forward` and `backward` need: per thread two (min(T, 64), T) blocks (the
    /// probabilities of a block of query rows, and their gradient).
    public static func scratchCount(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int) -> Int {
        2 * min(Parallel.maxThreads, max(1, batch * heads)) * min(seqLen, rowBlock) * seqLen
    }

    /// Floats of `rowStats`: the softmax max and sum of every query row, (B, H, T, 2).
    public static func rowStatsCount(batch: Int, seqLen: Int, heads: Int) -> Int { batch * heads * seqLen * 2 }

    /// P[r0:r1, 0:r1] of one (batch, head) into `block` (m, r1): scores q k^T * scale, then
    /// exp(s - max) / sum, 0 above the diagonal and before the window. `computeStats` (forward) finds each row's max and sum and
    /// stores them in `stats` (2 per row, rows r0..<r1); otherwise the stored ones are used, which gives
    /// the forward's probabilities bit for bit (same GEMM call, same exp, same division).
    @inline(__always)
    private static func probabilityBlock(_ block: UnsafeMutablePointer<Float>, qHead: UnsafePointer<Float>, kHead: UnsafePointer<Float>,
                                         shape: Shape, r0: Int, r1: Int, stats: UnsafeMutablePointer<Float>, computeStats: Bool) {
        let m = r1 - r0
        Blas.sgemm(block, ldc: r1, qHead + r0 * shape.ldq, lda: shape.ldq, kHead, ldb: shape.ldk, transB: true,
                   m: m, n: r1, k: shape.D, alpha: shape.scale)
        for i in r0..<r1 {
            let first = firstKey(row: i, window: shape.window)
            let row = block + (i - r0) * r1, seen = row + first, length = i + 1 - first
            let rowStats = stats + 2 * (i - r0)
            if computeStats { rowStats[0] = VectorMath.maximum(seen, length) }
            let total = VectorMath.expShifted(seen, seen, length, shift: rowStats[0])
            if computeStats { rowStats[1] = total }
            VectorMath.scale(seen, length, by: 1 / rowStats[1])
            row.update(repeating: 0, count: first)
            (row + i + 1).update(repeating: 0, count: r1 - i - 1)
        }
    }

    /// out (B, T, H, D); rowStats (B, H, T, 2) saved for backward (softmax max and sum per query row:
    /// the probabilities themselves, B·H·T² floats, are recomputed in backward instead of stored).
    /// q (B, T, H, D), k, v (B, T, KV, D), RoPE already applied. scratch: `scratchCount(...)` floats.
    public static func forward(
        out: UnsafeMutablePointer<Float>, rowStats: UnsafeMutablePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float? = nil, window: Int? = nil,
        scratch: UnsafeMutablePointer<Float>
    ) {
        let shape = Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim, scale: scale, window: window)
        let (B, T, H, D, G, ldq, ldk) = (shape.B, shape.T, shape.H, shape.D, shape.G, shape.ldq, shape.ldk)
        let units = B * H
        let chunks = units * T * T * D < minimumWorkToSplit ? 1 : min(Parallel.threads, units, Parallel.maxThreads)
        let slotSize = 2 * min(T, rowBlock) * T
        Parallel.forEachCallingBLAS(chunks) { chunk in
            let P = scratch + chunk * slotSize
            for unit in Parallel.range(chunk: chunk, of: chunks, total: units) {
                let b = unit / H, h = unit % H, kvHead = h / G
                let qHead = q + b * T * ldq + h * D
                let kHead = k + b * T * ldk + kvHead * D
                let vHead = v + b * T * ldk + kvHead * D
                let outHead = out + b * T * ldq + h * D
                for r0 in stride(from: 0, to: T, by: rowBlock) {
                    let r1 = min(T, r0 + rowBlock)
                    probabilityBlock(P, qHead: qHead, kHead: kHead, shape: shape, r0: r0, r1: r1,
                                     stats: rowStats + 2 * (unit * T + r0), computeStats: true)
                    // out[r0:r1] = P[r0:r1, 0:r1] v[0:r1]
                    Blas.sgemm(outHead + r0 * ldq, ldc: ldq, P, lda: r1, vHead, ldb: ldk, m: r1 - r0, n: D, k: r1)
                }
            }
        }
    }

    /// The probabilities (B, H, T, T) the forward used, recomputed from `rowStats` exactly as the backward
    /// does (for tests and inspection; training never materializes them).
    public static func probabilities(
        probs: UnsafeMutablePointer<Float>, rowStats: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
        batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float? = nil, window: Int? = nil,
        scratch: UnsafeMutablePointer<Float>
    ) {
        let shape = Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim, scale: scale, window: window)
        let T = shape.T
        for unit in 0..<(shape.B * shape.H) {
            let b = unit / shape.H, h = unit % shape.H
            let qHead = q + b * T * shape.ldq + h * shape.D, kHead = k + b * T * shape.ldk + (h / shape.G) * shape.D
            for r0 in stride(from: 0, to: T, by: rowBlock) {
                let r1 = min(T, r0 + rowBlock)
                probabilityBlock(scratch, qHead: qHead, kHead: kHead, shape: shape, r0: r0, r1: r1,
                                 stats: UnsafeMutablePointer(mutating: rowStats) + 2 * (unit * T + r0), computeStats: false)
                for i in r0..<r1 {
                    let row = probs + (unit * T + i) * T
                    row.update(from: scratch + (i - r0) * r1, count: r1)
                    (row + r1).update(repeating: 0, count: T - r1)
                }
            }
        }
    }

    /// dq (B, T, H, D) +=, dk, dv (B, T, KV, D) += from dout (B, T, H, D), q, k, v and the forward's rowStats.
    /// P is recomputed per block; dP = dout v^T, dS = P * (dP - rowsum(dP * P)), dq += dS k * scale,
    /// dk += dS^T q * scale, dv += P^T dout.
    public static func backward(
        dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
        dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        rowStats: UnsafePointer<Float>,
        batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float? = nil, window: Int? = nil,
        scratch: UnsafeMutablePointer<Float>
    ) {
        let shape = Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim, scale: scale, window: window)
        let (B, T, H, D, G, ldq, ldk) = (shape.B, shape.T, shape.H, shape.D, shape.G, shape.ldq, shape.ldk)
        let scale = shape.scale
        let KV = kvHeads
        let units = B * KV
        let chunks = B * H * T * T * D < minimumWorkToSplit ? 1 : min(Parallel.threads, units, Parallel.maxThreads)
        let blockSize = min(T, rowBlock) * T
        let stats = UnsafeMutablePointer(mutating: rowStats)
        Parallel.forEachCallingBLAS(chunks) { chunk in
            let P = scratch + chunk * 2 * blockSize   // (m, r1) probabilities of the block
            let dS = P + blockSize                     // (m, r1) block of dP, then dS, row stride r1
            for unit in Parallel.range(chunk: chunk, of: chunks, total: units) {
                let b = unit / KV, kvHead = unit % KV
                let kHead = k + b * T * ldk + kvHead * D, vHead = v + b * T * ldk + kvHead * D
                let dkHead = dk + b * T * ldk + kvHead * D, dvHead = dv + b * T * ldk + kvHead * D
                for h in (kvHead * G)..<((kvHead + 1) * G) {
                    let offset = b * T * ldq + h * D
                    let qHead = q + offset, dqHead = dq + offset, doutHead = dout + offset
                    for r0 in stride(from: 0, to: T, by: rowBlock) {
                        let r1 = min(T, r0 + rowBlock), m = r1 - r0
                        probabilityBlock(P, qHead: qHead, kHead: kHead, shape: shape, r0: r0, r1: r1,
                                         stats: stats + 2 * ((b * H + h) * T + r0), computeStats: false)
                        // dv[0:r1] += P[r0:r1, 0:r1]^T dout[r0:r1]
                        Blas.sgemm(dvHead, ldc: ldk, P, lda: r1, transA: true, doutHead + r0 * ldq, ldb: ldq,
                                   m: r1, n: D, k: m, beta: 1)
                        // dP = dout[r0:r1] v[0:r1]^T
                        Blas.sgemm(dS, ldc: r1, doutHead + r0 * ldq, lda: ldq, vHead, ldb: ldk, transB: true,
                                   m: m, n: r1, k: D)
                        for i in r0..<r1 {
                            let p = P + (i - r0) * r1, row = dS + (i - r0) * r1, length = i + 1
                            let projection = VectorMath.dot(p, row, length)
                            for j in 0..<length { row[j] = p[j] * (row[j] - projection) }
                            (row + length).update(repeating: 0, count: r1 - length)
                        }
                        // dq[r0:r1] += dS k[0:r1] * scale
                        Blas.sgemm(dqHead + r0 * ldq, ldc: ldq, dS, lda: r1, kHead, ldb: ldk,
                                   m: m, n: D, k: r1, alpha: scale, beta: 1)
                        // dk[0:r1] += dS^T q[r0:r1] * scale
                        Blas.sgemm(dkHead, ldc: ldk, dS, lda: r1, transA: true, qHead + r0 * ldq, ldb: ldq,
                                   m: r1, n: D, k: m, alpha: scale, beta: 1)
                    }
                }
            }
        }
    }

    /// Naive twin: full T x T loops with the mask, Double accumulation, no BLAS, no scratch.
    public enum Reference {
        public static func forward(
            out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
            q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
            batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float? = nil, window: Int? = nil
        ) {
            let T = seqLen, D = headDim
            let scale = scale.map(Double.init) ?? 1 / Double(D).squareRoot()
            var scores = [Double](repeating: 0, count: T)
            forEachHead(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: D) { b, h, qi, ki in
                for i in 0..<T {
                    let first = window.map { max(0, i - $0 + 1) } ?? 0
                    var maxScore = -Double.infinity
                    for j in first...i {
                        var s = 0.0
                        for d in 0..<D { s += Double(q[qi(i, d)]) * Double(k[ki(j, d)]) }
                        scores[j] = s * scale
                        maxScore = max(maxScore, scores[j])
                    }
                    var total = 0.0
                    for j in first...i { scores[j] = Foundation.exp(scores[j] - maxScore); total += scores[j] }
                    for j in 0..<T { probs[((b * heads + h) * T + i) * T + j] = j <= i && j >= first ? Float(scores[j] / total) : 0 }
                    for d in 0..<D {
                        var acc = 0.0
                        for j in first...i { acc += scores[j] / total * Double(v[ki(j, d)]) }
                        out[qi(i, d)] = Float(acc)
                    }
                }
            }
        }

        /// Calls body(b, h, qi, ki) per (batch, query head) with index functions (t, d) -> flat index
        /// into (B, T, H, D) for query head h and into (B, T, KV, D) for its kv head.
        static func forEachHead(batch: Int, seqLen T: Int, heads H: Int, kvHeads KV: Int, headDim D: Int,
                                _ body: (Int, Int, (Int, Int) -> Int, (Int, Int) -> Int) -> Void) {
            for b in 0..<batch {
                for h in 0..<H {
                    let kvHead = h / (H / KV)
                    body(b, h, { t, d in ((b * T + t) * H + h) * D + d }, { t, d in ((b * T + t) * KV + kvHead) * D + d })
                }
            }
        }

        public static func backward(
            dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
            dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
            probs: UnsafePointer<Float>, batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float? = nil
        ) {
            let T = seqLen, D = headDim
            let scale = scale.map(Double.init) ?? 1 / Double(D).squareRoot()
            var dP = [Double](repeating: 0, count: T)
            forEachHead(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: D) { b, h, qi, ki in
                for i in 0..<T {
                    let pRow = probs + ((b * heads + h) * T + i) * T
                    var projection = 0.0
                    for j in 0...i {
                        var s = 0.0
                        for d in 0..<D { s += Double(dout[qi(i, d)]) * Double(v[ki(j, d)]) }
                        dP[j] = s
                        projection += s * Double(pRow[j])
                    }
                    for j in 0...i {
                        let p = Double(pRow[j])
                        let dScore = p * (dP[j] - projection) * scale
                        for d in 0..<D {
                            dq[qi(i, d)] += Float(dScore * Double(k[ki(j, d)]))
                            dk[ki(j, d)] += Float(dScore * Double(q[qi(i, d)]))
                            dv[ki(j, d)] += Float(p * Double(dout[qi(i, d)]))
                        }
                    }
                }
            }
        }
    }
}
