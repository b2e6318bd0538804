import Foundation
import Testing
@testable import QLoRA

/// Gemma's GeGLU against finite differences and torch's gelu(approximate="tanh") values (printed by
/// torch 2.13 in fp32); against its Double twin in KernelSwiGLUTests.
@Suite struct KernelGeGLUTests {
    @Test func backwardMatchesFiniteDifferences() {
        let count = 24
        var random = KernelRandom(seed: 4)
        let gate = random.floats(count, -4, 4), up = random.floats(count, -2, 2), g = random.floats(count)
        var dgate = [Float](repeating: 0, count: count), dup = dgate
        GeGLU.backward(dgate: &dgate, dup: &dup, dout: g, gate: gate, up: up, count: count)
        func weighted(_ gate: [Double], _ up: [Double]) -> Double {
            var total = 0.0
            for i in 0..<count { total += Double(g[i]) * GeGLU.Reference.gelu(gate[i]).value * up[i] }
            return total
        }
        let gd = gate.map(Double.init), ud = up.map(Double.init)
        expectGradientMatches(dgate, finiteDifferenceGradient(at: gd) { weighted($0, ud) }, "GeGLU dgate")
        expectGradientMatches(dup, finiteDifferenceGradient(at: ud) { weighted(gd, $0) }, "GeGLU dup")
    }

    @Test func equalsTorchGeluTanh() {
        // torch.nn.functional.gelu(torch.tensor(x), approximate="tanh"), fp32.
        let cases: [(Float, Float)] = [(-3, -0.0036374331), (-1, -0.15880799), (-0.5, -0.154286), (0, 0),
                                       (0.5, 0.345714), (1, 0.84119201), (2, 1.9545977), (5, 4.9999995)]
        let gate = cases.map(\.0), up = [Float](repeating: 1, count: cases.count)
        var out = [Float](repeating: 0, count: cases.count)
        GeGLU.forward(out: &out, gate: gate, up: up, count: cases.count)
        for (i, c) in cases.enumerated() { #expect(abs(out[i] - c.1) <= 2e-7 * max(1, abs(c.1)), "gelu_tanh(\(c.0)) = \(out[i]), torch \(c.1)") }
    }
}

@Suite struct KernelSwiGLUTests {
    /// The kernel of each gated activation against its Double twin.
    @Test(arguments: [GatedActivation.silu, .geluTanh], [1, 7, 33, 100_003])
    func matchesReference(activation: GatedActivation, count: Int) {
        let reference: (forward: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void,
                        backward: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void) =
            activation == .silu ? (SwiGLU.Reference.forward, SwiGLU.Reference.backward) : (GeGLU.Reference.forward, GeGLU.Reference.backward)
        var random = KernelRandom(seed: UInt64(count))
        var gate = random.floats(count, -8, 8)
        if count > 4 { gate[0] = -100; gate[1] = 100; gate[2] = -90; gate[3] = 0 }   // saturated ends stay finite
        let up = random.floats(count, -2, 2), dout = random.floats(count)
        var out = [Float](repeating: .nan, count: count), outRef = out
        activation.forward(out: &out, gate: gate, up: up, count: count)
        reference.forward(&outRef, gate, up, count)
        expectClose(out, outRef, tolerance: 1e-5, "\(activation) out")
        #expect(out.allSatisfy { $0.isFinite })
        let dgate0 = random.floats(count), dup0 = random.floats(count)
        var dgate = dgate0, dup = dup0, dgateRef = dgate0, dupRef = dup0
        activation.backward(dgate: &dgate, dup: &dup, dout: dout, gate: gate, up: up, count: count)
        reference.backward(&dgateRef, &dupRef, dout, gate, up, count)
        expectClose(dgate, dgateRef, tolerance: 1e-5, "\(activation) dgate")
        expectClose(dup, dupRef, tolerance: 1e-5, "\(activation) dup")
    }

    @Test func backwardMatchesFiniteDifferences() {
        let count = 24
        var random = KernelRandom(seed: 3)
        let gate = random.floats(count, -5, 5), up = random.floats(count, -2, 2), g = random.floats(count)
        var dgate = [Float](repeating: 0, count: count), dup = dgate
        SwiGLU.backward(dgate: &dgate, dup: &dup, dout: g, gate: gate, up: up, count: count)
        func weighted(_ gate: [Double], _ up: [Double]) -> Double {
            var total = 0.0
            for i in 0..<count { total += Double(g[i]) * gate[i] / (1 + Foundation.exp(-gate[i])) * up[i] }
            return total
        }
        let gd = gate.map(Double.init), ud = up.map(Double.init)
        expectGradientMatches(dgate, finiteDifferenceGradient(at: gd) { weighted($0, ud) }, "SwiGLU dgate")
        expectGradientMatches(dup, finiteDifferenceGradient(at: ud) { weighted(gd, $0) }, "SwiGLU dup")
    }

    @Test func fastExpIsAccurate() {
        // VectorMath.exp against the libm exp in Double over the whole useful range.
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            let relative = abs(Double(VectorMath.exp(x)) - Foundation.exp(Double(x))) / Foundation.exp(Double(x))
            worst = max(worst, relative)
            x += 0.0137
        }
        #expect(worst < 3e-7, "max relative error \(worst)")
        #expect(VectorMath.exp(0) == 1)
        #expect(VectorMath.exp(-1000) >= 0 && VectorMath.exp(-1000) < 1e-37)
    }
}

@Suite struct KernelEmbeddingTests {
    @Test func forwardAndBackwardMatchReference() {
        let V = 11, C = 5, N = 9
        var random = KernelRandom(seed: 8)
        let table = random.floats(V * C)
        let ids: [Int32] = [3, 0, 10, 3, 3, 7, 0, 1, 10]   // repeats must accumulate
        var out = [Float](repeating: .nan, count: N * C), outRef = out
        Embedding.forward(out: &out, table: table, ids: ids, rows: N, dim: C)
        Embedding.Reference.forward(out: &outRef, table: table, ids: ids, rows: N, dim: C)
        #expect(out == outRef)
        #expect(Array(out[(3 * C)..<(4 * C)]) == Array(table[(3 * C)..<(4 * C)]))
        let dout = random.floats(N * C), dtable0 = random.floats(V * C)
        var dtable = dtable0, dtableRef = dtable0
        Embedding.backward(dtable: &dtable, dout: dout, ids: ids, rows: N, dim: C)
        Embedding.Reference.backward(dtable: &dtableRef, dout: dout, ids: ids, rows: N, dim: C)
        #expect(dtable == dtableRef)
        // Row 3 got three contributions, row 2 none.
        #expect(Array(dtable[(2 * C)..<(3 * C)]) == Array(dtable0[(2 * C)..<(3 * C)]))
        let expected = (0..<C).map { dtable0[3 * C + $0] + dout[0 * C + $0] + dout[3 * C + $0] + dout[4 * C + $0] }
        expectClose(Array(dtable[(3 * C)..<(4 * C)]), expected, tolerance: 1e-6, "row 3 scatter")
    }
}
