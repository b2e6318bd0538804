import CQLoRAKernels
import SafeTensors

/// A frozen base weight W (out, in) that can write any of its row ranges as fp32 values into a tile
/// buffer. Quantized weights dequantize; 16-bit dense weights widen; fp32 dense weights expose their
/// storage directly so the GEMM needs no tile at all.
public protocol FrozenWeight: AnyObject {
    var outFeatures: Int { get }
    var inFeatures: Int { get }
    /// Bytes this weight occupies in memory (codes + scales for quantized ones).
    var storageBytes: Int { get }
    /// Whether it is stored in blocks of codes (NF4, GGUF's Q-types): counted as quantized weights.
    var isQuantized: Bool { get }
    /// fp32 storage to use in place, if the weight has it and no rounding is asked for.
    var denseStorage: UnsafePointer<Float>? { get }
    /// Writes rows [rows) of W as (rows.count, in) fp32 values, rounded to `precision`.
    func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision)
    /// bf16 storage (out, in) the bf16 GEMM can pack from in place, if the weight is stored in bf16.
    var bfloat16Storage: UnsafePointer<UInt16>? { get }
    /// Writes the window W[rows, columns] as bf16 bits (nearest-even) into `out`, row r at
    /// out + (r - rows.lowerBound) * ld, with ld >= columns.count rounded up to even (an odd width gets
    /// one zero appended). What the bf16 GEMM stages before packing (Kernels/BF16Gemm.swift).
    func writeBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int)
    /// Whether `matrixVector` can run for `precision`.
    func hasMatrixVector(precision: ComputePrecision) -> Bool
    /// y[r - rows.lowerBound] = W[r] . x (fp32 x) for the rows `rows`, read straight from storage with
    /// the weights `writeTile` would write for `precision` (CQLoRAKernels/include/Gemv.h): decoding one
    /// token. Only where `hasMatrixVector(precision:)`.
    func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision)
    /// The same with bf16 operands for the bf16 kernel (`x`: bf16 pairs, zero-padded to a multiple of 32
    /// elements; `level`: GemmKernel.level), weights rounded to bf16; `vectors` vectors at x + v * ldx
    /// (words) into y + v * ldy, each bit-identical to a call of its own, W read once for all of them.
    /// Where `hasMatrixVector(precision: .bf16)`.
    func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                          rows: Range<Int>, level: Int32)
}

extension FrozenWeight {
    public var isQuantized: Bool { false }

    /// bf16 storage has a kernel (its values are exact in fp32 and in bf16); fp16 rounding is left to tiles.
    public func hasMatrixVector(precision: ComputePrecision) -> Bool { bfloat16Storage != nil && precision != .fp16 }

    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision) {
        defaultMatrixVector(y: y, x: x, rows: rows)
    }

    public func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                 rows: Range<Int>, level: Int32) {
        defaultMatrixVectorBF16(y: y, ldy: ldy, x: x, ldx: ldx, vectors: vectors, rows: rows, level: level)
    }

    public func writeBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int) {
        defaultWriteBFloat16(rows: rows, columns: columns, into: out, ld: ld)
    }

    /// The bf16-storage kernels behind the defaults, callable by a type that overrides them.
    public func defaultMatrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>) {
        guard let bits = bfloat16Storage else { preconditionFailure("\(Self.self) has no matrix-vector kernel") }
        qlora_gemv_bf16(qlora_kernels_level(), y, x, rows.count, inFeatures, bits + rows.lowerBound * inFeatures, inFeatures)
    }

    public func defaultMatrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                        rows: Range<Int>, level: Int32) {
        guard let bits = bfloat16Storage else { preconditionFailure("\(Self.self) has no matrix-vector kernel") }
        let start = bits + rows.lowerBound * inFeatures
        if vectors == 1 {
            qlora_gemv_bf16_bf16dot(level, y, x, rows.count, inFeatures, start, inFeatures)
        } else {
            qlora_gemv_bf16_bf16dot_multi(level, y, ldy, x, ldx, vectors, rows.count, inFeatures, start, inFeatures)
        }
    }

    public var bfloat16Storage: UnsafePointer<UInt16>? { nil }

    /// From bf16 or fp32 storage; weights with neither (quantized ones) implement their own.
    public func defaultWriteBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int) {
        if let bits = bfloat16Storage {
            for (i, r) in rows.enumerated() {
                (out + i * ld).update(from: bits + r * inFeatures + columns.lowerBound, count: columns.count)
                if columns.count & 1 == 1 { out[i * ld + columns.count] = 0 }
            }
        } else if let values = denseStorage {
            // Rounding gives the same bits at every level: use the fastest.
            qlora_bf16_from_f32_rows(GemmKernel.fastestLevel, out, ld, values + rows.lowerBound * inFeatures + columns.lowerBound, inFeatures,
                                     rows.count, columns.count)
        } else {
            preconditionFailure("\(Self.self) has no dense storage and must implement writeBFloat16")
        }
    }
}

/// A dense weight kept in fp32.
public final class DenseFloatWeight: FrozenWeight {
    public let outFeatures: Int
    public let inFeatures: Int
    public let values: UnsafeMutableBufferPointer<Float>  /// (out, in)

    public init(outFeatures: Int, inFeatures: Int, values: [Float]) {
        precondition(values.count == outFeatures * inFeatures)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.values = .allocate(capacity: values.count)
        _ = self.values.initialize(from: values)
    }

    deinit { values.deallocate() }

    public var storageBytes: Int { values.count * 4 }
    public var denseStorage: UnsafePointer<Float>? { UnsafePointer(values.baseAddress) }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        let count = rows.count * inFeatures
        tile.update(from: values.baseAddress! + rows.lowerBound * inFeatures, count: count)
        precision.round(tile, count: count)
    }

    /// fp32 compute only (a rounded precision goes through tiles).
    public func hasMatrixVector(precision: ComputePrecision) -> Bool { precision == .fp32 }

    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision) {
        qlora_gemv_f32(qlora_kernels_level(), y, x, rows.count, inFeatures, values.baseAddress! + rows.lowerBound * inFeatures, inFeatures)
    }
}

/// A dense weight kept in bf16 (LoRA on a 16-bit base): half the memory, widened a tile at a time.
public final class DenseBFloat16Weight: FrozenWeight {
    public let outFeatures: Int
    public let inFeatures: Int
    public let bits: UnsafeMutableBufferPointer<UInt16>  /// (out, in) bf16

    public init(outFeatures: Int, inFeatures: Int, floats: [Float]) {
        precondition(floats.count == outFeatures * inFeatures)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        bits = .allocate(capacity: floats.count)
        for i in floats.indices { bits[i] = HalfFloat.bfloat16FromFloat(floats[i]) }
    }

    deinit { bits.deallocate() }

    public var storageBytes: Int { bits.count * 2 }
    public var denseStorage: UnsafePointer<Float>? { nil }
    public var bfloat16Storage: UnsafePointer<UInt16>? { UnsafePointer(bits.baseAddress) }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        let start = rows.lowerBound * inFeatures
        let count = rows.count * inFeatures
        let source = bits.baseAddress! + start
        let out = UnsafeMutableRawPointer(tile).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { out[i] = UInt32(source[i]) << 16 }
        if precision == .fp16 { precision.round(tile, count: count) }
    }
}
