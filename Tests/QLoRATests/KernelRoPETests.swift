import Foundation
import Testing
@testable import QLoRA

@Suite struct KernelRoPETests {
    static let llama32 = RoPEScaling(type: "llama3", factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192)

    @Test(arguments: [nil, RoPEScaling(type: "linear", factor: 4), llama32])
    func applyMatchesReferenceAndInvertsBackward(scaling: RoPEScaling?) {
        let D = 64, heads = 3, N = 7, P = 40_000
        let table = RoPETable(headDim: D, maxPositions: P, theta: 500_000, scaling: scaling)
        var random = KernelRandom(seed: 17)
        let positions: [Int32] = [0, 1, 2, 15, 999, 8191, 39_999]
        let x = random.floats(N * heads * D)
        var fast = x, slow = x
        table.apply(&fast, positions: positions, rows: N, heads: heads)
        RoPETable.Reference.apply(&slow, positions: positions, rows: N, heads: heads, headDim: D,
                                  inverseFrequencies: table.inverseFrequencies)
        expectClose(fast, slow, tolerance: 5e-7, "apply vs reference (\(scaling?.type ?? "default"))")
        // Position 0 is the identity, bit for bit.
        #expect(Array(fast[0..<(heads * D)]) == Array(x[0..<(heads * D)]))
        // A rotation keeps the norm of each (i, i + D/2) pair.
        for n in 0..<N { for h in 0..<heads { for i in 0..<(D / 2) {
            let base = (n * heads + h) * D
            let before = Double(x[base + i]) * Double(x[base + i]) + Double(x[base + i + D / 2]) * Double(x[base + i + D / 2])
            let after = Double(fast[base + i]) * Double(fast[base + i]) + Double(fast[base + i + D / 2]) * Double(fast[base + i + D / 2])
            #expect(abs(before - after) <= 1e-6, "pair norm at row \(n) head \(h) dim \(i)")
        } } }
        // Backward is the inverse rotation (and the transpose, since the rotation is orthogonal).
        var back = fast
        table.applyBackward(&back, positions: positions, rows: N, heads: heads)
        expectClose(back, x, tolerance: 1e-6, "applyBackward(apply(x))")
        var backRef = fast
        RoPETable.Reference.apply(&backRef, positions: positions, rows: N, heads: heads, headDim: D,
                                  inverseFrequencies: table.inverseFrequencies, inverse: true)
        expectClose(back, backRef, tolerance: 5e-7, "applyBackward vs reference")
    }

    @Test func backwardIsTransposeByFiniteDifferences() {
        // L = Σ g * apply(x): dL/dx = applyBackward(g). Double forward from the table's cos / sin.
        let D = 8, heads = 2, N = 3
        let table = RoPETable(headDim: D, maxPositions: 50, theta: 10_000, scaling: nil)
        let positions: [Int32] = [4, 0, 49]
        var random = KernelRandom(seed: 2)
        let x = random.floats(N * heads * D), g = random.floats(N * heads * D)
        var analytic = g
        table.applyBackward(&analytic, positions: positions, rows: N, heads: heads)
        let numeric = finiteDifferenceGradient(at: x.map(Double.init)) { x in
            var total = 0.0
            for n in 0..<N { for h in 0..<heads { for i in 0..<(D / 2) {
                let p = Int(positions[n]) * (D / 2) + i
                let c = Double(table.cos[p]), s = Double(table.sin[p])
                let j = (n * heads + h) * D + i, k = j + D / 2
                total += Double(g[j]) * (x[j] * c - x[k] * s) + Double(g[k]) * (x[k] * c + x[j] * s)
            } } }
            return total
        }
        expectGradientMatches(analytic, numeric, "RoPE backward")
    }

    @Test func defaultInverseFrequenciesFollowTheFormula() {
        // inv_freq[i] = 1 / theta^(2i / D) (tiny-llama: theta 10000, D 32).
        let table = RoPETable(headDim: 32, maxPositions: 12, theta: 10_000, scaling: nil)
        let expected = RoPETable.Reference.inverseFrequencies(headDim: 32, theta: 10_000, scaling: nil)
        for i in 0..<16 {
            #expect(abs(Double(table.inverseFrequencies[i]) - expected[i]) <= 2e-7 * expected[i], "inv_freq[\(i)]")
        }
        #expect(table.inverseFrequencies[0] == 1)
        // cos / sin of the fp32 angle.
        let angle = Float(11) * table.inverseFrequencies[3]
        #expect(table.cos[11 * 16 + 3] == Float(Foundation.cos(Double(angle))))
        #expect(table.sin[11 * 16 + 3] == Float(Foundation.sin(Double(angle))))
    }

    @Test func linearScalingDividesFrequencies() {
        let plain = RoPETable.inverseFrequencies(headDim: 16, theta: 10_000, scaling: nil)
        let linear = RoPETable.inverseFrequencies(headDim: 16, theta: 10_000, scaling: RoPEScaling(type: "linear", factor: 2.5))
        #expect(linear == plain.map { $0 / 2.5 })
        #expect(RoPETable.inverseFrequencies(headDim: 16, theta: 10_000, scaling: RoPEScaling(type: "default")) == plain)
    }

    @Test func llama3ScalingMatchesTransformers() {
        let fast = RoPETable.inverseFrequencies(headDim: 64, theta: 500_000, scaling: Self.llama32)
        // Bit patterns computed with numpy float32, op by op as transformers' _compute_llama3_parameters in
        // torch float32 (inv_freq = 1 / float32(500000) ** (arange(0, 64, 2) / 64); wavelen = reciprocal(inv_freq)
        // * float32(2 pi); smooth = (reciprocal(wavelen) * 8192 - 1) / 3; ...), Llama 3.2 rope_scaling
        // (factor 32, low 1, high 4, original 8192). 14: high frequency (kept), 15-17: smoothed, 18/31: divided by 32.
        let expected: [Int: UInt32] = [0: 0x3f80_0000, 1: 0x3f29_e1c6, 14: 0x3b52_7720, 15: 0x3aa9_279b, 16: 0x39e1_3620,
                                       17: 0x38cb_98f7, 18: 0x37a3_418d, 31: 0x33ca_41b0]
        for (i, bits) in expected.sorted(by: { $0.key < $1.key }) {
            let ulps = abs(Int64(fast[i].bitPattern) - Int64(bits))
            // torch's float32 pow is Sleef (<= 1 ulp): allow one ulp of the base frequency to carry through.
            #expect(ulps <= 2, "llama3 inv_freq[\(i)] = \(fast[i]) (0x\(String(fast[i].bitPattern, radix: 16))), expected 0x\(String(bits, radix: 16))")
        }
        // And the Double evaluation of the same formula agrees to fp32 precision.
        let double = RoPETable.Reference.inverseFrequencies(headDim: 64, theta: 500_000, scaling: Self.llama32)
        for i in 0..<32 { #expect(abs(Double(fast[i]) - double[i]) <= 1e-6 * double[i], "inv_freq[\(i)]") }
    }
}
