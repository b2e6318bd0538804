/// The precision of the frozen base weights as the GEMM sees them. The Debian OpenBLAS has no bf16
/// GEMM, so a bf16 tile holds bf16-rounded values in fp32 layout and runs through sgemm: the values
/// (and so the results) are those of a bf16 weight, the arithmetic is fp32.
public enum ComputePrecision: String, Sendable, CaseIterable {
    case bf16, fp16, fp32

    /// Rounds a buffer in place to this precision (nothing to do for fp32).
    @inline(__always)
    public func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .fp32: return
        case .bf16:
            let bits = UnsafeMutableRawPointer(values).assumingMemoryBound(to: UInt32.self)
            for i in 0..<count {
                let b = bits[i]
                // Round to nearest-even on the upper 16 bits (NaN is not expected in weights).
                bits[i] = (b &+ 0x7fff &+ ((b >> 16) & 1)) & 0xffff_0000
            }
        case .fp16:
            for i in 0..<count { values[i] = HalfFloatRounding.roundToHalf(values[i]) }
        }
    }
}

import SafeTensors

enum HalfFloatRounding {
    @inline(__always)
    static func roundToHalf(_ x: Float) -> Float { HalfFloat.toFloat(HalfFloat.fromFloat(x)) }
}
