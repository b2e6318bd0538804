/// IEEE half and bfloat16 conversions by bit manipulation (no Float16 arithmetic, which needs a
/// target CPU flag on x86 to avoid library calls). Float -> 16-bit rounds to nearest-even, as torch does.
public enum HalfFloat {
    /// fp16 bits -> Float (exact).
    @inline(__always)
    public static func toFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int((h >> 10) & 0x1f)
        let mantissa = UInt32(h & 0x3ff)
        if exponent == 0 {
            // Zero or subnormal: mantissa * 2^-24, exact in Float.
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: magnitude.bitPattern | sign)
        }
        if exponent == 31 {
            return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
    }

    /// Float -> fp16 bits, round to nearest-even, overflow to infinity, NaN kept quiet.
    @inline(__always)
    public static func fromFloat(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let magnitude = bits & 0x7fff_ffff
        if magnitude > 0x7f80_0000 { return sign | 0x7e00 }          // NaN
        if magnitude >= 0x4780_0000 {                                  // >= 65536 after rounding: inf
            // Values in [65520, 65536) round up to infinity; anything larger is infinity.
            return sign | 0x7c00
        }
        if magnitude >= 0x3880_0000 {                                  // normal fp16 range (>= 2^-14)
            let rounded = magnitude &+ 0x0fff &+ ((magnitude >> 13) & 1)
            let h = (rounded &- 0x3800_0000) >> 13
            return sign | UInt16(min(h, 0x7c00))
        }
        // Subnormal or zero: scale so the fp16 subnormal unit (2^-24) is 1, round to nearest-even.
        let value = Float(bitPattern: magnitude) * 0x1p24
        let rounded = value.rounded(.toNearestOrEven)
        return sign | UInt16(rounded)
    }

    /// bf16 bits -> Float (exact).
    @inline(__always)
    public static func bfloat16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// Float -> bf16 bits, round to nearest-even (NaN stays NaN).
    @inline(__always)
    public static func bfloat16FromFloat(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if bits & 0x7fff_ffff > 0x7f80_0000 { return UInt16(bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7fff &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}
