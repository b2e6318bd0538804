import Foundation

// N = rows (B*T, already shifted by the caller), V = vocab.

/// Softmax cross-entropy over the vocabulary, fused with its gradient.
public enum CrossEntropy {
    /// Targets equal to this are skipped (PyTorch's `ignore_index`).
    public static let ignoreIndex: Int32 = -100
    /// Row elements per thread below which splitting is not worth it.
    static let minimumPerChunk = 65_536

    /// logits (N, V), targets (N) in 0..<V or -100 (ignored). Returns Σ over non-ignored rows of
    /// -log softmax(logits)[target] and how many rows that is (the caller divides: HF's mean).
    /// If dlogits (N, V) is given it is OVERWRITTEN with (softmax - onehot(target)) * gradScale, and with 0
    /// on ignored rows; it may alias logits (in place). A batch with no target returns (0, 0), no NaN.
    public static func forwardBackward(dlogits: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                       rows: Int, vocab: Int, gradScale: Float) -> (lossSum: Double, count: Int) {
        let V = vocab
        let chunks = Parallel.chunkCount(rows * V, minimumPerChunk: minimumPerChunk)
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: chunks) { lossParts in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: chunks) { countParts in
                // Without dlogits, exp values go through a small stack buffer, one slice at a time.
                withUnsafeTemporaryAllocation(of: Float.self, capacity: dlogits == nil ? chunks * sliceLength : 0) { slices in
                    Parallel.forEach(chunks) { chunk in
                        var loss = 0.0, count = 0
                        for n in Parallel.range(chunk: chunk, of: chunks, total: rows) {
                            let row = logits + n * V
                            let target = targets[n]
                            if target == ignoreIndex || target < 0 {
                                if let dlogits { (dlogits + n * V).update(repeating: 0, count: V) }
                                continue
                            }
                            let targetLogit = row[Int(target)]
                            let maxLogit = VectorMath.maximum(row, V)
                            var sumExp: Float = 0
                            if let dlogits {
                                let gradRow = dlogits + n * V
                                sumExp = VectorMath.expShifted(gradRow, row, V, shift: maxLogit)
                                VectorMath.scale(gradRow, V, by: gradScale / sumExp)
                                gradRow[Int(target)] -= gradScale
                            } else {
                                let slice = slices.baseAddress! + chunk * sliceLength
                                var start = 0
                                while start < V {
                                    let length = min(sliceLength, V - start)
                                    sumExp += VectorMath.expShifted(slice, row + start, length, shift: maxLogit)
                                    start += length
                                }
                            }
                            loss += Double(maxLogit) + Foundation.log(Double(sumExp)) - Double(targetLogit)
                            count += 1
                        }
                        lossParts[chunk] = loss
                        countParts[chunk] = count
                    }
                    var lossSum = 0.0, count = 0
                    for chunk in 0..<chunks { lossSum += lossParts[chunk]; count += countParts[chunk] }
                    return (lossSum, count)
                }
            }
        }
    }

    static let sliceLength = 1024

    /// Naive twin: log-sum-exp and softmax in Double.
    public enum Reference {
        public static func forwardBackward(dlogits: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                           rows: Int, vocab: Int, gradScale: Float) -> (lossSum: Double, count: Int) {
            var lossSum = 0.0, count = 0
            for n in 0..<rows {
                let target = Int(targets[n])
                if target < 0 {
                    if let dlogits { for v in 0..<vocab { dlogits[n * vocab + v] = 0 } }
                    continue
                }
                var maxLogit = -Double.infinity
                for v in 0..<vocab { maxLogit = max(maxLogit, Double(logits[n * vocab + v])) }
                var sumExp = 0.0
                for v in 0..<vocab { sumExp += Foundation.exp(Double(logits[n * vocab + v]) - maxLogit) }
                let logSumExp = maxLogit + Foundation.log(sumExp)
                lossSum += logSumExp - Double(logits[n * vocab + target])
                count += 1
                if let dlogits {
                    for v in 0..<vocab {
                        let probability = Foundation.exp(Double(logits[n * vocab + v]) - logSumExp)
                        dlogits[n * vocab + v] = Float((probability - (v == target ? 1 : 0)) * Double(gradScale))
                    }
                }
            }
            return (lossSum, count)
        }
    }
}
