import Foundation
import SafeTensors
import Testing
@testable import QLoRA

@Suite("Quant dequant fast vs reference")
struct QuantDequantTests {
    /// Random shapes (in_features not a multiple of 64, odd sizes), random row ranges that start and end mid-block.
    @Test(arguments: [(7, 90, 64), (33, 100, 32), (5, 67, 128), (64, 64, 64), (3, 1001, 256), (17, 45, 64), (1, 4099, 4096)])
    func fastEqualsReferenceOnRowRanges(rows: Int, columns: Int, blocksize: Int) throws {
        var rng = SeededGenerator(seed: UInt64(rows * 100_003 + columns * 7 + blocksize))
        let values = (0..<(rows * columns)).map { _ in Float.random(in: -0.2...0.2, using: &rng) }
        for quantType in QuantType.allCases {
            for doubleQuant in [true, false] {
                let q = try QuantizedTensor.quantize(values, shape: [rows, columns], quantType: quantType,
                                                     blocksize: blocksize, doubleQuant: doubleQuant)
                var ranges = [0..<rows]
                for _ in 0..<6 {
                    let a = Int.random(in: 0..<rows, using: &rng), b = Int.random(in: 0...rows, using: &rng)
                    ranges.append(min(a, b)..<max(a, b))
                }
                for range in ranges {
                    let m = range.count * columns
                    for precision in DequantPrecision.allCases {
                        var fast = [Float](repeating: .nan, count: m + 1), slow = [Float](repeating: .nan, count: m + 1)
                        q.dequantize(rows: range, into: &fast, roundedTo: precision)
                        q.dequantizeReference(rows: range, into: &slow, roundedTo: precision)
                        #expect(bitMismatches(fast, slow) == nil, "\(quantType) dq=\(doubleQuant) rows \(range) \(precision)")
                        #expect(fast[m].isNaN, "wrote past the end")
                    }
                    for format in HalfPrecision.allCases {
                        var fast = [UInt16](repeating: 0xabcd, count: m + 1), slow = [UInt16](repeating: 0xabcd, count: m + 1)
                        q.dequantize(rows: range, into: &fast, as: format)
                        q.dequantizeReference(rows: range, into: &slow, as: format)
                        #expect(mismatches(fast, slow) == nil, "\(quantType) dq=\(doubleQuant) rows \(range) \(format)")
                    }
                }
            }
        }
    }

    /// Every SIMD level this CPU has (scalar, AVX2, AVX-512F) against the reference, incl. blocksize 32
    /// (16-byte blocks) and bf16/f16 outputs. Levels give identical bits, so parallel tests are unaffected.
    @Test func everyKernelLevelEqualsReference() throws {
        var rng = SeededGenerator(seed: 7)
        let values = (0..<(40 * 200)).map { _ in Float.random(in: -3...3, using: &rng) }
        defer { DequantKernels.setLevel(DequantKernels.bestLevel) }
        for blocksize in [32, 64, 256] {
            let q = try QuantizedTensor.quantize(values, shape: [40, 200], blocksize: blocksize)
            var slow = [Float](repeating: 0, count: values.count), slowBits = [UInt16](repeating: 0, count: values.count)
            for level in 0...DequantKernels.bestLevel {
                #expect(DequantKernels.setLevel(level) == level)
                for precision in DequantPrecision.allCases {
                    var fast = [Float](repeating: .nan, count: values.count)
                    q.dequantize(rows: 3..<40, into: &fast, roundedTo: precision)
                    q.dequantizeReference(rows: 3..<40, into: &slow, roundedTo: precision)
                    #expect(bitMismatches(Array(fast[0..<(37 * 200)]), Array(slow[0..<(37 * 200)])) == nil,
                            "level \(level) blocksize \(blocksize) \(precision)")
                }
                for format in HalfPrecision.allCases {
                    var fast = [UInt16](repeating: 0, count: values.count)
                    q.dequantize(rows: 0..<40, into: &fast, as: format)
                    q.dequantizeReference(rows: 0..<40, into: &slowBits, as: format)
                    #expect(mismatches(fast, slowBits) == nil, "level \(level) blocksize \(blocksize) \(format)")
                }
            }
        }
    }

    @Test func oddElementRangesInsideBytes() throws {
        var rng = SeededGenerator(seed: 99)
        let values = (0..<301).map { _ in Float.random(in: -1...1, using: &rng) }
        let q = try QuantizedTensor.quantize(values, shape: [301])
        for _ in 0..<50 {
            let a = Int.random(in: 0...301, using: &rng), b = Int.random(in: 0...301, using: &rng)
            let range = min(a, b)..<max(a, b)
            var fast = [Float](repeating: .nan, count: range.count)
            q.dequantize(elements: range, into: &fast)
            let slow = range.map { q.referenceValue($0) }
            #expect(bitMismatches(fast, slow) == nil, "elements \(range)")
        }
    }

    @Test func quantizeRejectsBadInput() throws {
        let values = [Float](repeating: 1, count: 128)
        for bad in [0, 16, 48, 100, 8192] {
            #expect(throws: QuantError.badBlocksize(bad)) {
                try QuantizedTensor.quantize(values, shape: [128], blocksize: bad)
            }
        }
        let ints = [Int32](repeating: 0, count: 4)
        #expect(throws: QuantError.unsupportedDType(tensor: "w", dtype: "I32")) {
            try ints.withUnsafeBytes { try QuantizedTensor.quantize($0.baseAddress!, dtype: .I32, shape: [4], name: "w") }
        }
        #expect(throws: QuantError.shapeMismatch(tensor: "w", expected: "64 packed bytes for shape [128]", actual: "63")) {
            try QuantizedTensor(quantType: .nf4, shape: [128], blocksize: 64, originalDType: .F32,
                                packed: [UInt8](repeating: 0, count: 63), absmax: .plain([1, 1]), name: "w")
        }
        #expect(throws: QuantError.shapeMismatch(tensor: "w", expected: "2 absmax values", actual: "3")) {
            try QuantizedTensor(quantType: .nf4, shape: [128], blocksize: 64, originalDType: .F32,
                                packed: [UInt8](repeating: 0, count: 64), absmax: .plain([1, 1, 1]), name: "w")
        }
    }

    /// Double-quantized statistics where a fused multiply-add would change the scale of many blocks: the
    /// fast path (every SIMD level, row ranges starting inside a nested block, nested block sizes 256 and 3)
    /// must round the product and the sum separately, as the reference and bitsandbytes do.
    @Test(arguments: [256, 3])
    func doubleQuantScalesComputedOnTheFlyWithoutFMA(nestedBlocksize: Int) throws {
        let rows = 70, columns = 640, blocksize = 64
        let blocks = rows * columns / blocksize
        var rng = SeededGenerator(seed: UInt64(nestedBlocksize))
        let packed = (0..<(rows * columns / 2)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let codes = (0..<blocks).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let nested = (0..<((blocks + nestedBlocksize - 1) / nestedBlocksize)).map { _ in Float.random(in: 0.01...3, using: &rng) }
        let offset = Float.random(in: 0.01...0.5, using: &rng)
        let dq = DoubleQuantizedAbsmax(codes: codes, nestedAbsmax: nested, offset: offset, nestedBlocksize: nestedBlocksize)
        let q = try QuantizedTensor(quantType: .nf4, shape: [rows, columns], blocksize: blocksize, originalDType: .F32,
                                    packed: packed, absmax: .doubleQuantized(dq))
        let fused = (0..<blocks).filter { b in
            offset.addingProduct(DynamicMap8.values[Int(codes[b])], nested[b / nestedBlocksize]).bitPattern != dq.reconstructed(b).bitPattern
        }
        #expect(fused.count > blocks / 10, "the data must tell a fused multiply-add apart (\(fused.count) of \(blocks) blocks)")
        #expect(bitMismatches(q.blockScales(), (0..<blocks).map { dq.reconstructed($0) }) == nil, "blockScales()")
        #expect(q.residentBytes == q.storageBytes)
        defer { DequantKernels.setLevel(DequantKernels.bestLevel) }
        for level in 0...DequantKernels.bestLevel {
            #expect(DequantKernels.setLevel(level) == level)
            for range in [0..<rows, 13..<61, 27..<28] {
                let m = range.count * columns
                for precision in DequantPrecision.allCases {
                    var fast = [Float](repeating: .nan, count: m), slow = [Float](repeating: .nan, count: m)
                    q.dequantize(rows: range, into: &fast, roundedTo: precision)
                    q.dequantizeReference(rows: range, into: &slow, roundedTo: precision)
                    #expect(bitMismatches(fast, slow) == nil, "level \(level) rows \(range) \(precision)")
                }
                for format in HalfPrecision.allCases {
                    var fast = [UInt16](repeating: 0, count: m), slow = [UInt16](repeating: 1, count: m)
                    q.dequantize(rows: range, into: &fast, as: format)
                    q.dequantizeReference(rows: range, into: &slow, as: format)
                    #expect(mismatches(fast, slow) == nil, "level \(level) rows \(range) \(format)")
                }
            }
        }
    }

    @Test func byteAccounting() throws {
        let values = (0..<(96 * 264)).map { Float($0 % 97) / 97 - 0.5 }
        let q = try QuantizedTensor.quantize(values, shape: [96, 264])
        // 25344 elements: 12672 packed bytes, 396 absmax codes, 2 nested absmax, 1 offset
        #expect(q.storageBytes == 12672 + 396 + 8 + 4)
        #expect(q.residentBytes == q.storageBytes, "the block scales are computed on the fly, not held")
        let plain = try QuantizedTensor.quantize(values, shape: [96, 264], doubleQuant: false)
        #expect(plain.storageBytes == 12672 + 396 * 4)
        #expect(plain.residentBytes == plain.storageBytes)
    }
}
