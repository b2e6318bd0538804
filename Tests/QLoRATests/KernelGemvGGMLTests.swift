import CQLoRAKernels
import GGUF
import SafeTensors
import Testing
@testable import QLoRA

/// The fused GGUF-block decode kernels (CQLoRAKernels/GemvGGML.c, GemvGGMLK.c): at every level — the
/// scalar twin (0), AVX2 (1) and AVX-512 (2) for fp32 x, the scalar twin and AVX-512 BF16 for bf16 x —
/// bit for bit what the dense kernels give on the dequantized rows (GGMLType.dequantize, bit-exact with
/// gguf-py), so fusing changes no result; and within the float32 error bound of the exact (float64)
/// product of those rows. Permuted rows, row ranges, odd row counts and several vectors too.
@Suite struct KernelGemvGGMLTests {
    static let fused: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q4_K, .q5_K, .q6_K]

    /// Byte offsets of a block's fp16 scale fields (d, and dmin or m where the type has one).
    static func scaleFields(_ type: GGMLType) -> [Int] {
        switch type {
        case .q4_1, .q4_K, .q5_K: [0, 2]
        case .q6_K: [208]
        default: [0]
        }
    }

    /// Random blocks of `type` (every code and sub-scale bit random) with finite fp16 scales of every
    /// kind: zero, subnormal, small, ±65504 (largest), negative; the others weight-sized.
    static func blocks(_ type: GGMLType, rows: Int, cols: Int, random: inout SeededGenerator) -> [UInt8] {
        let (elements, bytes) = type.blockGeometry
        let count = rows * cols / elements
        var data = [UInt8](repeating: 0, count: count * bytes)
        let edges: [UInt16] = [0x0000, 0x0001, 0x03ff, 0x2e66, 0x3c00, 0xb400, 0x1400, 0x7bff, 0x8123, 0xfbff, 0x8000]
        for b in 0..<count {
            for k in 0..<bytes { data[b * bytes + k] = UInt8(truncatingIfNeeded: random.next()) }
            for (f, offset) in scaleFields(type).enumerated() {
                let d = (b + f) % 3 == 0 ? edges[(7 * b + f) % edges.count]
                    : UInt16(0x2000 + random.next() % 0x1800) | ((b + f) % 2 == 0 ? 0x8000 : 0)
                data[b * bytes + offset] = UInt8(d & 0xff)
                data[b * bytes + offset + 1] = UInt8(d >> 8)
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

    /// Shapes (rows, cols): one row, odd row counts (the kernels take rows two at a time), several blocks.
    static func shapes(_ type: GGMLType) -> [(Int, Int)] {
        type.blockGeometry.elements == 256 ? [(1, 256), (5, 512), (2, 1536), (13, 256), (4, 768)]
            : [(1, 32), (5, 96), (8, 576), (13, 64)]
    }

    /// bf16 x pairs of `vectors` random vectors, ldx = cols / 2 words each, and their values.
    static func bf16Pairs(vectors: Int, cols: Int, random: inout SeededGenerator) -> (pairs: [UInt32], values: [[Float]]) {
        var pairs = [UInt32](repeating: 0, count: vectors * cols / 2), values: [[Float]] = []
        for v in 0..<vectors {
            let xv = (0..<cols).map { _ in random.normal() }
            pairs.withUnsafeMutableBytes {
                qlora_bf16_from_f32_rows(0, $0.baseAddress!.assumingMemoryBound(to: UInt16.self) + v * cols, cols, xv, cols, 1, cols)
            }
            values.append(xv.map { Float(bitPattern: UInt32(HalfFloat.bfloat16FromFloat($0)) << 16) })
        }
        return (pairs, values)
    }

    @Test(arguments: fused)
    func fusedEqualsDequantizedThenDense(_ type: GGMLType) {
        #expect(qlora_ggml_fused(Int32(type.rawValue)) == 1)
        var random = SeededGenerator(seed: UInt64(type.rawValue) + 40)
        for (rows, cols) in Self.shapes(type) {
            let data = Self.blocks(type, rows: rows, cols: cols, random: &random)
            let rowBytes = cols / type.blockGeometry.elements * type.blockGeometry.bytes
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
                let pairs = Self.bf16Pairs(vectors: vectors, cols: cols, random: &random).pairs
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
            for level in Int32(0)...qlora_kernels_best_level() {
                var part = [Float](repeating: .nan, count: rows - rows / 2), whole = [Float](repeating: .nan, count: rows)
                qlora_gemv_ggml_f32(level, Int32(type.rawValue), &whole, x, rows, cols, data, rowBytes, stored, 0, 0)
                qlora_gemv_ggml_f32(level, Int32(type.rawValue), &part, x, rows - rows / 2, cols, data, rowBytes, stored, rows / 2, 0)
                #expect(part.map(\.bitPattern) == whole.suffix(rows - rows / 2).map(\.bitPattern), "\(type) \(rows)x\(cols) level \(level)")
            }
        }
    }

    /// Against the exact product: every result within the float32 bound of the kernels' summation,
    /// |y - y64| <= (cols/32 + 6) * 2^-24 * sum |w x| (each lane is a chain of cols/32 fused
    /// multiply-adds, then 5 adds reduce the 32 lanes; +1 for the second-order term), y64 the float64 dot
    /// product of the dequantized weights (bf16-rounded where the kernel rounds) with x. The bound is what
    /// any summation order of this shape allows; a decoding error (a wrong code, scale or lane) would be
    /// of the size of a weight and exceed it.
    @Test(arguments: fused)
    func fusedIsWithinTheFloat32BoundOfTheExactProduct(_ type: GGMLType) {
        var random = SeededGenerator(seed: UInt64(type.rawValue) + 90)
        var worst = 0.0
        for (rows, cols) in Self.shapes(type) {
            let data = Self.blocks(type, rows: rows, cols: cols, random: &random)
            let rowBytes = cols / type.blockGeometry.elements * type.blockGeometry.bytes
            let values = Self.dequantized(type, data, rows: rows, cols: cols)
            let bound = Double(cols / 32 + 6) * 0x1p-24
            func check(_ y: Float, row r: Int, weights: (Int) -> Float, x: [Float], _ label: String) {
                var exact = 0.0, magnitude = 0.0
                for c in 0..<cols {
                    let p = Double(weights(r * cols + c)) * Double(x[c])
                    exact += p
                    magnitude += abs(p)
                }
                let error = abs(Double(y) - exact)
                worst = max(worst, magnitude > 0 ? error / magnitude : 0)
                #expect(error <= bound * magnitude + 1e-30, "\(type) \(rows)x\(cols) \(label) row \(r): \(y) vs \(exact), error \(error), bound \(bound * magnitude)")
            }
            let rounded = values.map { Float(bitPattern: UInt32(HalfFloat.bfloat16FromFloat($0)) << 16) }
            let x = (0..<cols).map { _ in random.normal() }
            for rounding in [Int32(0), 1] {
                for level in Int32(0)...qlora_kernels_best_level() {
                    var y = [Float](repeating: .nan, count: rows)
                    qlora_gemv_ggml_f32(level, Int32(type.rawValue), &y, x, rows, cols, data, rowBytes, nil, 0, rounding)
                    for r in 0..<rows { check(y[r], row: r, weights: { rounding == 1 ? rounded[$0] : values[$0] }, x: x, "f32 level \(level) rounding \(rounding)") }
                }
            }
            let (pairs, xs) = Self.bf16Pairs(vectors: 3, cols: cols, random: &random)
            for level in Set([Int32(0), GemmKernel.fastestLevel]).sorted() {
                var y = [Float](repeating: .nan, count: 3 * rows)
                qlora_gemv_ggml_bf16dot(level, Int32(type.rawValue), &y, rows, pairs, cols / 2, 3, rows, cols, data, rowBytes, nil, 0)
                for v in 0..<3 {
                    for r in 0..<rows { check(y[v * rows + r], row: r, weights: { rounded[$0] }, x: xs[v], "bf16dot level \(level) vector \(v)") }
                }
            }
        }
        // The data exercise the bound: rounding happened (a zero error everywhere would prove nothing).
        #expect(worst > 0, "\(type): every product exact")
    }

    @Test func otherTypesAreNotFused() {
        for type in GGMLType.supported where !Self.fused.contains(type) {
            #expect(qlora_ggml_fused(Int32(type.rawValue)) == 0, "\(type)")
        }
    }
}
