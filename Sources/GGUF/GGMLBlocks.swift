/// Dequantization of ggml blocks to float32, bit for bit as gguf-py's `gguf.quants.dequantize` (and ggml's
/// `dequantize_row_*`, ggml-quants.c; they agree except for signaling-NaN F16 values, see `halfToFloat`).
///
/// The float operations are ggml's, in ggml's order: K-quants form `d * scale` and `dmin * min` once per
/// sub-block, then `that * code - that`; Q4_1/Q5_1 `code * d + m`. Every product is exact (an fp16's 11
/// significant bits times integers of at most 12 bits fit float's 24), so the only rounding is the final
/// add or subtract of the types with a min: results do not depend on how products are grouped, nor on FMA
/// contraction (which Swift never does anyway).
/// Operand order still matters for NaN payloads when two operands are NaN; it is ggml's here.
/// Block layouts are ggml-common.h's `block_*` structs, all fields little-endian.
extension GGMLType {
    /// Dequantizes `blocks` whole blocks starting at `source` (raw little-endian block bytes as stored in
    /// GGUF, any alignment) into `blocks * blockGeometry.elements` floats at `destination`.
    /// Precondition: `isSupported`.
    public func dequantize(blocks: Int, from source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>) {
        precondition(blocks >= 0, "negative block count \(blocks)")
        switch self {
        case .f32: UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: blocks * 4)
        case .f16: GGMLBlocks.f16(blocks, source, destination)
        case .bf16: GGMLBlocks.bf16(blocks, source, destination)
        case .q8_0: GGMLBlocks.q8_0(blocks, source, destination)
        case .q4_0: GGMLBlocks.q4_0(blocks, source, destination)
        case .q4_1: GGMLBlocks.q4_1(blocks, source, destination)
        case .q5_0: GGMLBlocks.q5_0(blocks, source, destination)
        case .q5_1: GGMLBlocks.q5_1(blocks, source, destination)
        case .q2_K: GGMLBlocks.q2_K(blocks, source, destination)
        case .q3_K: GGMLBlocks.q3_K(blocks, source, destination)
        case .q4_K: GGMLBlocks.q4_K(blocks, source, destination)
        case .q5_K: GGMLBlocks.q5_K(blocks, source, destination)
        case .q6_K: GGMLBlocks.q6_K(blocks, source, destination)
        default: preconditionFailure("GGML type \(self) cannot be dequantized (GGMLType.supported lists the types that can)")
        }
    }
}

/// One decoder per block type: `n` blocks at `x` into floats at `y`. Each loops over blocks and writes
/// every element once, in straight-line inner loops the compiler vectorizes.
enum GGMLBlocks {
    /// IEEE half → float, exact, keeping a NaN's payload and its quiet bit as they are (numpy's
    /// conversion, so gguf-py's). ggml's and the stdlib's `Float(Float16(bitPattern:))` (a libcall on x86
    /// without F16C, ~7× slower) set the quiet bit of a signaling NaN instead; that is the only difference,
    /// and it shows only in F16 tensors: a NaN scale yields a NaN product, which is quiet either way.
    @inline(__always)
    static func halfToFloat(_ bits: UInt16) -> Float {
        let h = UInt32(bits)
        let magnitude = h & 0x7FFF
        let normal = (magnitude &<< 13) &+ 0x3800_0000                         // exponent bias 15 → 127
        let special = (magnitude &<< 13) | 0x7F80_0000                         // inf, NaN: payload kept
        let small = (Float(Int32(bitPattern: magnitude)) * 0x1p-24).bitPattern // zero, subnormal: exact
        let result = magnitude >= 0x7C00 ? special : (magnitude < 0x0400 ? small : normal)
        return Float(bitPattern: result | (h & 0x8000) &<< 16)
    }

    @inline(__always)
    private static func fp16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        halfToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    @inline(__always)
    private static func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inline(__always)
    private static func word(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    // MARK: 16-bit floats

    static func f16(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n { y[i] = fp16(x, 2 * i) }
    }

    static func bf16(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let bits = UInt16(littleEndian: x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            y[i] = Float(bitPattern: UInt32(bits) &<< 16)
        }
    }

    // MARK: 32-element blocks (d: fp16 at 0; element j and j + 16 share byte j of qs)

    /// d, qs[32] (int8).
    static func q8_0(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 34 * i, out = y + 32 * i
            let d = fp16(b, 0)
            for j in 0..<32 { out[j] = Float(Int8(bitPattern: byte(b, 2 + j))) * d }
        }
    }

    /// d, qs[16]: code - 8.
    static func q4_0(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 18 * i, out = y + 32 * i
            let d = fp16(b, 0)
            for j in 0..<16 {
                let q = byte(b, 2 + j)
                out[j] = Float(Int32(q & 0x0F) - 8) * d
                out[j + 16] = Float(Int32(q &>> 4) - 8) * d
            }
        }
    }

    /// d, m, qs[16]: code * d + m.
    static func q4_1(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 20 * i, out = y + 32 * i
            let d = fp16(b, 0), m = fp16(b, 2)
            for j in 0..<16 {
                let q = byte(b, 4 + j)
                out[j] = Float(Int32(q & 0x0F)) * d + m
                out[j + 16] = Float(Int32(q &>> 4)) * d + m
            }
        }
    }

    /// d, qh (u32: bit j is element j's fifth bit), qs[16]: code - 16.
    static func q5_0(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 22 * i, out = y + 32 * i
            let d = fp16(b, 0), qh = word(b, 2)
            for j in 0..<16 {
                let q = UInt32(byte(b, 6 + j))
                let high0: UInt32 = qh & (1 &<< UInt32(j)) != 0 ? 0x10 : 0, high1: UInt32 = qh & (0x10000 &<< UInt32(j)) != 0 ? 0x10 : 0
                out[j] = Float(Int32(bitPattern: (q & 0x0F) | high0) - 16) * d
                out[j + 16] = Float(Int32(bitPattern: (q &>> 4) | high1) - 16) * d
            }
        }
    }

    /// d, m, qh (u32), qs[16]: code * d + m.
    static func q5_1(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 24 * i, out = y + 32 * i
            let d = fp16(b, 0), m = fp16(b, 2), qh = word(b, 4)
            for j in 0..<16 {
                let q = UInt32(byte(b, 8 + j))
                let high0: UInt32 = qh & (1 &<< UInt32(j)) != 0 ? 0x10 : 0, high1: UInt32 = qh & (0x10000 &<< UInt32(j)) != 0 ? 0x10 : 0
                out[j] = Float(Int32(bitPattern: (q & 0x0F) | high0)) * d + m
                out[j + 16] = Float(Int32(bitPattern: (q &>> 4) | high1)) * d + m
            }
        }
    }

    // MARK: 256-element super-blocks (K-quants)

    /// scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), d, dmin: (d*sc) * code - dmin*min.
    /// Each 128-element half reads 32 qs bytes four times, 2 bits further each time, 16 elements per scale.
    static func q2_K(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 84 * i, out = y + 256 * i
            let d = fp16(b, 80), dmin = fp16(b, 82)
            for half in 0..<2 {
                let qs = b + 16 + 32 * half
                for pass in 0..<4 {
                    let shift = UInt8(2 * pass)
                    for group in 0..<2 {
                        let sc = byte(b, 8 * half + 2 * pass + group)
                        let dl = d * Float(Int32(sc & 0x0F)), ml = dmin * Float(Int32(sc &>> 4))
                        let o = out + 128 * half + 32 * pass + 16 * group
                        for l in 0..<16 {
                            o[l] = dl * Float(Int32((byte(qs, 16 * group + l) &>> shift) & 3)) - ml
                        }
                    }
                }
            }
        }
    }

    /// hmask[32], qs[64] (low 2 bits), scales[12] (sixteen 6-bit scales), d: (d*(sc-32)) * (code - 4·!high).
    /// Same walk as Q2_K; the high bit of element 128·half + 32·pass + l is bit 4·half + pass of hmask[l].
    static func q3_K(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 110 * i, out = y + 256 * i
            let d = fp16(b, 108)
            for half in 0..<2 {
                let qs = b + 32 + 32 * half
                for pass in 0..<4 {
                    let shift = UInt8(2 * pass), mask = UInt8(1) &<< UInt8(4 * half + pass)
                    for group in 0..<2 {
                        let dl = d * Float(q3Scale(b + 96, 8 * half + 2 * pass + group))
                        let o = out + 128 * half + 32 * pass + 16 * group
                        for l in 0..<16 {
                            // low 2 bits, plus 4 when the high bit is set, minus 4: ggml's `low - (high ? 0 : 4)`
                            let code: UInt8 = (byte(qs, 16 * group + l) &>> shift) & 3 | (byte(b, 16 * group + l) & mask != 0 ? 4 : 0)
                            o[l] = dl * Float(Int32(code) - 4)
                        }
                    }
                }
            }
        }
    }

    /// Scale `k` of Q3_K's 12 packed bytes, minus 32: low 4 bits from nibble k/8 of byte k%8, high 2 bits
    /// from bits 2·(k/4) of byte 8 + k%4. The same values as ggml's kmask1/kmask2 word shuffle.
    @inline(__always)
    private static func q3Scale(_ s: UnsafeRawPointer, _ k: Int) -> Int32 {
        let low = (byte(s, k & 7) &>> UInt8(4 * (k &>> 3))) & 0x0F
        let high = (byte(s, 8 + (k & 3)) &>> UInt8(2 * (k &>> 2))) & 0x03
        return Int32(low | high &<< 4) - 32
    }

    /// ggml's get_scale_min_k4: 6-bit scale and min `j` (0..<8) of the 12 packed bytes of Q4_K/Q5_K.
    @inline(__always)
    private static func scaleMinK4(_ s: UnsafeRawPointer, _ j: Int) -> (scale: Float, min: Float) {
        if j < 4 {
            return (Float(Int32(byte(s, j) & 63)), Float(Int32(byte(s, j + 4) & 63)))
        }
        let scale = (byte(s, j + 4) & 0x0F) | (byte(s, j - 4) &>> 6) &<< 4
        let min = (byte(s, j + 4) &>> 4) | (byte(s, j) &>> 6) &<< 4
        return (Float(Int32(scale)), Float(Int32(min)))
    }

    /// d, dmin, scales[12], qs[128]: 64 elements per 32 qs bytes (low nibbles, then high), one scale/min each.
    static func q4_K(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 144 * i, out = y + 256 * i
            let d = fp16(b, 0), dmin = fp16(b, 2)
            for chunk in 0..<4 {
                let (sc1, min1) = scaleMinK4(b + 4, 2 * chunk), (sc2, min2) = scaleMinK4(b + 4, 2 * chunk + 1)
                let d1 = d * sc1, m1 = dmin * min1, d2 = d * sc2, m2 = dmin * min2
                let qs = b + 16 + 32 * chunk, o = out + 64 * chunk
                for l in 0..<32 {
                    let q = byte(qs, l)
                    o[l] = d1 * Float(Int32(q & 0x0F)) - m1
                    o[l + 32] = d2 * Float(Int32(q &>> 4)) - m2
                }
            }
        }
    }

    /// d, dmin, scales[12], qh[32], qs[128]: as Q4_K plus a fifth bit, bit 2·chunk (+1 for high nibbles) of qh[l].
    static func q5_K(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 176 * i, out = y + 256 * i
            let d = fp16(b, 0), dmin = fp16(b, 2)
            for chunk in 0..<4 {
                let (sc1, min1) = scaleMinK4(b + 4, 2 * chunk), (sc2, min2) = scaleMinK4(b + 4, 2 * chunk + 1)
                let d1 = d * sc1, m1 = dmin * min1, d2 = d * sc2, m2 = dmin * min2
                let u1 = UInt8(1) &<< UInt8(2 * chunk), u2 = UInt8(2) &<< UInt8(2 * chunk)
                let qs = b + 48 + 32 * chunk, o = out + 64 * chunk
                for l in 0..<32 {
                    let q = byte(qs, l), h = byte(b, 16 + l)
                    let q1: UInt8 = (q & 0x0F) | (h & u1 != 0 ? 16 : 0), q2: UInt8 = (q &>> 4) | (h & u2 != 0 ? 16 : 0)
                    o[l] = d1 * Float(Int32(q1)) - m1
                    o[l + 32] = d2 * Float(Int32(q2)) - m2
                }
            }
        }
    }

    /// ql[128], qh[64], scales[16] (int8), d: (d*sc) * (code - 32), 6-bit codes. Per 128-element half,
    /// byte l of ql/qh serves elements l, l+32, l+64, l+96 (ql low/high nibble of l and l+32, qh 2 bits each).
    static func q6_K(_ n: Int, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n {
            let b = x + 210 * i, out = y + 256 * i
            let d = fp16(b, 208)
            for half in 0..<2 {
                let ql = b + 64 * half, qh = b + 128 + 32 * half, sc = b + 192 + 8 * half
                let o = out + 128 * half
                for group in 0..<2 {   // elements l < 16 use scales 0, 2, 4, 6; l ≥ 16 scales 1, 3, 5, 7
                    let d1 = d * Float(Int8(bitPattern: byte(sc, group)))
                    let d2 = d * Float(Int8(bitPattern: byte(sc, group + 2)))
                    let d3 = d * Float(Int8(bitPattern: byte(sc, group + 4)))
                    let d4 = d * Float(Int8(bitPattern: byte(sc, group + 6)))
                    for l in 16 * group..<16 * group + 16 {
                        let a = byte(ql, l), c = byte(ql, l + 32), h = byte(qh, l)
                        o[l] = d1 * Float(Int32((a & 0x0F) | (h & 0x03) &<< 4) - 32)
                        o[l + 32] = d2 * Float(Int32((c & 0x0F) | ((h &>> 2) & 0x03) &<< 4) - 32)
                        o[l + 64] = d3 * Float(Int32((a &>> 4) | ((h &>> 4) & 0x03) &<< 4) - 32)
                        o[l + 96] = d4 * Float(Int32((c &>> 4) | (h &>> 6) &<< 4) - 32)
                    }
                }
            }
        }
    }
}
