/// fp32 values to ggml blocks, bit-exact with ggml's reference quantizers (quantize_row_*_ref, and
/// gguf-py's gguf.quants.quantize): what `qlora merge --format gguf` writes.
extension GGMLType {
    /// The types values can be written as.
    public static let writable: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0]

    /// `count` values (a whole number of blocks) as this type's bytes.
    public func quantize(_ values: UnsafePointer<Float>, count: Int) -> [UInt8] {
        precondition(Self.writable.contains(self) && count % blockGeometry.elements == 0)
        var out = [UInt8]()
        out.reserveCapacity(byteCount(elements: count)!)
        func append16(_ v: UInt16) { out.append(UInt8(v & 0xFF)); out.append(UInt8(v >> 8)) }
        switch self {
        case .f32:
            for i in 0..<count { let b = values[i].bitPattern; for s in stride(from: 0, to: 32, by: 8) { out.append(UInt8((b >> s) & 0xFF)) } }
        case .f16:
            for i in 0..<count { append16(Float16(values[i]).bitPattern) }
        case .bf16:
            for i in 0..<count { append16(Self.bfloat16(values[i])) }
        case .q8_0:
            for block in stride(from: 0, to: count, by: 32) {
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(values[block + j])) }
                let d = amax / 127, id: Float = d == 0 ? 0 : 1 / d
                append16(Float16(d).bitPattern)
                for j in 0..<32 { out.append(UInt8(bitPattern: Int8((values[block + j] * id).rounded(.toNearestOrAwayFromZero)))) }
            }
        case .q4_0:
            for block in stride(from: 0, to: count, by: 32) {
                // The value of largest magnitude, sign kept (the first one on ties, as argmax).
                var amax: Float = 0, signedMax: Float = 0
                for j in 0..<32 where abs(values[block + j]) > amax { amax = abs(values[block + j]); signedMax = values[block + j] }
                let d = signedMax / -8, id: Float = d == 0 ? 0 : 1 / d
                append16(Float16(d).bitPattern)
                func code(_ j: Int) -> UInt8 { UInt8(min(15, max(0, (values[block + j] * id + 8.5).rounded(.towardZero)))) }
                for j in 0..<16 { out.append(code(j) | code(j + 16) << 4) }
            }
        default:
            preconditionFailure("\(self) is not writable")
        }
        return out
    }

    /// ggml_compute_fp32_to_bf16: NaN made quiet, otherwise round to nearest even.
    static func bfloat16(_ x: Float) -> UInt16 {
        let n = x.bitPattern
        if n & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: (n | 0x0040_0000) >> 16) }
        return UInt16(truncatingIfNeeded: (UInt64(n) + UInt64(0x7FFF + ((n >> 16) & 1))) >> 16)
    }
}
