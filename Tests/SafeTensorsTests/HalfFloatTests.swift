import Foundation
import Testing
@testable import SafeTensors

/// SplitMix64: a tiny seeded generator so every random test is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Naive twins: decode from the IEEE definition in Double; encode by searching the sorted table of
/// all finite non-negative fp16 values and applying round-half-to-even by hand.
enum NaiveHalf {
    static func decode(_ h: UInt16) -> Double {
        let sign: Double = h & 0x8000 != 0 ? -1 : 1
        let exponent = Int(h >> 10) & 0x1f
        let mantissa = Double(h & 0x3ff)
        if exponent == 0 { return sign * mantissa * pow(2, -24) }
        if exponent == 31 { return mantissa == 0 ? sign * .infinity : .nan }
        return sign * (1 + mantissa / 1024) * pow(2, Double(exponent - 15))
    }

    /// Patterns 0x0000 ... 0x7bff (ascending values) and, as the 0x7c00 "next" value, 2^16: IEEE
    /// rounds to infinity exactly when the value would round to 2^16 with an unbounded exponent.
    static let positive: [Double] = (0...0x7bff).map { decode(UInt16($0)) } + [65536]

    static func encode(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7e00 }
        let sign: UInt16 = x.sign == .minus ? 0x8000 : 0
        let m = Double(x.magnitude)
        if m >= 65536 { return sign | 0x7c00 }
        // Largest index with positive[i] <= m.
        var lo = 0, hi = positive.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if positive[mid] <= m { lo = mid } else { hi = mid - 1 }
        }
        if positive[lo] == m { return sign | UInt16(lo) }
        let below = positive[lo], above = positive[lo + 1]
        let pick: Int
        if m - below < above - m { pick = lo } else if m - below > above - m { pick = lo + 1 } else { pick = lo % 2 == 0 ? lo : lo + 1 }
        return sign | UInt16(pick)
    }

    static func encodeBFloat16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = UInt16(bits >> 16) & 0x8000
        let magnitude = bits & 0x7fff_ffff
        let truncated = UInt16(magnitude >> 16)
        let below = Double(Float(bitPattern: UInt32(truncated) << 16))
        let above = truncated == 0x7f7f ? pow(2, 128) : Double(Float(bitPattern: UInt32(truncated + 1) << 16))
        let m = Double(Float(bitPattern: magnitude))
        if m == below { return sign | truncated }
        if m - below < above - m { return sign | truncated }
        if m - below > above - m { return sign | (truncated + 1) }
        return sign | (truncated % 2 == 0 ? truncated : truncated + 1)
    }
}

@Suite("HalfFloat")
struct HalfFloatTests {
    /// All 65536 fp16 patterns decode exactly, and encode back to themselves (NaNs stay NaN, sign kept).
    @Test func allHalfPatternsRoundTrip() {
        var mismatches: [String] = []
        for pattern in 0...0xffff {
            let h = UInt16(pattern)
            let f = HalfFloat.toFloat(h)
            let expected = NaiveHalf.decode(h)
            if expected.isNaN {
                let back = HalfFloat.fromFloat(f)
                if !f.isNaN || back & 0x7c00 != 0x7c00 || back & 0x3ff == 0 || back & 0x8000 != h & 0x8000 {
                    mismatches.append(String(format: "NaN %04x -> %@ -> %04x", pattern, "\(f)", back))
                }
                continue
            }
            if Double(f) != expected || (f == 0 && f.sign != (h & 0x8000 != 0 ? .minus : .plus)) {
                mismatches.append(String(format: "%04x decodes to %@ not %@", pattern, "\(f)", "\(expected)"))
            }
            if HalfFloat.fromFloat(f) != h {
                mismatches.append(String(format: "%04x -> %@ -> %04x", pattern, "\(f)", HalfFloat.fromFloat(f)))
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, first: \(mismatches.prefix(5))")
    }

    /// Floats -> fp16 against the table-search twin: random bit patterns over every exponent, plus
    /// exact midpoints between neighbours (ties), ±1 ulp around them, and the overflow boundary.
    @Test func floatToHalfMatchesNaiveRounding() {
        var generator = SplitMix64(seed: 0x5afe_7e45)
        var inputs: [Float] = []
        for _ in 0..<200_000 {
            // Exponents from deep float subnormals to beyond fp16 range.
            let exponent = UInt32.random(in: 80...150, using: &generator)
            let mantissa = UInt32.random(in: 0..<(1 << 23), using: &generator)
            let sign: UInt32 = Bool.random(using: &generator) ? 0x8000_0000 : 0
            inputs.append(Float(bitPattern: sign | exponent << 23 | mantissa))
        }
        for pattern in stride(from: 0, to: 0x7c00, by: 1) {
            let mid = Float((NaiveHalf.positive[pattern] + NaiveHalf.positive[pattern + 1]) / 2)
            inputs += [mid, mid.nextUp, mid.nextDown, -mid]
        }
        inputs += [65504, 65519.99, 65520, 65536, 1e10, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude,
                   Float(bitPattern: 0x3380_0000), Float(bitPattern: 0x3300_0000), Float(bitPattern: 0x3300_0001), .nan, -.nan]
        var mismatches: [String] = []
        for x in inputs {
            let got = HalfFloat.fromFloat(x), want = NaiveHalf.encode(x)
            let same = x.isNaN ? (got & 0x7c00 == 0x7c00 && got & 0x3ff != 0) : got == want
            if !same { mismatches.append("\(x) (bits \(String(x.bitPattern, radix: 16))): got \(String(got, radix: 16)) want \(String(want, radix: 16))") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(inputs.count) differ, first: \(mismatches.prefix(5))")
    }

    @Test func floatToBFloat16MatchesNaiveRounding() {
        var generator = SplitMix64(seed: 0xbf16)
        var mismatches: [String] = []
        var count = 0
        func check(_ x: Float) {
            count += 1
            let got = HalfFloat.bfloat16FromFloat(x)
            if x.isNaN {
                if !HalfFloat.bfloat16ToFloat(got).isNaN { mismatches.append("NaN \(String(x.bitPattern, radix: 16)) -> \(String(got, radix: 16))") }
                return
            }
            let want = NaiveHalf.encodeBFloat16(x)
            if got != want { mismatches.append("\(x): got \(String(got, radix: 16)) want \(String(want, radix: 16))") }
        }
        for _ in 0..<200_000 { check(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &generator))) }
        for b in stride(from: 0, to: 0x7f80, by: 7) {
            let tie = UInt32(b) << 16 | 0x8000
            for bits in [tie, tie + 1, tie - 1, tie | 0x8000_0000] { check(Float(bitPattern: bits)) }
        }
        for x: Float in [.greatestFiniteMagnitude, .infinity, 0, -0.0, .leastNonzeroMagnitude, .nan] { check(x) }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(count) differ, first: \(mismatches.prefix(5))")
        for pattern in 0...0xffff {
            let f = HalfFloat.bfloat16ToFloat(UInt16(pattern))
            if !f.isNaN { #expect(HalfFloat.bfloat16FromFloat(f) == UInt16(pattern)) }
        }
    }

    /// torch's own roundings: in the fixture, `dequant_f16` / `dequant_bf16` are `dequant_f32`
    /// converted by torch (round to nearest even).
    @Test func matchesTorchRoundingOnFixture() throws {
        let file = try SafeTensorsFile(path: fixturePath("weight_16x192_f16.safetensors"))
        let source = try file.floats("dequant_f32")
        let half = try raw16(file, "dequant_f16")
        let bfloat = try raw16(file, "dequant_bf16")
        #expect(source.count == half.count && source.count == bfloat.count)
        let halfMismatches = zip(source, half).filter { HalfFloat.fromFloat($0) != $1 }.count
        let bfloatMismatches = zip(source, bfloat).filter { HalfFloat.bfloat16FromFloat($0) != $1 }.count
        #expect(halfMismatches == 0)
        #expect(bfloatMismatches == 0)
    }

    /// `floats` of F16 and BF16 tensors equals the naive IEEE decoding of every element.
    @Test(arguments: ["input", "dequant_f16", "dequant_bf16"])
    func floatsDecodesSixteenBitTensors(_ name: String) throws {
        let file = try SafeTensorsFile(path: fixturePath("weight_16x192_f16.safetensors"))
        let values = try file.floats(name)
        let bits = try raw16(file, name)
        let isBFloat = try file.info(name).dtype == .BF16
        let elementCount = try file.info(name).elementCount
        #expect(values.count == elementCount)
        var bad = 0
        for (value, pattern) in zip(values, bits) {
            let expected = isBFloat ? NaiveBFloat.decode(pattern) : NaiveHalf.decode(pattern)
            if Double(value) != expected { bad += 1 }
        }
        #expect(bad == 0, "\(bad) of \(values.count) elements decode differently")
    }

    /// Every fp16 and bf16 pattern through `floats` (a file written by the writer).
    @Test func floatsDecodesAllPatterns() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let patterns = (0...0xffff).map { UInt16($0).littleEndian }
        let data = patterns.withUnsafeBytes { Data($0) }
        let path = directory.file("all.safetensors")
        try SafeTensorsWriter.write(path: path, tensors: [
            (TensorEntry(name: "h", dtype: .F16, shape: [65536]), data),
            (TensorEntry(name: "b", dtype: .BF16, shape: [256, 256]), data),
        ])
        let file = try SafeTensorsFile(path: path)
        let halves = try file.floats("h"), bfloats = try file.floats("b")
        var bad = 0
        for pattern in 0...0xffff {
            let h = NaiveHalf.decode(UInt16(pattern)), b = NaiveBFloat.decode(UInt16(pattern))
            if !(h.isNaN ? halves[pattern].isNaN : Double(halves[pattern]) == h) { bad += 1 }
            if !(b.isNaN ? bfloats[pattern].isNaN : Double(bfloats[pattern]) == b) { bad += 1 }
        }
        #expect(bad == 0)
    }

    private func raw16(_ file: SafeTensorsFile, _ name: String) throws -> [UInt16] {
        let bytes = try file.rawBytes(name)
        return (0..<bytes.count / 2).map { bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian }
    }
}

enum NaiveBFloat {
    static func decode(_ b: UInt16) -> Double {
        let sign: Double = b & 0x8000 != 0 ? -1 : 1
        let exponent = Int(b >> 7) & 0xff
        let mantissa = Double(b & 0x7f)
        if exponent == 0 { return sign * mantissa * pow(2, -133) }
        if exponent == 255 { return mantissa == 0 ? sign * .infinity : .nan }
        return sign * (1 + mantissa / 128) * pow(2, Double(exponent - 127))
    }
}
