import Foundation

// L = layers, P = max positions (maxSeqLen), KV = key/value heads, D = head dim, H = query heads,
// G = H / KV, M = query rows of one call, S = cached positions attended to.

/// Keys (after RoPE) and values of every layer for positions 0..<length, preallocated for `maxSeqLen`
/// positions in fp32, so that generation runs each new token once instead of re-running the prefix.
public final class KVCache {
    public let layers: Int
    public let maxSeqLen: Int
    public let kvHeads: Int
    public let headDim: Int
    /// Positions filled (the next token goes at `length`).
    public internal(set) var length = 0
    /// (L, P, KV, D)
    let keys: UnsafeMutablePointer<Float>
    /// (L, P, KV, D)
    let values: UnsafeMutablePointer<Float>

    public init(layers: Int, maxSeqLen: Int, kvHeads: Int, headDim: Int) {
        self.layers = layers
        self.maxSeqLen = maxSeqLen
        self.kvHeads = kvHeads
        self.headDim = headDim
        let count = layers * maxSeqLen * kvHeads * headDim
        keys = .allocate(capacity: count)
        values = .allocate(capacity: count)
        keys.initialize(repeating: 0, count: count)
        values.initialize(repeating: 0, count: count)
    }

    public convenience init(config: LlamaConfig, maxSeqLen: Int) {
        self.init(layers: config.numHiddenLayers, maxSeqLen: maxSeqLen, kvHeads: config.numKeyValueHeads, headDim: config.headDim)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes the cache holds: 2 * L * P * KV * D fp32 values.
    public var bytes: Int { 2 * layers * maxSeqLen * kvHeads * headDim * MemoryLayout<Float>.size }

    /// Bytes a cache of `maxSeqLen` positions for `config` holds (the memory plan's figure).
    public static func bytes(config: LlamaConfig, maxSeqLen: Int) -> Int {
        2 * config.numHiddenLayers * maxSeqLen * config.numKeyValueHeads * config.headDim * MemoryLayout<Float>.size
    }

    /// Forgets every position (the buffers stay allocated).
    public func reset() { length = 0 }

    /// (P, KV, D) keys of `layer`.
    public func keys(layer: Int) -> UnsafeMutablePointer<Float> { keys + layer * maxSeqLen * kvHeads * headDim }
    /// (P, KV, D) values of `layer`.
    public func values(layer: Int) -> UnsafeMutablePointer<Float> { values + layer * maxSeqLen * kvHeads * headDim }
}

/// Causal attention of M new query rows at positions start..<start+M over cached keys / values of
/// positions 0..<start+M (their own keys already written): row i sees positions 0...start+i, or the
/// last `window` of them. Same math as `Attention.forward` (softmax(q k^T scale) v in fp32), one
/// (batch 1) sequence.
public enum CachedAttention {
    /// Floats of scratch `forward` needs for M rows over up to P positions: one (M, P) block per thread.
    public static func scratchCount(rows: Int, maxSeqLen: Int) -> Int { Parallel.maxThreads * rows * maxSeqLen }

    /// out (M, H, D); q (M, H, D) after RoPE; keys, values (P, KV, D) holding positions 0..<start+M.
    public static func forward(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                               keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                               rows M: Int, start: Int, heads H: Int, kvHeads KV: Int, headDim D: Int,
                               scale: Float? = nil, window: Int? = nil, scratch: UnsafeMutablePointer<Float>) {
        let G = H / KV, ldq = H * D, ldk = KV * D, S = start + M
        let scale = scale ?? Attention.defaultScale(headDim: D)
        let window = window ?? Int.max
        let chunks = H * M * S * D < Attention.minimumWorkToSplit ? 1 : min(Parallel.threads, H)
        Parallel.forEachCallingBLAS(chunks) { chunk in
            let scores = scratch + chunk * M * S   // (M, S)
            for h in Parallel.range(chunk: chunk, of: chunks, total: H) {
                let kvHead = h / G
                // scores (M, S) = q_h k^T * scale
                Blas.sgemm(scores, ldc: S, q + h * D, lda: ldq, keys + kvHead * D, ldb: ldk, transB: true,
                           m: M, n: S, k: D, alpha: scale)
                for i in 0..<M {
                    let first = Attention.firstKey(row: start + i, window: window)
                    let row = scores + i * S, seen = row + first, length = start + i + 1 - first
                    let maxScore = VectorMath.maximum(seen, length)
                    let total = VectorMath.expShifted(seen, seen, length, shift: maxScore)
                    VectorMath.scale(seen, length, by: 1 / total)
                    row.update(repeating: 0, count: first)
                    (row + start + i + 1).update(repeating: 0, count: S - start - i - 1)
                }
                // out_h (M, D) = probs (M, S) v (S, D)
                Blas.sgemm(out + h * D, ldc: ldq, scores, lda: S, values + kvHead * D, ldb: ldk, m: M, n: D, k: S)
            }
        }
    }

    /// Naive twin: Double accumulation, no BLAS.
    public enum Reference {
        public static func forward(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                   keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                   rows M: Int, start: Int, heads H: Int, kvHeads KV: Int, headDim D: Int,
                                   scale: Float? = nil, window: Int? = nil) {
            let G = H / KV
            let scale = scale.map(Double.init) ?? 1 / Double(D).squareRoot()
            var weights = [Double](repeating: 0, count: start + M)
            for i in 0..<M {
                for h in 0..<H {
                    let kvHead = h / G, length = start + i + 1
                    let first = window.map { max(0, start + i - $0 + 1) } ?? 0
                    let qRow = q + (i * H + h) * D
                    var maxScore = -Double.infinity
                    for j in first..<length {
                        var s = 0.0
                        for d in 0..<D { s += Double(qRow[d]) * Double(keys[(j * KV + kvHead) * D + d]) }
                        weights[j] = s * scale
                        maxScore = max(maxScore, weights[j])
                    }
                    var total = 0.0
                    for j in first..<length { weights[j] = Foundation.exp(weights[j] - maxScore); total += weights[j] }
                    for d in 0..<D {
                        var acc = 0.0
                        for j in first..<length { acc += weights[j] / total * Double(values[(j * KV + kvHead) * D + d]) }
                        out[(i * H + h) * D + d] = Float(acc)
                    }
                }
            }
        }
    }
}
