import Foundation
import Testing
@testable import QLoRA

@Suite struct KernelAttentionTests {
    struct Shape: CustomTestStringConvertible, Sendable {
        var batch, seqLen, heads, kvHeads, headDim: Int
        /// Sliding-window layers (Gemma 3, Mistral) and a score scale other than D^-1/2 (Gemma).
        var window: Int? = nil
        var scale: Float? = nil
        var testDescription: String {
            "B\(batch) T\(seqLen) H\(heads) KV\(kvHeads) D\(headDim)" + (window.map { " W\($0)" } ?? "") + (scale.map { " scale \($0)" } ?? "")
        }
        var qCount: Int { batch * seqLen * heads * headDim }
        var kvCount: Int { batch * seqLen * kvHeads * headDim }
        var probsCount: Int { batch * heads * seqLen * seqLen }
        var statsCount: Int { Attention.rowStatsCount(batch: batch, seqLen: seqLen, heads: heads) }
    }

    static let shapes: [Shape] = [
        Shape(batch: 2, seqLen: 12, heads: 3, kvHeads: 1, headDim: 32),   // tiny-llama
        Shape(batch: 1, seqLen: 1, heads: 2, kvHeads: 2, headDim: 4),
        Shape(batch: 3, seqLen: 5, heads: 2, kvHeads: 2, headDim: 3),
        Shape(batch: 1, seqLen: 70, heads: 4, kvHeads: 2, headDim: 8),    // crosses the 64-row block
        Shape(batch: 2, seqLen: 130, heads: 4, kvHeads: 2, headDim: 16),  // large enough to split over threads
        Shape(batch: 2, seqLen: 12, heads: 4, kvHeads: 2, headDim: 8, window: 5, scale: 0.2),
        Shape(batch: 1, seqLen: 70, heads: 2, kvHeads: 1, headDim: 8, window: 1),      // each query sees itself only
        Shape(batch: 2, seqLen: 130, heads: 4, kvHeads: 2, headDim: 16, window: 64),  // windows across row blocks, threads
        Shape(batch: 1, seqLen: 9, heads: 2, kvHeads: 2, headDim: 4, window: 100),    // wider than the sequence: causal
    ]

    @Test(arguments: shapes)
    func forwardAndBackwardMatchReference(shape s: Shape) {
        var random = KernelRandom(seed: UInt64(s.seqLen * 7 + s.heads))
        let q = random.floats(s.qCount, -2, 2), k = random.floats(s.kvCount, -2, 2), v = random.floats(s.kvCount)
        var scratch = [Float](repeating: .nan, count: Attention.scratchCount(batch: s.batch, seqLen: s.seqLen, heads: s.heads,
                                                                             kvHeads: s.kvHeads, headDim: s.headDim))
        var out = [Float](repeating: .nan, count: s.qCount), probs = [Float](repeating: .nan, count: s.probsCount)
        var stats = [Float](repeating: .nan, count: s.statsCount)
        var outRef = out, probsRef = probs
        Attention.forward(out: &out, rowStats: &stats, q: q, k: k, v: v, batch: s.batch, seqLen: s.seqLen, heads: s.heads,
                          kvHeads: s.kvHeads, headDim: s.headDim, scale: s.scale, window: s.window, scratch: &scratch)
        // The probabilities the backward recomputes from the saved row statistics.
        Attention.probabilities(probs: &probs, rowStats: stats, q: q, k: k, batch: s.batch, seqLen: s.seqLen, heads: s.heads,
                                kvHeads: s.kvHeads, headDim: s.headDim, scale: s.scale, window: s.window, scratch: &scratch)
        Attention.Reference.forward(out: &outRef, probs: &probsRef, q: q, k: k, v: v, batch: s.batch, seqLen: s.seqLen,
                                    heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, scale: s.scale, window: s.window)
        expectClose(probs, probsRef, tolerance: 2e-6, "probs \(s.testDescription)")
        expectClose(out, outRef, tolerance: 2e-6, "out \(s.testDescription)")
        // Exactly 0 above the diagonal and before the window, rows sum to 1.
        let T = s.seqLen
        for row in 0..<(s.batch * s.heads * T) {
            let i = row % T
            #expect(probs[(row * T + i + 1)..<(row * T + T)].allSatisfy { $0 == 0 }, "row \(row) above diagonal")
            let first = s.window.map { max(0, i - $0 + 1) } ?? 0
            #expect(probs[(row * T)..<(row * T + first)].allSatisfy { $0 == 0 }, "row \(row) before the window")
            #expect(probs[(row * T + first)...(row * T + i)].allSatisfy { $0 > 0 }, "row \(row) inside the window")
            #expect(abs(probs[(row * T)..<(row * T + T)].reduce(0, +) - 1) <= 1e-5, "row \(row) sum")
        }

        let dout = random.floats(s.qCount)
        let dq0 = random.floats(s.qCount), dk0 = random.floats(s.kvCount), dv0 = random.floats(s.kvCount)
        var dq = dq0, dk = dk0, dv = dv0, dqRef = dq0, dkRef = dk0, dvRef = dv0
        Attention.backward(dq: &dq, dk: &dk, dv: &dv, dout: dout, q: q, k: k, v: v, rowStats: stats, batch: s.batch,
                           seqLen: s.seqLen, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, scale: s.scale, window: s.window,
                           scratch: &scratch)
        Attention.Reference.backward(dq: &dqRef, dk: &dkRef, dv: &dvRef, dout: dout, q: q, k: k, v: v, probs: probs,
                                     batch: s.batch, seqLen: s.seqLen, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, scale: s.scale)
        let tolerance: Float = 1e-5 * Float(max(1, s.seqLen / 16))
        expectClose(dq, dqRef, tolerance: tolerance, "dq \(s.testDescription)")
        expectClose(dk, dkRef, tolerance: tolerance, "dk \(s.testDescription)")
        expectClose(dv, dvRef, tolerance: tolerance, "dv \(s.testDescription)")
    }

    /// Σ g * attention(q, k, v) in Double, for the finite differences.
    static func weightedOutput(_ s: Shape, q: [Double], k: [Double], v: [Double], g: [Float]) -> Double {
        let T = s.seqLen, H = s.heads, KV = s.kvHeads, D = s.headDim, G = H / KV
        var total = 0.0
        for b in 0..<s.batch { for h in 0..<H { for i in 0..<T {
            let kvHead = h / G
            var scores = [Double](repeating: 0, count: i + 1)
            for j in 0...i {
                for d in 0..<D { scores[j] += q[((b * T + i) * H + h) * D + d] * k[((b * T + j) * KV + kvHead) * D + d] }
                scores[j] /= Double(D).squareRoot()
            }
            let m = scores.max()!
            let e = scores.map { Foundation.exp($0 - m) }, sum = e.reduce(0, +)
            for d in 0..<D {
                var o = 0.0
                for j in 0...i { o += e[j] / sum * v[((b * T + j) * KV + kvHead) * D + d] }
                total += Double(g[((b * T + i) * H + h) * D + d]) * o
            }
        } } }
        return total
    }

    @Test func backwardMatchesFiniteDifferences() {
        let s = Shape(batch: 2, seqLen: 5, heads: 4, kvHeads: 2, headDim: 3)
        var random = KernelRandom(seed: 99)
        let q = random.floats(s.qCount, -1.5, 1.5), k = random.floats(s.kvCount, -1.5, 1.5), v = random.floats(s.kvCount)
        let g = random.floats(s.qCount)
        var scratch = [Float](repeating: 0, count: Attention.scratchCount(batch: s.batch, seqLen: s.seqLen, heads: s.heads,
                                                                          kvHeads: s.kvHeads, headDim: s.headDim))
        var out = [Float](repeating: 0, count: s.qCount), stats = [Float](repeating: 0, count: s.statsCount)
        Attention.forward(out: &out, rowStats: &stats, q: q, k: k, v: v, batch: s.batch, seqLen: s.seqLen, heads: s.heads,
                          kvHeads: s.kvHeads, headDim: s.headDim, scratch: &scratch)
        var dq = [Float](repeating: 0, count: s.qCount), dk = [Float](repeating: 0, count: s.kvCount), dv = dk
        Attention.backward(dq: &dq, dk: &dk, dv: &dv, dout: g, q: q, k: k, v: v, rowStats: stats, batch: s.batch,
                           seqLen: s.seqLen, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, scratch: &scratch)
        let qd = q.map(Double.init), kd = k.map(Double.init), vd = v.map(Double.init)
        expectGradientMatches(dq, finiteDifferenceGradient(at: qd) { Self.weightedOutput(s, q: $0, k: kd, v: vd, g: g) }, "attention dq")
        expectGradientMatches(dk, finiteDifferenceGradient(at: kd) { Self.weightedOutput(s, q: qd, k: $0, v: vd, g: g) }, "attention dk")
        expectGradientMatches(dv, finiteDifferenceGradient(at: vd) { Self.weightedOutput(s, q: qd, k: kd, v: $0, g: g) }, "attention dv")
    }
}

@Suite struct KernelParallelTests {
    @Test(arguments: [0, 1, 2, 3, 17])
    func forEachRunsEveryIndexOnce(count: Int) {
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
        defer { hits.deallocate() }
        hits.initialize(repeating: 0, count: max(count, 1))
        Parallel.forEach(count) { hits[$0] += 1 }
        #expect((0..<count).allSatisfy { hits[$0] == 1 })
    }

    @Test func rangesCoverEverythingOnce() {
        for total in [0, 1, 5, 64, 1001] {
            for chunks in 1...5 {
                let ranges = (0..<chunks).map { Parallel.range(chunk: $0, of: chunks, total: total) }
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == total)
                #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            }
        }
        #expect(Parallel.chunkCount(10, minimumPerChunk: 100) == 1)
        #expect(Parallel.chunkCount(1_000_000, minimumPerChunk: 100) == Parallel.threads)
    }

    @Test func callingBLASRestoresOpenBLASThreads() {
        let before = OpenBLAS.shared.threads
        Parallel.forEachCallingBLAS(4) { _ in }
        #expect(OpenBLAS.shared.threads == before)
    }
}
