import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// Every reference case of Fixtures/nf4 (bitsandbytes 0.50.2, CPU) reproduced bit for bit.
@Suite("Quant reference cases")
struct QuantReferenceCaseTests {
    static let cases = QuantFixtures.caseNames

    struct Case {
        let name: String
        let file: SafeTensorsFile
        let shape: [Int]
        let quantType: QuantType
        let dtype: DType

        init(_ name: String) throws {
            self.name = name
            file = try QuantFixtures.open("\(name).safetensors")
            let info = QuantFixtures.caseInfo(name)
            shape = info["shape"] as! [Int]
            let state = info["bitsandbytes_quant_state_json"] as! [String: Any]
            quantType = QuantType(rawValue: state["quant_type"] as! String)!
            dtype = try file.info("input").dtype
        }

        func quantize(doubleQuant: Bool, rounding: AbsmaxRounding = .cpuLUT, threads: Int = 1) throws -> QuantizedTensor {
            let raw = try file.rawBytes("input")
            return try QuantizedTensor.quantize(raw.baseAddress!, dtype: dtype, shape: shape, quantType: quantType,
                                                doubleQuant: doubleQuant, rounding: rounding, threads: threads)
        }
    }

    static func unpack(_ packed: [UInt8], count n: Int) -> [UInt8] {
        (0..<n).map { $0 % 2 == 0 ? packed[$0 / 2] >> 4 : packed[$0 / 2] & 0x0f }
    }

    @Test(arguments: cases)
    func codesPackedAndPlainAbsmax(name: String) throws {
        let c = try Case(name)
        let q = try c.quantize(doubleQuant: false)
        #expect(mismatches(q.packed, try QuantFixtures.bytes(c.file, "packed")) == nil, "packed")
        #expect(mismatches(Self.unpack(q.packed, count: q.count), try QuantFixtures.bytes(c.file, "codes")) == nil, "codes")
        guard case .plain(let absmax) = q.absmax else { Issue.record("expected plain absmax"); return }
        #expect(bitMismatches(absmax, try c.file.floats("absmax")) == nil, "absmax")
        #expect(bitMismatches(q.dequantized(), try c.file.floats("dequant_plain_f32")) == nil, "dequant_plain_f32")
    }

    @Test(arguments: cases)
    func quantizationDoesNotDependOnThreads(name: String) throws {
        let c = try Case(name)
        let one = try c.quantize(doubleQuant: true, threads: 1)
        let two = try c.quantize(doubleQuant: true, threads: 2)
        #expect(one.packed == two.packed && one.absmax == two.absmax)
    }

    @Test(arguments: cases)
    func doubleQuantBothRoundings(name: String) throws {
        let c = try Case(name)
        let nested = try c.file.floats("dq_nested_absmax")
        let offset = try c.file.floats("dq_offset")[0]
        for (rounding, key) in [(AbsmaxRounding.cpuLUT, "dq_absmax_q8"), (.nearest, "dq_absmax_q8_nearest")] {
            let q = try c.quantize(doubleQuant: true, rounding: rounding)
            guard case .doubleQuantized(let dq) = q.absmax else { Issue.record("expected double quant"); return }
            #expect(mismatches(dq.codes, try QuantFixtures.bytes(c.file, key)) == nil, "\(key)")
            #expect(bitMismatches(dq.nestedAbsmax, nested) == nil, "nested absmax (\(rounding))")
            #expect(dq.offset.bitPattern == offset.bitPattern, "offset \(dq.offset) vs \(offset)")
            #expect(dq.nestedBlocksize == 256)
        }
        let info = QuantFixtures.caseInfo(name)
        #expect(offset.bitPattern == UInt32((info["offset_hex"] as! String).dropFirst(2), radix: 16)!)
    }

    @Test(arguments: cases)
    func dequantAllOutputsFastAndReference(name: String) throws {
        let c = try Case(name)
        let q = try c.quantize(doubleQuant: true)
        #expect(bitMismatches(q.blockScales(), try c.file.floats("dq_absmax_rec")) == nil, "absmax_rec")
        let n = q.count
        let expectF32 = try c.file.floats("dequant_f32")
        var fast = [Float](repeating: .nan, count: n), slow = [Float](repeating: .nan, count: n)
        q.dequantize(rows: 0..<q.rows, into: &fast)
        q.dequantizeReference(rows: 0..<q.rows, into: &slow)
        #expect(bitMismatches(fast, expectF32) == nil, "dequant_f32 fast")
        #expect(bitMismatches(slow, expectF32) == nil, "dequant_f32 reference")
        for (format, key) in [(HalfPrecision.bfloat16, "dequant_bf16"), (.float16, "dequant_f16")] {
            let expected = try QuantFixtures.uint16s(c.file, key)
            var fastBits = [UInt16](repeating: 0xffff, count: n), slowBits = [UInt16](repeating: 0xffff, count: n)
            q.dequantize(rows: 0..<q.rows, into: &fastBits, as: format)
            q.dequantizeReference(rows: 0..<q.rows, into: &slowBits, as: format)
            #expect(mismatches(fastBits, expected) == nil, "\(key) fast")
            #expect(mismatches(slowBits, expected) == nil, "\(key) reference")
            // bf16/fp16-rounded values held in float32 (the sgemm compute buffer)
            let precision: DequantPrecision = format == .bfloat16 ? .bfloat16 : .float16
            var rounded = [Float](repeating: .nan, count: n)
            q.dequantize(rows: 0..<q.rows, into: &rounded, roundedTo: precision)
            let widened = expected.map { format == .bfloat16 ? HalfFloat.bfloat16ToFloat($0) : HalfFloat.toFloat($0) }
            #expect(bitMismatches(rounded, widened) == nil, "\(key) in float32 layout")
        }
    }
}
