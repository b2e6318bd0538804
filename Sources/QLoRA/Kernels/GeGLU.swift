import Foundation

// N = rows (B*T), F = intermediate size; `count` = N * F.

/// The Gemma MLP gate: out = gelu_tanh(gate) * up, with torch's tanh approximation
/// gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), op by op as torch's CPU kernel.
public enum GeGLU {
    static let minimumPerChunk = 32_768
    /// sqrt(2) * (2 / sqrt(pi)) * 0.5 = sqrt(2 / pi), as torch spells it (M_SQRT2 * M_2_SQRTPI * 0.5).
    static let beta = Float(2.0.squareRoot() * (2 / Double.pi.squareRoot()) * 0.5)
    static let kappa: Float = 0.044715

    /// out (N, F) = gelu_tanh(gate) * up. out may alias gate or up.
    public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, minimumPerChunk: minimumPerChunk) { range in
            for i in range {
                let g = gate[i]
                let inner = beta * (g + kappa * (g * g * g))
                out[i] = 0.5 * g * (1 + Foundation.tanh(inner)) * up[i]
            }
        }
    }

    /// dgate (N, F) += dout * up * gelu_tanh'(gate), dup (N, F) += dout * gelu_tanh(gate) (torch's
    /// GeluBackward with approximate="tanh").
    public static func backward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, minimumPerChunk: minimumPerChunk) { range in
            for i in range {
                let g = gate[i], d = dout[i]
                let square = g * g
                let t = Foundation.tanh(beta * (g + kappa * square * g))
                let left = 0.5 * g, right = 1 + t
                let derivative = 0.5 * right + left * (1 - t * t) * beta * (1 + 3 * kappa * square)
                dgate[i] += d * up[i] * derivative
                dup[i] += d * left * right
            }
        }
    }

    /// Naive twin in Double.
    public enum Reference {
        static func gelu(_ g: Double) -> (value: Double, derivative: Double) {
            let b = (2 / Double.pi).squareRoot(), k = 0.044715
            let t = Foundation.tanh(b * (g + k * g * g * g))
            return (0.5 * g * (1 + t), 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * b * (1 + 3 * k * g * g))
        }

        public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
            for i in 0..<count { out[i] = Float(gelu(Double(gate[i])).value * Double(up[i])) }
        }

        public static func backward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                                    dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
            for i in 0..<count {
                let (value, derivative) = gelu(Double(gate[i]))
                dgate[i] += Float(Double(dout[i]) * Double(up[i]) * derivative)
                dup[i] += Float(Double(dout[i]) * value)
            }
        }
    }
}

extension GatedActivation {
    /// out = act(gate) * up with this activation's kernel.
    func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        switch self {
        case .silu: SwiGLU.forward(out: out, gate: gate, up: up, count: count)
        case .geluTanh: GeGLU.forward(out: out, gate: gate, up: up, count: count)
        }
    }

    func backward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                  dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        switch self {
        case .silu: SwiGLU.backward(dgate: dgate, dup: dup, dout: dout, gate: gate, up: up, count: count)
        case .geluTanh: GeGLU.backward(dgate: dgate, dup: dup, dout: dout, gate: gate, up: up, count: count)
        }
    }
}
