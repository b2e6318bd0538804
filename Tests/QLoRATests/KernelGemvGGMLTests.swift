import CQLoRAKernels
import GGUF
import Testing
@testable import QLoRA

/// The fused GGUF-block decode kernels (CQLoRAKernels/GemvGGML.c): at every level bit for bit what the
/// dense kernels give on the dequantized rows (GGMLType.dequantize, bit-exact with gguf-py), so fusing
/// changes no result; permuted rows and several vectors too.
@Suite struct KernelGemvGGMLTests {
    /// Random blocks of `type` with finite scales of every kind: zero, subnormal, small, large, negative.
    static func blocks(_ type: GGMLType, rows: Int, cols: Int, random: inout SeededGenerator) -> [UInt8] {
        let (elements, bytes) = type.blockGeometry
        let count = rows * cols / elements
        var data = [UInt8](repeating: 0, count: count * bytes)
        let scales: [UInt16] = [0x0000, 0x0001, 0x03ff, 0x2e66, 0x3c00, 0xb400, 0x1400, 0x7bff, 0x8123]
        for b in 0..<count {
            for k in 0..<bytes { data[b * bytes + k] = UInt8(truncatingIfNeeded: random.next()) }
            let d = b % 3 == 0 ? scales[b % scales.count] : UInt16(0x2000 + random.next() % 0x1800) | (b % 2 == 0 ? 0x8000 : 0)
            data[b * bytes] = UInt8(d & 0xff)
            data[b * bytes + 1] = UInt8(d >> 8)
            if type == .q4_1 {   // m: finite too
                let m = UInt16(0x2000 + random.next() % 0x1800) | (b % 5 == 0 ? 0x8000 : 0)
                data[b * bytes + 2] = UInt8(m & 0xff)
                data[b * bytes + 3] = UInt8(m >> 8)
            }
        }
        return data
    }

    static func dequantized(_ type: GGMLType, _ data: [UInt8], rows: Int, cols: Int) -> [Float] {
        var values = [Float](repeating: 0, count: rows * cols)
        data.withUnsafeBytes { raw in
            values.withUnsafeMutableBufferPointer { type.dequantize(blocks: rows * cols / type.blockGeometry.elements, from: raw.baseAddress!, into: $0.baseAddress!) }
        }
        return values
    }

    @Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1])
    func fusedEqualsDequantizedThenDense(_ type: GGMLType) {
        #expect(qlora_ggml_fused(Int32(type.rawValue)) == 1)
        var random = SeededGenerator(seed: UInt64(type.rawValue) + 40)
        for (rows, cols) in [(1, 32), (5, 96), (8, 576), (13, 64)] {
            let data = Self.blocks(type, rows: rows, cols: cols, random: &random)
            let rowBytes = cols / 32 * type.blockGeometry.bytes
            let values = Self.dequantized(type, data, rows: rows, cols: cols)
            let x = (0..<cols).map { _ in random.normal() }
            // A permutation of the rows, as GGUFWeight's stored-row table.
            let stored = (0..<Int32(rows)).reversed().map { $0 }
            let permuted = stored.flatMap { values[Int($0) * cols..<(Int($0) + 1) * cols] }

            // fp32 x: qlora_gemv_f32 on the dequantized (and bf16-rounded) rows.
            for rounding in [Int32(0), 1] {
                var dense = permuted
                if rounding == 1 { ComputePrecision.bf16.round(&dense, count: dense.count) }
                var expected = [Float](repeating: .nan, count: rows)
                qlora_gemv_f32(0, &expected, x, rows, cols, dense, cols)
                for level in Int32(0)...qlora_kernels_best_level() {
                    var y = [Float](repeating: .nan, count: rows)
                    qlora_gemv_ggml_f32(level, Int32(type.rawValue), &y, x, rows, cols, data, rowBytes, stored, 0, rounding)
                    #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "\(type) \(rows)x\(cols) f32 level \(level) rounding \(rounding)")
                }
            }

            // bf16 x pairs: qlora_gemv_bf16_bf16dot on the bf16 rows, 1, 3 and 10 vectors (more than a pass takes).
            let ldx = cols / 2
            var bits = [UInt16](repeating: 0, count: rows * cols)
            bits.withUnsafeMutableBufferPointer { qlora_bf16_from_f32_rows(0, $0.baseAddress!, cols, permuted, cols, rows, cols) }
            for vectors in [1, 3, 10] {
                var pairs = [UInt32](repeating: 0, count: vectors * ldx)
                for v in 0..<vectors {
                    let xv = (0..<cols).map { _ in random.normal() }
                    pairs.withUnsafeMutableBytes {
                        qlora_bf16_from_f32_rows(0, $0.baseAddress!.assumingMemoryBound(to: UInt16.self) + v * cols, cols, xv, cols, 1, cols)
                    }
                }
                var expected = [Float](repeating: .nan, count: vectors * rows)
                for v in 0..<vectors {
                    expected.withUnsafeMutableBufferPointer { out in
                        pairs.withUnsafeBufferPointer { qlora_gemv_bf16_bf16dot(0, out.baseAddress! + v * rows, $0.baseAddress! + v * ldx, rows, cols, bits, cols) }
                    }
                }
                for level in Set([Int32(0), GemmKernel.fastestLevel]).sorted() {
                    var y = [Float](repeating: .nan, count: vectors * rows)
                    qlora_gemv_ggml_bf16dot(level, Int32(type.rawValue), &y, rows, pairs, ldx, vectors, rows, cols, data, rowBytes, stored, 0)
                    #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "\(type) \(rows)x\(cols) bf16dot level \(level), \(vectors) vectors")
                }
            }
            // A row range starts at first_row of the stored-row table.
            var part = [Float](repeating: .nan, count: rows - rows / 2), whole = [Float](repeating: .nan, count: rows)
            qlora_gemv_ggml_f32(0, Int32(type.rawValue), &whole, x, rows, cols, data, rowBytes, stored, 0, 0)
            qlora_gemv_ggml_f32(0, Int32(type.rawValue), &part, x, rows - rows / 2, cols, data, rowBytes, stored, rows / 2, 0)
            #expect(part.map(\.bitPattern) == whole.suffix(rows - rows / 2).map(\.bitPattern))
        }
    }

    @Test func otherTypesAreNotFused() {
        for type in GGMLType.supported where ![.q8_0, .q4_0, .q4_1].contains(type) {
            #expect(qlora_ggml_fused(Int32(type.rawValue)) == 0, "\(type)")
        }
    }
}
