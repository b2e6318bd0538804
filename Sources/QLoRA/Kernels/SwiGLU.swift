import Foundation

// N = rows (B*T), F = intermediate size; `count` = N * F.

/// The Llama MLP gate: out = silu(gate) * up, silu(g) = g * sigmoid(g) = g / (1 + e^-g).
public enum SwiGLU {
    /// Elements per thread below which splitting is not worth it.
    static let minimumPerChunk = 32_768

    /// out (N, F) = silu(gate) * up. gate, up (N, F). out may alias gate or up.
    public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, minimumPerChunk: minimumPerChunk) { range in
            for i in range {
                let g = gate[i]
                out[i] = g / (1 + VectorMath.exp(-g)) * up[i]
            }
        }
    }

    /// dgate (N, F) += dout * up * silu'(gate), dup (N, F) += dout * silu(gate);
    /// silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g). dout, gate, up (N, F).
    public static func backward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, minimumPerChunk: minimumPerChunk) { range in
            for i in range {
                let g = gate[i], d = dout[i]
                let s = 1 / (1 + VectorMath.exp(-g))
                dgate[i] += d * up[i] * (s * (1 + g * (1 - s)))
                dup[i] += d * g * s
            }
        }
    }

    /// Naive twin in Double with the libm exp.
    public enum Reference {
        public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
            for i in 0..<count {
                let g = Double(gate[i])
                out[i] = Float(g / (1 + Foundation.exp(-g)) * Double(up[i]))
            }
        }

        public static func backward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                                    dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
            for i in 0..<count {
                let g = Double(gate[i]), d = Double(dout[i])
                let s = 1 / (1 + Foundation.exp(-g))
                dgate[i] += Float(d * Double(up[i]) * s * (1 + g * (1 - s)))
                dup[i] += Float(d * g * s)
            }
        }
    }
}
