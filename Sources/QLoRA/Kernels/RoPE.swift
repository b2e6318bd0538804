import Foundation

// N = rows (B*T), D = head dim, P = maxPositions, heads = heads per row (H for q, KV for k).
// Layout: Hugging Face Llama "rotate_half": within a head, dims i and i + D/2 form a rotated pair.

/// RoPE frequency scaling as in a Hugging Face config's `rope_scaling` / `rope_parameters`.
/// Types: "default" (no scaling), "linear" (inv_freq / factor), "llama3" (all fields).
public struct RoPEScaling: Sendable, Equatable {
    public var type: String
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositions: Int

    public init(type: String, factor: Double = 1, lowFreqFactor: Double = 1, highFreqFactor: Double = 4,
                originalMaxPositions: Int = 8192) {
        self.type = type
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositions = originalMaxPositions
    }

    /// The rope types `RoPETable` implements; the config loader should reject others with its own error.
    public static let supportedTypes: Set<String> = ["default", "linear", "llama3"]
}

/// cos / sin tables for every position, computed the way transformers does in float32, and the rotation.
public struct RoPETable: Sendable {
    public let headDim: Int
    public let maxPositions: Int
    /// (D/2) inverse frequencies after scaling, float32 as transformers computes them.
    public let inverseFrequencies: [Float]
    /// (P, D/2) cos(position * inv_freq), the fp32 angle as in transformers (fp32 product).
    public let cos: [Float]
    /// (P, D/2)
    public let sin: [Float]

    /// Bytes of the tables: cos and sin (P, D/2) and the inverse frequencies (D/2), fp32.
    public static func bytes(headDim: Int, maxPositions: Int) -> Int { (2 * maxPositions * (headDim / 2) + headDim / 2) * 4 }
    public var bytes: Int { Self.bytes(headDim: headDim, maxPositions: maxPositions) }

    /// `scaling` nil or type "default" = plain RoPE. The type must be in `RoPEScaling.supportedTypes`
    /// (checked by the config loader; an unknown type here is a programming error).
    public init(headDim: Int, maxPositions: Int, theta: Double, scaling: RoPEScaling?) {
        precondition(headDim > 0 && headDim % 2 == 0, "RoPE head dim must be even, got \(headDim)")
        self.headDim = headDim
        self.maxPositions = maxPositions
        let inverse = RoPETable.inverseFrequencies(headDim: headDim, theta: theta, scaling: scaling)
        inverseFrequencies = inverse
        let half = headDim / 2
        var cosTable = [Float](repeating: 0, count: maxPositions * half)
        var sinTable = [Float](repeating: 0, count: maxPositions * half)
        for p in 0..<maxPositions {
            for i in 0..<half {
                // transformers: (inv_freq @ position_ids) in fp32 (K = 1: one rounded product), then cos/sin in fp32.
                let angle = Float(p) * inverse[i]
                cosTable[p * half + i] = Float(Foundation.cos(Double(angle)))
                sinTable[p * half + i] = Float(Foundation.sin(Double(angle)))
            }
        }
        cos = cosTable
        sin = sinTable
    }

    /// transformers' `_compute_default_rope_parameters` (+ `_compute_linear_scaling_rope_parameters`,
    /// `_compute_llama3_parameters`), op by op in float32 as torch does:
    /// inv_freq = 1 / theta^(float(arange(0, D, 2)) / D). torch's float32 pow is Sleef (<= 1 ulp); here
    /// the correctly rounded pow, so an element may differ by 1 ulp.
    public static func inverseFrequencies(headDim: Int, theta: Double, scaling: RoPEScaling?) -> [Float] {
        let half = headDim / 2
        let base = Float(theta)
        var inverse = (0..<half).map { i -> Float in
            let exponent = Float(2 * i) / Float(headDim)
            let power = Float(Foundation.pow(Double(base), Double(exponent)))
            return 1 / power
        }
        guard let scaling, scaling.type != "default" else { return inverse }
        switch scaling.type {
        case "linear":
            let factor = Float(scaling.factor)
            inverse = inverse.map { $0 / factor }
        case "llama3":
            // Python scalars meet fp32 tensors: each scalar is rounded to fp32, each op rounds to fp32.
            // `s / tensor` is torch's `tensor.reciprocal() * s`.
            let factor = Float(scaling.factor)
            let lowFreqFactor = Float(scaling.lowFreqFactor)
            let oldContext = Float(scaling.originalMaxPositions)
            let lowFreqWavelength = Float(Double(scaling.originalMaxPositions) / scaling.lowFreqFactor)
            let highFreqWavelength = Float(Double(scaling.originalMaxPositions) / scaling.highFreqFactor)
            let twoPi = Float(2 * Double.pi)
            let highMinusLow = Float(scaling.highFreqFactor - scaling.lowFreqFactor)
            inverse = inverse.map { frequency -> Float in
                let wavelength = (1 / frequency) * twoPi
                let scaled = wavelength > lowFreqWavelength ? frequency / factor : frequency
                let smooth = ((1 / wavelength) * oldContext - lowFreqFactor) / highMinusLow
                let smoothed = (1 - smooth) * scaled / factor + smooth * scaled
                let isMedium = !(wavelength < highFreqWavelength) && !(wavelength > lowFreqWavelength)
                return isMedium ? smoothed : scaled
            }
        default:
            preconditionFailure("unsupported rope type \(scaling.type); supported: \(RoPEScaling.supportedTypes.sorted())")
        }
        return inverse
    }

    /// x (N, heads, D), rotated in place: x * cos + rotate_half(x) * sin with rotate_half(x) = (-x2, x1),
    /// i.e. x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (each product rounded, then the sum, as torch).
    /// positions (N), each in 0..<maxPositions (validated by the caller).
    public func apply(_ x: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>, rows: Int, heads: Int) {
        rotate(x, positions: positions, rows: rows, heads: heads, inverse: false)
    }

    /// dx (N, heads, D), in place: the transpose of `apply` (rotation by -angle):
    /// dx1' = dx1 cos + dx2 sin, dx2' = dx2 cos - dx1 sin.
    public func applyBackward(_ dx: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>, rows: Int, heads: Int) {
        rotate(dx, positions: positions, rows: rows, heads: heads, inverse: true)
    }

    private func rotate(_ x: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>, rows: Int, heads: Int, inverse: Bool) {
        let D = headDim, half = D / 2
        cos.withUnsafeBufferPointer { cosBuffer in
            sin.withUnsafeBufferPointer { sinBuffer in
                let cosBase = cosBuffer.baseAddress!, sinBase = sinBuffer.baseAddress!
                for n in 0..<rows {
                    let p = Int(positions[n])
                    let c = cosBase + p * half
                    let s = sinBase + p * half
                    for h in 0..<heads {
                        let x1 = x + (n * heads + h) * D, x2 = x1 + half
                        if inverse {
                            for i in 0..<half {
                                let a = x1[i], b = x2[i]
                                x1[i] = a * c[i] + b * s[i]
                                x2[i] = b * c[i] - a * s[i]
                            }
                        } else {
                            for i in 0..<half {
                                let a = x1[i], b = x2[i]
                                x1[i] = a * c[i] - b * s[i]
                                x2[i] = b * c[i] + a * s[i]
                            }
                        }
                    }
                }
            }
        }
    }

    /// Naive twin: the angle from the table's fp32 inverse frequencies (fp32 product, as transformers),
    /// cos / sin and the rotation in Double.
    public enum Reference {
        public static func apply(_ x: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>, rows: Int, heads: Int,
                                 headDim: Int, inverseFrequencies: [Float], inverse: Bool = false) {
            let half = headDim / 2
            for n in 0..<rows {
                for h in 0..<heads {
                    for i in 0..<half {
                        let angle = Double(Float(positions[n]) * inverseFrequencies[i])
                        let c = Foundation.cos(angle), s = inverse ? -Foundation.sin(angle) : Foundation.sin(angle)
                        let j1 = (n * heads + h) * headDim + i, j2 = j1 + half
                        let a = Double(x[j1]), b = Double(x[j2])
                        x[j1] = Float(a * c - b * s)
                        x[j2] = Float(b * c + a * s)
                    }
                }
            }
        }

        /// transformers' inverse frequencies evaluated in Double (no fp32 rounding between ops).
        public static func inverseFrequencies(headDim: Int, theta: Double, scaling: RoPEScaling?) -> [Double] {
            let half = headDim / 2
            var inverse = (0..<half).map { 1 / Foundation.pow(theta, Double(2 * $0) / Double(headDim)) }
            guard let scaling else { return inverse }
            switch scaling.type {
            case "linear":
                inverse = inverse.map { $0 / scaling.factor }
            case "llama3":
                let old = Double(scaling.originalMaxPositions)
                let lowWavelength = old / scaling.lowFreqFactor, highWavelength = old / scaling.highFreqFactor
                inverse = inverse.map { f in
                    let wavelength = 2 * Double.pi / f
                    if wavelength < highWavelength { return f }
                    if wavelength > lowWavelength { return f / scaling.factor }
                    let smooth = (old / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor)
                    return (1 - smooth) * f / scaling.factor + smooth * f
                }
            default:
                break
            }
            return inverse
        }
    }
}
