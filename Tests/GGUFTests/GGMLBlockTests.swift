import Foundation
import Testing
@testable import GGUF

/// Dequantization, bit for bit as gguf-py's gguf.quants.dequantize (Fixtures/gguf-blocks, README there).
@Suite struct GGMLBlockTests {
    static let fixtureTypes: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .f16, .bf16]

    /// Dequantizes `bytes` (whole blocks of `type`) starting `misalignment` bytes into a fresh buffer.
    static func dequantize(_ type: GGMLType, _ bytes: [UInt8], misalignment: Int = 0) -> [Float] {
        let (elements, blockBytes) = type.blockGeometry
        let blocks = bytes.count / blockBytes
        let padded = [UInt8](repeating: 0xA5, count: misalignment) + bytes
        var out = [Float](repeating: .nan, count: blocks * elements)
        padded.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { type.dequantize(blocks: blocks, from: raw.baseAddress! + misalignment, into: $0.baseAddress!) }
        }
        return out
    }

    /// The first index where the bit patterns differ, with both patterns, or nil.
    static func firstMismatch(_ got: [Float], _ expected: [Float]) -> String? {
        if got.count != expected.count { return "count \(got.count), expected \(expected.count)" }
        guard let i = got.indices.first(where: { got[$0].bitPattern != expected[$0].bitPattern }) else { return nil }
        let count = zip(got, expected).filter { $0.bitPattern != $1.bitPattern }.count
        return "\(count) of \(got.count) differ, first [\(i)]: got \(got[i]) (0x\(String(got[i].bitPattern, radix: 16))), " +
            "expected \(expected[i]) (0x\(String(expected[i].bitPattern, radix: 16)))"
    }

    @Test(arguments: fixtureTypes)
    func equalsGGUFPyBitForBit(_ type: GGMLType) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: ggufFixturePath("gguf-blocks/\(type).blocks"))))
        let expected = try Data(contentsOf: URL(fileURLWithPath: ggufFixturePath("gguf-blocks/\(type).f32")))
            .withUnsafeBytes { raw in (0..<raw.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
        #expect(bytes.count % type.blockGeometry.bytes == 0 && !bytes.isEmpty, "\(type): \(bytes.count) bytes is not whole blocks")
        let mismatch = Self.firstMismatch(Self.dequantize(type, bytes), expected)
        #expect(mismatch == nil, "\(type): \(mismatch ?? "")")
        // Block bytes inside a GGUF file need not be aligned to anything.
        let unaligned = Self.firstMismatch(Self.dequantize(type, bytes, misalignment: 1), expected)
        #expect(unaligned == nil, "\(type) at an odd address: \(unaligned ?? "")")
    }

    @Test func q8_0ByHand() {
        // d = 0.5 (fp16 0x3800), codes -128, -127, ..., -97: exactly code / 2.
        let codes = (0..<32).map { Int8($0 - 128) }
        let block: [UInt8] = [0x00, 0x38] + codes.map { UInt8(bitPattern: $0) }
        #expect(Self.dequantize(.q8_0, block) == codes.map { Float($0) / 2 })
        // Codes 96...127 with d = -0.25 (0xB400).
        let high = (96..<128).map { Int8($0) }
        #expect(Self.dequantize(.q8_0, [0x00, 0xB4] + high.map { UInt8(bitPattern: $0) }) == high.map { Float($0) * -0.25 })
    }

    @Test func q4_0ByHand() {
        // d = -2 (fp16 0xC000); byte j holds element j in its low nibble (j) and element j + 16 in its high (15 - j).
        let block: [UInt8] = [0x00, 0xC0] + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        let low: [Float] = (0..<16).map { Float($0 - 8) * -2 }
        let high: [Float] = (0..<16).map { Float(7 - $0) * -2 }
        let expected = low + high
        #expect(Self.dequantize(.q4_0, block) == expected)
    }

    /// Random blocks against the formula, with the stdlib's fp16 conversion as an independent reference.
    @Test(arguments: [GGMLType.q8_0, .q4_0])
    func randomBlocksMatchTheFormula(_ type: GGMLType) {
        var rng = SeededGenerator(seed: 0x6767_6D6C)
        for _ in 0..<200 {
            var dBits: UInt16
            repeat { dBits = UInt16.random(in: 0...UInt16.max, using: &rng) } while !Float16(bitPattern: dBits).isFinite
            let payload = (0..<(type == .q8_0 ? 32 : 16)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let d = Float(Float16(bitPattern: dBits))
            let codes = type == .q8_0
                ? payload.map { Int(Int8(bitPattern: $0)) }
                : payload.map { Int($0 & 0x0F) - 8 } + payload.map { Int($0 >> 4) - 8 }
            let got = Self.dequantize(type, [UInt8(dBits & 0xFF), UInt8(dBits >> 8)] + payload)
            let mismatch = Self.firstMismatch(got, codes.map { Float($0) * d })
            #expect(mismatch == nil, "\(type), d = \(d): \(mismatch ?? "")")
        }
    }

    /// Every fp16 pattern: the stdlib's value where it is not NaN; a NaN keeps sign and payload unchanged,
    /// quiet bit included (numpy's conversion, which gguf-py uses; the stdlib and ggml quiet it).
    @Test func halfToFloatIsExact() {
        var wrong: [UInt16] = []
        for bits in 0...UInt16.max {
            let got = GGMLBlocks.halfToFloat(bits).bitPattern
            let h = Float16(bitPattern: bits)
            let expected = h.isNaN ? UInt32(bits & 0x8000) << 16 | 0x7F80_0000 | UInt32(bits & 0x03FF) << 13 : Float(h).bitPattern
            if got != expected { wrong.append(bits) }
        }
        #expect(wrong.isEmpty, "\(wrong.count) patterns wrong, first 0x\(String(wrong.first ?? 0, radix: 16))")
    }

    @Test func f32CopiesBits() {
        let values: [Float] = [1, -0.0, .infinity, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC1_2345), .leastNonzeroMagnitude]
        let bytes = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        #expect(Self.dequantize(.f32, bytes, misalignment: 3).map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test func zeroBlocksWritesNothing() {
        var out: [Float] = [42]
        let source: [UInt8] = [0]
        for type in GGMLType.supported {
            source.withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { type.dequantize(blocks: 0, from: raw.baseAddress!, into: $0.baseAddress!) } }
        }
        #expect(out == [42])
    }
}
