import Foundation
import Testing
@testable import QLoRA

@Suite struct KernelCrossEntropyTests {
    static func inputs(rows: Int, vocab: Int, seed: UInt64) -> (logits: [Float], targets: [Int32]) {
        var random = KernelRandom(seed: seed)
        let logits = random.floats(rows * vocab, -6, 6)
        let targets = (0..<rows).map { n -> Int32 in n % 3 == 1 ? -100 : Int32(random.integer(below: vocab)) }
        return (logits, targets)
    }

    @Test(arguments: [(1, 1), (4, 7), (9, 1031), (64, 5000)])
    func matchesReference(rows: Int, vocab: Int) {
        let (logits, targets) = Self.inputs(rows: rows, vocab: vocab, seed: UInt64(rows * 31 + vocab))
        let gradScale: Float = 1 / 3
        var grad = [Float](repeating: .nan, count: rows * vocab), gradRef = grad
        let fast = CrossEntropy.forwardBackward(dlogits: &grad, logits: logits, targets: targets, rows: rows, vocab: vocab, gradScale: gradScale)
        let slow = CrossEntropy.Reference.forwardBackward(dlogits: &gradRef, logits: logits, targets: targets, rows: rows, vocab: vocab, gradScale: gradScale)
        #expect(fast.count == slow.count)
        #expect(fast.count == targets.filter { $0 != -100 }.count)
        #expect(abs(fast.lossSum - slow.lossSum) <= 1e-5 * max(1, abs(slow.lossSum)), "loss \(fast.lossSum) vs \(slow.lossSum)")
        expectClose(grad, gradRef, tolerance: 1e-6, "dlogits \(rows)x\(vocab)")
        // Loss only (no gradient) and in place give the same numbers.
        let lossOnly = CrossEntropy.forwardBackward(dlogits: nil, logits: logits, targets: targets, rows: rows, vocab: vocab, gradScale: gradScale)
        #expect(lossOnly.count == fast.count && abs(lossOnly.lossSum - fast.lossSum) <= 1e-6 * max(1, abs(fast.lossSum)))
        var inPlace = logits
        let aliased = inPlace.withUnsafeMutableBufferPointer { buffer in
            CrossEntropy.forwardBackward(dlogits: buffer.baseAddress!, logits: buffer.baseAddress!, targets: targets,
                                         rows: rows, vocab: vocab, gradScale: gradScale)
        }
        #expect(aliased.count == fast.count && aliased.lossSum == fast.lossSum)
        #expect(inPlace == grad)
    }

    @Test func ignoredRowsGetZeroGradient() {
        let (logits, targets) = Self.inputs(rows: 6, vocab: 10, seed: 4)
        var grad = [Float](repeating: .nan, count: 60)
        _ = CrossEntropy.forwardBackward(dlogits: &grad, logits: logits, targets: targets, rows: 6, vocab: 10, gradScale: 1)
        for n in 0..<6 {
            let row = Array(grad[(n * 10)..<(n * 10 + 10)])
            if targets[n] == -100 { #expect(row.allSatisfy { $0 == 0 }, "row \(n)") }
            else { #expect(abs(row.reduce(0, +)) <= 1e-6, "softmax - onehot sums to 0 in row \(n)") }
        }
    }

    @Test func fullyIgnoredBatchGivesZeroCountAndNoNaN() {
        let logits: [Float] = (0..<20).map { Float($0) }
        let targets: [Int32] = [-100, -100]
        var grad = [Float](repeating: .nan, count: 20)
        let result = CrossEntropy.forwardBackward(dlogits: &grad, logits: logits, targets: targets, rows: 2, vocab: 10, gradScale: 0.5)
        #expect(result.count == 0 && result.lossSum == 0)
        #expect(grad.allSatisfy { $0 == 0 })
    }

    @Test func uniformLogitsGiveLogVocab() {
        let V = 50
        let result = CrossEntropy.forwardBackward(dlogits: nil, logits: [Float](repeating: 2.5, count: 2 * V), targets: [3, 49],
                                                  rows: 2, vocab: V, gradScale: 1)
        #expect(result.count == 2)
        #expect(abs(result.lossSum - 2 * Foundation.log(Double(V))) <= 1e-6)
    }

    @Test func gradientMatchesFiniteDifferences() {
        let rows = 3, V = 8
        let (logits, targets) = Self.inputs(rows: rows, vocab: V, seed: 9)   // row 1 ignored
        let gradScale: Float = 0.25
        var grad = [Float](repeating: 0, count: rows * V)
        _ = CrossEntropy.forwardBackward(dlogits: &grad, logits: logits, targets: targets, rows: rows, vocab: V, gradScale: gradScale)
        let numeric = finiteDifferenceGradient(at: logits.map(Double.init)) { x in
            var total = 0.0
            for n in 0..<rows where targets[n] != -100 {
                let row = x[(n * V)..<(n * V + V)]
                let m = row.max()!
                total += m + Foundation.log(row.map { Foundation.exp($0 - m) }.reduce(0, +)) - x[n * V + Int(targets[n])]
            }
            return total * Double(gradScale)
        }
        expectGradientMatches(grad, numeric, "CrossEntropy dlogits")
    }
}
