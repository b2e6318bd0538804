import Foundation

// N = rows (B*T), D = head dim, R = rotary dim (D, or Phi-3's partial D * partial_rotary_factor),
// P = maxPositions, heads = heads per row (H for q, KV for k).
// Layout: Hugging Face "rotate_half" over the first R dims of a head: dims i and i + R/2 form a rotated
// pair; dims R..<D pass through.

/// RoPE frequency scaling as in a Hugging Face config's `rope_scaling` / `rope_parameters`.
/// Types: "default" (no scaling), "linear" (inv_freq / factor), "llama3" (factor, low/high freq factors,
/// original max positions), "longrope" (Phi-3: per-frequency short / long factors and a cos/sin factor).
public struct RoPEScaling: Sendable, Equatable {
    public var type: String
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositions: Int
    /// LongRoPE: inv_freq is divided per frequency by these (R/2 each): `short_factor` while a call's
    /// positions stay within `originalMaxPositions`, `long_factor` beyond.
    public var shortFactor: [Double]
    public var longFactor: [Double]
    /// LongRoPE: cos and sin are multiplied by this (`attention_factor`, or transformers' default from the
    /// context extension factor).
    public var attentionFactor: Double

    public init(type: String, factor: Double = 1, lowFreqFactor: Double = 1, highFreqFactor: Double = 4,
                originalMaxPositions: Int = 8192, shortFactor: [Double] = [], longFactor: [Double] = [],
                attentionFactor: Double = 1) {
        self.type = type
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositions = originalMaxPositions
        self.shortFactor = shortFactor
        self.longFactor = longFactor
        self.attentionFactor = attentionFactor
    }

    /// The rope types `RoPETable` implements; the config loader should reject others with its own error.
    public static let supportedTypes: Set<String> = ["default", "linear", "llama3", "longrope"]

    /// transformers' default LongRoPE attention factor: sqrt(1 + ln(factor) / ln(original)), 1 without extension.
    public static func longRoPEAttentionFactor(factor: Double, originalMaxPositions: Int) -> Double {
        factor <= 1 ? 1 : (1 + Foundation.log(factor) / Foundation.log(Double(originalMaxPositions))).squareRoot()
    }

    /// transformers' `longrope_frequency_update`: a forward whose largest position + 1 (`sequenceLength`)
    /// exceeds original_max_position_embeddings rotates every position with the long factors. Equal sets
    /// (a GGUF's rope_freqs) never switch: no second table, no re-run.
    public func usesLongFactors(sequenceLength: Int) -> Bool {
        type == "longrope" && sequenceLength > originalMaxPositions && longFactor != shortFactor
    }

    /// Whether some sequence length switches to the long factors.
    public var hasLongFactors: Bool { type == "longrope" && longFactor != shortFactor }
}

/// cos / sin tables for every position, computed the way transformers does in float32, and the rotation.
public struct RoPETable: Sendable {
    public let headDim: Int
    /// Leading dims of each head that rotate (R); the other D - R pass through.
    public let rotaryDim: Int
    public let maxPositions: Int
    /// (R/2) inverse frequencies after scaling, float32 as transformers computes them.
    public let inverseFrequencies: [Float]
    /// (P, R/2) cos(position * inv_freq) [* LongRoPE's attention factor], the fp32 angle as in
    /// transformers (fp32 product).
    public let cos: [Float]
    /// (P, R/2)
    public let sin: [Float]

    /// Bytes of the tables: cos and sin (P, R/2) and the inverse frequencies (R/2), fp32.
    public static func bytes(rotaryDim: Int, maxPositions: Int) -> Int { (2 * maxPositions * (rotaryDim / 2) + rotaryDim / 2) * 4 }
    public var bytes: Int { Self.bytes(rotaryDim: rotaryDim, maxPositions: maxPositions) }

    /// `scaling` nil or type "default" = plain RoPE. The type must be in `RoPEScaling.supportedTypes`
    /// (checked by the config loader; an unknown type here is a programming error). `rotaryDim` nil = D.
    /// `longFactors`: LongRoPE's long-context set (see `RoPEScaling.usesLongFactors`).
    public init(headDim: Int, rotaryDim: Int? = nil, maxPositions: Int, theta: Double, scaling: RoPEScaling?, longFactors: Bool = false) {
        let rotaryDim = rotaryDim ?? headDim
        precondition(rotaryDim > 0 && rotaryDim % 2 == 0 && rotaryDim <= headDim, "RoPE rotary dim must be even and at most head_dim, got \(rotaryDim) of \(headDim)")
        self.headDim = headDim
        self.rotaryDim = rotaryDim
        self.maxPositions = maxPositions
        let inverse = RoPETable.inverseFrequencies(headDim: rotaryDim, theta: theta, scaling: scaling, longFactors: longFactors)
        inverseFrequencies = inverse
        // torch: emb.cos() * attention_scaling, the Python float rounded to fp32, one fp32 product.
        let attention = scaling?.type == "longrope" ? Float(scaling!.attentionFactor) : 1
        let half = rotaryDim / 2
        var cosTable = [Float](repeating: 0, count: maxPositions * half)
        var sinTable = [Float](repeating: 0, count: maxPositions * half)
        for p in 0..<maxPositions {
            for i in 0..<half {
                // transformers: (inv_freq @ position_ids) in fp32 (K = 1: one rounded product), then cos/sin in fp32.
                let angle = Float(p) * inverse[i]
                cosTable[p * half + i] = Float(Foundation.cos(Double(angle))) * attention
                sinTable[p * half + i] = Float(Foundation.sin(Double(angle))) * attention
            }
        }
        cos = cosTable
        sin = sinTable
    }

    /// transformers' `_compute_default_rope_parameters` (+ `_compute_linear_scaling_rope_parameters`,
    /// `_compute_llama3_parameters`), op by op in float32 as torch does:
    /// inv_freq = 1 / theta^(float(arange(0, D, 2)) / D). torch's float32 pow is Sleef (<= 1 ulp); here
    /// the correctly rounded pow, so an element may differ by 1 ulp. `headDim` is the rotary dim R.
    public static func inverseFrequencies(headDim: Int, theta: Double, scaling: RoPEScaling?, longFactors: Bool = false) -> [Float] {
        let half = headDim / 2
        let base = Float(theta)
        // base ** (arange(0, D, 2) / D), fp32.
        let powers = (0..<half).map { i -> Float in
            let exponent = Float(2 * i) / Float(headDim)
            return Float(Foundation.pow(Double(base), Double(exponent)))
        }
        var inverse = powers.map { 1 / $0 }
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
        case "longrope":
            // `_compute_longrope_parameters`: 1.0 / (ext_factors * base**inv_freq_shape), fp32 tensors.
            let factors = longFactors ? scaling.longFactor : scaling.shortFactor
            precondition(factors.count == half, "longrope factors: \(factors.count) for \(half) frequencies")
            inverse = powers.indices.map { i in 1 / (Float(factors[i]) * powers[i]) }
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
        let D = headDim, half = rotaryDim / 2
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
            let half = inverseFrequencies.count
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
