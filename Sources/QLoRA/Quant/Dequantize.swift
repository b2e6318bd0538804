import CQLoRAKernels
import SafeTensors

// Dequantization of a QuantizedTensor into float32, bf16/fp16 bits, or bf16/fp16-rounded float32.
// w = code[nibble] * scale(i / blocksize) (one float32 multiply), then round-to-nearest-even. The scale is
// the plain float32 absmax, or for double quantization fp32(fp32(dynamic_map[q8] * nested_absmax) + offset),
// computed per block from the stored statistics (nothing is precomputed: resident bytes == stored bytes).
// Rows are rows of the 2-D view [rows, columns]; blocks are flat, so a row range may start and end
// inside a block (and, for odd columns, inside a byte).
//
// Fast path: per block, the scale is computed, then a 16-entry table `code[c] * scale` (already rounded
// to the output type) is built once; the hot loop is byte -> two table loads -> two stores. The table entries are the very
// same single products, so the result is bit-identical to the reference. The byte loop is C
// (Sources/CQLoRAKernels: AVX-512F / AVX2 / scalar chosen at run time): portable Swift reached only
// 2.6 G elements/s here (no variable shuffles in Swift SIMD), the AVX2 kernel ~2-3x that.
extension QuantizedTensor {
    /// Rows `rows` as float32 (or float32 holding bf16/fp16-rounded values) into `output` /// (rows.count, columns).
    public func dequantize(rows: Range<Int>, into output: UnsafeMutablePointer<Float>, roundedTo precision: DequantPrecision = .float32) {
        dequantize(elements: (rows.lowerBound * columns)..<(rows.upperBound * columns), into: output, roundedTo: precision)
    }

    /// Rows `rows` as bf16 or fp16 bit patterns into `output` /// (rows.count, columns).
    public func dequantize(rows: Range<Int>, into output: UnsafeMutablePointer<UInt16>, as format: HalfPrecision) {
        dequantize(elements: (rows.lowerBound * columns)..<(rows.upperBound * columns), into: output, as: format)
    }

    /// The window rows x columns of the 2-D view as bf16 bits (nearest-even) into `output`: row r goes to
    /// output + (r - rows.lowerBound) * ld. What the bf16 GEMM stages (BF16Gemm).
    public func dequantizeBFloat16(rows: Range<Int>, columns: Range<Int>, into output: UnsafeMutablePointer<UInt16>, ld: Int) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= self.rows && columns.lowerBound >= 0 && columns.upperBound <= self.columns,
                     "window out of bounds")
        let width = self.columns
        if columns.count == width && ld == width {   // whole rows: one flat range
            dequantize(rows: rows, into: output, as: .bfloat16)
            return
        }
        decode(segments: rows.count, { i in
            let start = (rows.lowerBound + i) * width
            return ((start + columns.lowerBound)..<(start + columns.upperBound), output + i * ld)
        }, bulk: bulkBFloat16, makeTable: bfloat16Table)
    }

    /// Flat elements `elements` as float32 (optionally rounded) into `output` /// (elements.count).
    public func dequantize(elements: Range<Int>, into output: UnsafeMutablePointer<Float>, roundedTo precision: DequantPrecision = .float32) {
        precondition(elements.lowerBound >= 0 && elements.upperBound <= count, "element range out of bounds")
        let codes = codeValues
        switch precision {
        case .float32:
            decode(elements: elements, into: output, bulk: bulkFloat(rounding: 0)) { table, scale in
                for c in 0..<16 { table[c] = codes[c] * scale }
            }
        case .bfloat16:
            decode(elements: elements, into: output, bulk: bulkFloat(rounding: 1)) { table, scale in
                for c in 0..<16 { table[c] = HalfFloat.bfloat16ToFloat(HalfFloat.bfloat16FromFloat(codes[c] * scale)) }
            }
        case .float16:
            decode(elements: elements, into: output) { table, scale in
                for c in 0..<16 { table[c] = HalfFloat.toFloat(HalfFloat.fromFloat(codes[c] * scale)) }
            }
        }
    }

    /// Flat elements `elements` as bf16 / fp16 bits into `output` /// (elements.count).
    public func dequantize(elements: Range<Int>, into output: UnsafeMutablePointer<UInt16>, as format: HalfPrecision) {
        precondition(elements.lowerBound >= 0 && elements.upperBound <= count, "element range out of bounds")
        let codes = codeValues
        switch format {
        case .bfloat16:
            decode(elements: elements, into: output, bulk: bulkBFloat16, makeTable: bfloat16Table)
        case .float16:
            decode(elements: elements, into: output) { table, scale in
                for c in 0..<16 { table[c] = HalfFloat.fromFloat(codes[c] * scale) }
            }
        }
    }

    /// The C whole-block kernel for float32 outputs (rounding 0: none, 1: bf16).
    private func bulkFloat(rounding: Int32) -> BulkDecode<Float> {
        let codes = codeValues, bb = blocksize / 2
        return { out, bytes, scales, first, blocks in
            codes.withUnsafeBufferPointer { qlora_dequant4_blocks_f32(out, bytes, scales, first, blocks, bb, $0.baseAddress!, rounding) }
        }
    }

    /// The C whole-block kernel for bf16 bits.
    private var bulkBFloat16: BulkDecode<UInt16> {
        let codes = codeValues, bb = blocksize / 2
        return { out, bytes, scales, first, blocks in
            codes.withUnsafeBufferPointer { qlora_dequant4_blocks_bf16(out, bytes, scales, first, blocks, bb, $0.baseAddress!) }
        }
    }

    /// The per-block table of bf16 bits (partial blocks).
    private var bfloat16Table: (UnsafeMutablePointer<UInt16>, Float) -> Void {
        let codes = codeValues
        return { table, scale in
            for c in 0..<16 { table[c] = HalfFloat.bfloat16FromFloat(codes[c] * scale) }
        }
    }

    /// A C whole-block kernel: (output at the first block, its packed bytes, the scales, first block, block count).
    private typealias BulkDecode<T> = (UnsafeMutablePointer<T>, UnsafePointer<UInt8>, UnsafePointer<qlora_block_scales>, Int, Int) -> Void

    /// Every block's scale (the reconstructed absmax), computed from the stored statistics as the fast
    /// path does (allocates; for tests and inspection).
    public func blockScales() -> [Float] {
        [Float](unsafeUninitializedCapacity: blockCount) { buffer, initialized in
            withBlockScales { qlora_block_scales_f32(buffer.baseAddress!, $0, 0, blockCount) }
            initialized = blockCount
        }
    }

    /// The stored statistics as the C kernels read them, valid inside `body`.
    @inline(__always)
    func withBlockScales<R>(_ body: (UnsafePointer<qlora_block_scales>) -> R) -> R {
        switch absmax {
        case .plain(let values):
            return values.withUnsafeBufferPointer { absmax in
                var scales = qlora_block_scales(absmax: absmax.baseAddress, codes: nil, nested_absmax: nil, dynamic_map: nil,
                                                offset: 0, nested_blocksize: 0)
                return body(&scales)
            }
        case .doubleQuantized(let dq):
            return dq.codes.withUnsafeBufferPointer { codes in
                dq.nestedAbsmax.withUnsafeBufferPointer { nested in
                    DynamicMap8.values.withUnsafeBufferPointer { map in
                        var scales = qlora_block_scales(absmax: nil, codes: codes.baseAddress, nested_absmax: nested.baseAddress,
                                                        dynamic_map: map.baseAddress, offset: dq.offset,
                                                        nested_blocksize: dq.nestedBlocksize)
                        return body(&scales)
                    }
                }
            }
        }
    }

    /// The whole tensor as float32 (convenience; allocates).
    public func dequantized(roundedTo precision: DequantPrecision = .float32) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            dequantize(elements: 0..<count, into: buffer.baseAddress!, roundedTo: precision)
            initialized = count
        }
    }

    /// The table-driven loop shared by every output type.
    @inline(__always)
    private func decode<T>(elements: Range<Int>, into output: UnsafeMutablePointer<T>,
                           bulk: BulkDecode<T>? = nil,
                           makeTable: (UnsafeMutablePointer<T>, Float) -> Void) {
        decode(segments: 1, { _ in (elements, output) }, bulk: bulk, makeTable: makeTable)
    }

    /// The same over several flat ranges (the rows of a 2-D window), each to its own output, in one pass
    /// over the storage setup.
    @inline(__always)
    private func decode<T>(segments: Int, _ segment: (Int) -> (Range<Int>, UnsafeMutablePointer<T>),
                           bulk: BulkDecode<T>? = nil,
                           makeTable: (UnsafeMutablePointer<T>, Float) -> Void) {
        let pairs: (UnsafeMutablePointer<T>, UnsafePointer<UInt8>, Int, UnsafeMutablePointer<T>) -> Void
        if T.self == Float.self {
            pairs = { out, bytes, count, table in
                qlora_nibbles_to_f32(UnsafeMutableRawPointer(out).assumingMemoryBound(to: Float.self), bytes, count,
                                     UnsafeRawPointer(table).assumingMemoryBound(to: Float.self))
            }
        } else {
            pairs = { out, bytes, count, table in
                qlora_nibbles_to_u16(UnsafeMutableRawPointer(out).assumingMemoryBound(to: UInt16.self), bytes, count,
                                     UnsafeRawPointer(table).assumingMemoryBound(to: UInt16.self))
            }
        }
        let bs = blocksize, blockCount = blockCount
        packed.withUnsafeBufferPointer { packedBuffer in
            withBlockScales { scales in
                withUnsafeTemporaryAllocation(of: T.self, capacity: 16) { tableBuffer in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 64) { scaleBuffer in
                    let table = tableBuffer.baseAddress!
                    var scalesFirst = 0, scalesCount = 0    // scaleBuffer holds blocks scalesFirst ..< + scalesCount
                    let bytes = packedBuffer.baseAddress!
                    for index in 0..<segments {
                        let (elements, output) = segment(index)
                        var e = elements.lowerBound
                        var out = output
                        let end = elements.upperBound
                        while e < end {
                            if let bulk, e % bs == 0, end - e >= bs {    // a run of whole blocks: table built in registers
                                let blocks = (end - e) / bs
                                bulk(out, bytes + (e >> 1), scales, e / bs, blocks)
                                out += blocks * bs
                                e += blocks * bs
                                continue
                            }
                            let block = e / bs
                            let blockEnd = min(end, (block + 1) * bs)
                            if block - scalesFirst >= scalesCount || block < scalesFirst {   // scales 64 blocks at a time
                                scalesFirst = block
                                scalesCount = min(scaleBuffer.count, blockCount - block)
                                qlora_block_scales_f32(scaleBuffer.baseAddress!, scales, block, scalesCount)
                            }
                            makeTable(table, scaleBuffer[block - scalesFirst])
                            if e & 1 == 1 {                 // odd start: the low nibble of a byte
                                out[0] = table[Int(bytes[e >> 1] & 0x0f)]
                                out += 1
                                e += 1
                            }
                            let byteCount = (blockEnd - e) >> 1
                            pairs(out, bytes + (e >> 1), byteCount, table)   // SIMD table decode (C, run-time dispatch)
                            out += 2 * byteCount
                            e += 2 * byteCount
                            if e < blockEnd {               // odd end: the high nibble of a byte
                                out[0] = table[Int(bytes[e >> 1] >> 4)]
                                out += 1
                                e += 1
                            }
                        }
                    }
                }
                }
            }
        }
    }

    // MARK: - Naive reference twins (one element at a time, scales recomputed from storage)

    /// The reconstructed absmax of `block`, computed from the stored statistics.
    public func referenceScale(block: Int) -> Float {
        switch absmax {
        case .plain(let values): return values[block]
        case .doubleQuantized(let dq): return dq.reconstructed(block)
        }
    }

    /// The float32 value of flat element i: code[nibble(i)] * scale(i / blocksize).
    public func referenceValue(_ i: Int) -> Float {
        let byte = packed[i / 2]
        let nibble = i % 2 == 0 ? byte >> 4 : byte & 0x0f
        return codeValues[Int(nibble)] * referenceScale(block: i / blocksize)
    }

    public func dequantizeReference(rows: Range<Int>, into output: UnsafeMutablePointer<Float>, roundedTo precision: DequantPrecision = .float32) {
        for (k, i) in ((rows.lowerBound * columns)..<(rows.upperBound * columns)).enumerated() {
            output[k] = precision.round(referenceValue(i))
        }
    }

    public func dequantizeReference(rows: Range<Int>, into output: UnsafeMutablePointer<UInt16>, as format: HalfPrecision) {
        for (k, i) in ((rows.lowerBound * columns)..<(rows.upperBound * columns)).enumerated() {
            output[k] = format.bits(referenceValue(i))
        }
    }
}

/// The SIMD level of the C dequantization kernels (chosen at run time from the CPU).
public enum DequantKernels {
    /// 0 = scalar, 1 = AVX2, 2 = AVX-512F.
    public static var level: Int { Int(qlora_kernels_level()) }
    public static var bestLevel: Int { Int(qlora_kernels_best_level()) }
    public static var name: String { ["scalar", "AVX2", "AVX-512F"][level] }

    /// Forces a level (clamped to what the CPU supports; for tests and benchmarks). Returns the level in use.
    @discardableResult
    public static func setLevel(_ level: Int) -> Int { Int(qlora_kernels_set_level(Int32(level))) }
}
