import Testing
@testable import QLoRA

/// Kernel tests draw their inputs from the library's seeded generator: same seed, same inputs.
typealias KernelRandom = SeededGenerator

extension SeededGenerator {
    mutating func floats(_ count: Int, _ low: Float = -1, _ high: Float = 1) -> [Float] {
        (0..<count).map { _ in uniform(low, high) }
    }

    mutating func integer(below bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Largest |a - b| and where, for failure messages.
func maxAbsDifference(_ a: [Float], _ b: [Float]) -> (value: Float, index: Int) {
    precondition(a.count == b.count)
    var worst: Float = 0, index = -1
    for i in a.indices where !(abs(a[i] - b[i]) <= worst) { worst = abs(a[i] - b[i]); index = i }
    return (worst, index)
}

func maxAbsDifference(_ a: [Double], _ b: [Double]) -> (value: Double, index: Int) {
    precondition(a.count == b.count)
    var worst = 0.0, index = -1
    for i in a.indices where !(abs(a[i] - b[i]) <= worst) { worst = abs(a[i] - b[i]); index = i }
    return (worst, index)
}

/// Expects a and b equal within `tolerance` (absolute) and prints the worst element otherwise.
func expectClose(_ a: [Float], _ b: [Float], tolerance: Float, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    let (worst, index) = maxAbsDifference(a, b)
    #expect(worst <= tolerance,
            "\(what): max abs diff \(worst) at \(index) (\(index >= 0 ? "\(a[index]) vs \(b[index])" : "")), tolerance \(tolerance)",
            sourceLocation: sourceLocation)
}

/// Central finite differences of a Double function at `point`, one coordinate at a time.
func finiteDifferenceGradient(at point: [Double], step: Double = 1e-5, _ f: ([Double]) -> Double) -> [Double] {
    var x = point
    return point.indices.map { i in
        let saved = x[i]
        x[i] = saved + step
        let plus = f(x)
        x[i] = saved - step
        let minus = f(x)
        x[i] = saved
        return (plus - minus) / (2 * step)
    }
}

/// Relative tolerance used by every finite-difference check: |analytic - fd| <= 1e-4 * max(1, max |fd|).
/// (Analytic gradients come from fp32 kernels, about 1e-7 relative; central differences in Double with
/// step 1e-5 are accurate to about 1e-9.)
let finiteDifferenceRelativeTolerance = 1e-4

func expectGradientMatches(_ analytic: [Float], _ numeric: [Double], _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    let scale = max(1, numeric.map(abs).max() ?? 0)
    let (worst, index) = maxAbsDifference(analytic.map(Double.init), numeric)
    #expect(worst <= finiteDifferenceRelativeTolerance * scale,
            "\(what): analytic vs finite difference max abs diff \(worst) at \(index) (\(index >= 0 ? "\(analytic[index]) vs \(numeric[index])" : "")), scale \(scale)",
            sourceLocation: sourceLocation)
}
