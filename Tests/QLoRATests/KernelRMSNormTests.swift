import Foundation
import Testing
@testable import QLoRA

@Suite struct KernelRMSNormTests {
    static let shapes: [(rows: Int, dim: Int)] = [(1, 1), (3, 7), (5, 96), (17, 33), (400, 130)]

    @Test(arguments: shapes.indices)
    func forwardMatchesReference(shapeIndex: Int) {
        let (N, C) = Self.shapes[shapeIndex]
        var random = KernelRandom(seed: 11 + UInt64(shapeIndex))
        let x = random.floats(N * C, -3, 3), weight = random.floats(C, 0.5, 1.5)
        var out = [Float](repeating: .nan, count: N * C), rstd = [Float](repeating: .nan, count: N)
        var outRef = out, rstdRef = rstd
        RMSNorm.forward(out: &out, rstd: &rstd, x: x, weight: weight, rows: N, dim: C, eps: 1e-5)
        RMSNorm.Reference.forward(out: &outRef, rstd: &rstdRef, x: x, weight: weight, rows: N, dim: C, eps: 1e-5)
        expectClose(out, outRef, tolerance: 2e-6, "out \(N)x\(C)")
        expectClose(rstd, rstdRef, tolerance: 2e-6 * (rstdRef.max() ?? 1), "rstd \(N)x\(C)")
    }

    @Test(arguments: shapes.indices)
    func backwardMatchesReference(shapeIndex: Int) {
        let (N, C) = Self.shapes[shapeIndex]
        var random = KernelRandom(seed: 23 + UInt64(shapeIndex))
        let x = random.floats(N * C, -3, 3), weight = random.floats(C, 0.5, 1.5), dy = random.floats(N * C)
        var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        RMSNorm.Reference.forward(out: &out, rstd: &rstd, x: x, weight: weight, rows: N, dim: C, eps: 1e-5)
        // Backward accumulates: start from non-zero grads.
        let dx0 = random.floats(N * C), dw0 = random.floats(C)
        var dx = dx0, dw = dw0, dxRef = dx0, dwRef = dw0
        RMSNorm.backward(dx: &dx, dWeight: &dw, dy: dy, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        RMSNorm.Reference.backward(dx: &dxRef, dWeight: &dwRef, dy: dy, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        expectClose(dx, dxRef, tolerance: 1e-5, "dx \(N)x\(C)")
        expectClose(dw, dwRef, tolerance: 1e-6 * Float(N) + 1e-5, "dWeight \(N)x\(C)")
        // Frozen norm: no weight gradient, same dx.
        var dxFrozen = dx0
        RMSNorm.backward(dx: &dxFrozen, dWeight: nil, dy: dy, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        #expect(dxFrozen == dx)
    }

    /// The per-head q/k norms' backward writes dx over dy: bit-identical to `backward` into a zeroed dx.
    @Test(arguments: shapes.indices)
    func inPlaceBackwardEqualsBackward(shapeIndex: Int) {
        let (N, C) = Self.shapes[shapeIndex]
        var random = KernelRandom(seed: 31 + UInt64(shapeIndex))
        let x = random.floats(N * C, -3, 3), weight = random.floats(C, 0.5, 1.5), dy = random.floats(N * C)
        var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        RMSNorm.forward(out: &out, rstd: &rstd, x: x, weight: weight, rows: N, dim: C, eps: 1e-6)
        let dw0 = random.floats(C)
        var dx = [Float](repeating: 0, count: N * C), dw = dw0
        RMSNorm.backward(dx: &dx, dWeight: &dw, dy: dy, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        var inPlace = dy, dwInPlace = dw0
        RMSNorm.backwardInPlace(dy: &inPlace, dWeight: &dwInPlace, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        #expect(inPlace == dx, "dx \(N)x\(C)")
        #expect(dwInPlace == dw, "dWeight \(N)x\(C)")
        var frozen = dy
        RMSNorm.backwardInPlace(dy: &frozen, dWeight: nil, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        #expect(frozen == dx)
    }

    /// Double forward for the finite differences: Σ g * rmsnorm(x, w).
    static func weightedOutput(x: [Double], weight: [Double], g: [Float], rows: Int, dim: Int, eps: Double) -> Double {
        var total = 0.0
        for n in 0..<rows {
            var squares = 0.0
            for c in 0..<dim { squares += x[n * dim + c] * x[n * dim + c] }
            let r = 1 / (squares / Double(dim) + eps).squareRoot()
            for c in 0..<dim { total += Double(g[n * dim + c]) * weight[c] * x[n * dim + c] * r }
        }
        return total
    }

    /// Gemma's (1 + w): with offset 1 the kernels equal the plain ones run on the weight plus 1 (forward and
    /// input gradient), and the weight gradient is the same either way.
    @Test func offsetScalesByOnePlusWeight() {
        let (N, C) = (9, 40)
        var random = KernelRandom(seed: 77)
        let x = random.floats(N * C, -3, 3), weight = random.floats(C, -0.5, 0.5), dy = random.floats(N * C)
        let shifted = weight.map { $0 + 1 }
        var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        var outRef = out, rstdRef = rstd, outDouble = out, rstdDouble = rstd
        RMSNorm.forward(out: &out, rstd: &rstd, x: x, weight: weight, offset: 1, rows: N, dim: C, eps: 1e-6)
        RMSNorm.forward(out: &outRef, rstd: &rstdRef, x: x, weight: shifted, rows: N, dim: C, eps: 1e-6)
        RMSNorm.Reference.forward(out: &outDouble, rstd: &rstdDouble, x: x, weight: weight, offset: 1, rows: N, dim: C, eps: 1e-6)
        #expect(out == outRef && rstd == rstdRef)
        expectClose(out, outDouble, tolerance: 2e-6, "offset forward vs Double")
        var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: C)
        var dxRef = dx, dwRef = dw, dxDouble = dx, dwDouble = dw
        RMSNorm.backward(dx: &dx, dWeight: &dw, dy: dy, x: x, weight: weight, offset: 1, rstd: rstd, rows: N, dim: C)
        RMSNorm.backward(dx: &dxRef, dWeight: &dwRef, dy: dy, x: x, weight: shifted, rstd: rstd, rows: N, dim: C)
        RMSNorm.Reference.backward(dx: &dxDouble, dWeight: &dwDouble, dy: dy, x: x, weight: weight, offset: 1, rstd: rstd, rows: N, dim: C)
        expectClose(dx, dxRef, tolerance: 1e-6, "offset dx")
        expectClose(dx, dxDouble, tolerance: 1e-5, "offset dx vs Double")
        #expect(dw == dwRef)
        expectClose(dw, dwDouble, tolerance: 1e-5, "offset dWeight vs Double")
        var inPlace = dy, dwInPlace = [Float](repeating: 0, count: C)
        RMSNorm.backwardInPlace(dy: &inPlace, dWeight: &dwInPlace, x: x, weight: weight, offset: 1, rstd: rstd, rows: N, dim: C)
        #expect(inPlace == dx && dwInPlace == dw)
    }

    @Test func backwardMatchesFiniteDifferences() {
        let N = 3, C = 10
        var random = KernelRandom(seed: 5)
        let x = random.floats(N * C, -2, 2), weight = random.floats(C, 0.5, 1.5), g = random.floats(N * C)
        var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        RMSNorm.forward(out: &out, rstd: &rstd, x: x, weight: weight, rows: N, dim: C, eps: 1e-5)
        var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: C)
        RMSNorm.backward(dx: &dx, dWeight: &dw, dy: g, x: x, weight: weight, rstd: rstd, rows: N, dim: C)
        let xd = x.map(Double.init), wd = weight.map(Double.init)
        let numericX = finiteDifferenceGradient(at: xd) { Self.weightedOutput(x: $0, weight: wd, g: g, rows: N, dim: C, eps: 1e-5) }
        let numericW = finiteDifferenceGradient(at: wd) { Self.weightedOutput(x: xd, weight: $0, g: g, rows: N, dim: C, eps: 1e-5) }
        expectGradientMatches(dx, numericX, "RMSNorm dx")
        expectGradientMatches(dw, numericW, "RMSNorm dWeight")
    }

    @Test func forwardIsHuggingFaceFormula() {
        // One row by hand: x = (3, 4), w = (1, 2), eps = 0: mean(x^2) = 12.5, rstd = 1/sqrt(12.5).
        var out = [Float](repeating: 0, count: 2), rstd: [Float] = [0]
        RMSNorm.forward(out: &out, rstd: &rstd, x: [3, 4], weight: [1, 2], rows: 1, dim: 2, eps: 0)
        let r = 1 / Float(12.5).squareRoot()
        #expect(abs(rstd[0] - r) <= 1e-7)
        #expect(abs(out[0] - 3 * r) <= 1e-6 && abs(out[1] - 2 * (4 * r)) <= 1e-6, "\(out)")
    }
}
