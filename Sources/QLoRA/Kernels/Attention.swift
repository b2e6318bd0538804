import Foundation

// B = batch, T = sequence length, H = query heads, KV = key/value heads, D = head dim,
// G = H / KV query heads per key/value head (GQA: query head h reads kv head h / G).

/// Causal grouped-query attention as Hugging Face's "eager" Llama attention:
/// probs = softmax(q k^T * D^-1/2 + causal mask) in fp32, out = probs v.
///
/// All B batch rows in one call. The GEMMs go to OpenBLAS per (batch, head) on the strided layout
/// (no copies), in blocks of `rowBlock` query rows: rows [r0, r1) only meet keys [0, r1), which skips
/// most of the work above the diagonal. Work is split over (batch, head) units in the forward and over
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
        init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int) {
            B = batch; T = seqLen; H = heads; KV = kvHeads; D = headDim
            G = heads / kvHeads
            ldq = heads * headDim
            ldk = kvHeads * headDim
            scale = Float(1 / Double(headDim).squareRoot())
        }
    }

    /// Floats of scratch `forward` and `backward` need: one (min(T, 64), T) block per thread that may
    /// run a backward unit. The forward uses none but takes the same buffer.
    public static func scratchCount(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int) -> Int {
        min(Parallel.maxThreads, max(1, batch * kvHeads)) * min(seqLen, rowBlock) * seqLen
    }

    /// out (B, T, H, D); probs (B, H, T, T) saved for backward, 0 above the diagonal.
    /// q (B, T, H, D), k, v (B, T, KV, D), RoPE already applied. scratch: `scratchCount(...)` floats.
    public static func forward(
        out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        let shape = Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim)
        let (B, T, H, D, G, ldq, ldk, scale) = (shape.B, shape.T, shape.H, shape.D, shape.G, shape.ldq, shape.ldk, shape.scale)
        let units = B * H
        let chunks = units * T * T * D < minimumWorkToSplit ? 1 : min(Parallel.threads, units)
        Parallel.forEachCallingBLAS(chunks) { chunk in
            for unit in Parallel.range(chunk: chunk, of: chunks, total: units) {
                let b = unit / H, h = unit % H, kvHead = h / G
                let qHead = q + b * T * ldq + h * D
                let kHead = k + b * T * ldk + kvHead * D
                let vHead = v + b * T * ldk + kvHead * D
                let outHead = out + b * T * ldq + h * D
                let P = probs + unit * T * T   // (T, T) for (b, h)
                for r0 in stride(from: 0, to: T, by: rowBlock) {
                    let r1 = min(T, r0 + rowBlock), m = r1 - r0
                    // scores[r0:r1, 0:r1] = q k^T * scale
                    Blas.sgemm(P + r0 * T, ldc: T, qHead + r0 * ldq, lda: ldq, kHead, ldb: ldk, transB: true,
                               m: m, n: r1, k: D, alpha: scale)
                    for i in r0..<r1 {
                        let row = P + i * T, length = i + 1
                        let maxScore = VectorMath.maximum(row, length)
                        let total = VectorMath.expShifted(row, row, length, shift: maxScore)
                        VectorMath.scale(row, length, by: 1 / total)
                        (row + length).update(repeating: 0, count: T - length)
                    }
                    // out[r0:r1] = probs[r0:r1, 0:r1] v[0:r1]
                    Blas.sgemm(outHead + r0 * ldq, ldc: ldq, P + r0 * T, lda: T, vHead, ldb: ldk,
                               m: m, n: D, k: r1)
                }
            }
        }
    }

    /// dq (B, T, H, D) +=, dk, dv (B, T, KV, D) += from dout (B, T, H, D), q, k, v and probs (B, H, T, T).
    /// dP = dout v^T, dS = P * (dP - rowsum(dP * P)), dq += dS k * scale, dk += dS^T q * scale, dv += P^T dout.
    public static func backward(
        dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
        dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        probs: UnsafePointer<Float>,
        batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        let shape = Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim)
        let (B, T, H, D, G, ldq, ldk, scale) = (shape.B, shape.T, shape.H, shape.D, shape.G, shape.ldq, shape.ldk, shape.scale)
        let KV = kvHeads
        let units = B * KV
        let slots = min(Parallel.maxThreads, max(1, units))
        let chunks = B * H * T * T * D < minimumWorkToSplit ? 1 : min(Parallel.threads, units, slots)
        let slotSize = min(T, rowBlock) * T
        Parallel.forEachCallingBLAS(chunks) { chunk in
            let dS = scratch + chunk * slotSize   // (m, r1) block of dP, then dS, row stride r1
            for unit in Parallel.range(chunk: chunk, of: chunks, total: units) {
                let b = unit / KV, kvHead = unit % KV
                let kHead = k + b * T * ldk + kvHead * D, vHead = v + b * T * ldk + kvHead * D
                let dkHead = dk + b * T * ldk + kvHead * D, dvHead = dv + b * T * ldk + kvHead * D
                for h in (kvHead * G)..<((kvHead + 1) * G) {
                    let offset = b * T * ldq + h * D
                    let qHead = q + offset, dqHead = dq + offset, doutHead = dout + offset
                    let P = probs + (b * H + h) * T * T
                    for r0 in stride(from: 0, to: T, by: rowBlock) {
                        let r1 = min(T, r0 + rowBlock), m = r1 - r0
                        // dv[0:r1] += P[r0:r1, 0:r1]^T dout[r0:r1]
                        Blas.sgemm(dvHead, ldc: ldk, P + r0 * T, lda: T, transA: true, doutHead + r0 * ldq, ldb: ldq,
                                   m: r1, n: D, k: m, beta: 1)
                        // dP = dout[r0:r1] v[0:r1]^T
                        Blas.sgemm(dS, ldc: r1, doutHead + r0 * ldq, lda: ldq, vHead, ldb: ldk, transB: true,
                                   m: m, n: r1, k: D)
                        for i in r0..<r1 {
                            let p = P + i * T, row = dS + (i - r0) * r1, length = i + 1
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
            batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        ) {
            let T = seqLen, D = headDim
            let scale = 1 / Double(D).squareRoot()
            var scores = [Double](repeating: 0, count: T)
            forEachHead(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: D) { b, h, qi, ki in
                for i in 0..<T {
                    var maxScore = -Double.infinity
                    for j in 0...i {
                        var s = 0.0
                        for d in 0..<D { s += Double(q[qi(i, d)]) * Double(k[ki(j, d)]) }
                        scores[j] = s * scale
                        maxScore = max(maxScore, scores[j])
                    }
                    var total = 0.0
                    for j in 0...i { scores[j] = Foundation.exp(scores[j] - maxScore); total += scores[j] }
                    for j in 0..<T { probs[((b * heads + h) * T + i) * T + j] = j <= i ? Float(scores[j] / total) : 0 }
                    for d in 0..<D {
                        var acc = 0.0
                        for j in 0...i { acc += scores[j] / total * Double(v[ki(j, d)]) }
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
            probs: UnsafePointer<Float>, batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        ) {
            let T = seqLen, D = headDim
            let scale = 1 / Double(D).squareRoot()
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
