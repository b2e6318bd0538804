import SafeTensors

/// The precision of dequantized values: float32, or float32 rounded (nearest-even) to bf16 / fp16.
public enum DequantPrecision: String, Sendable, CaseIterable {
    case float32, bfloat16, float16

    /// Rounds a float32 to this precision, keeping the float32 layout.
    @inline(__always)
    public func round(_ x: Float) -> Float {
        switch self {
        case .float32: return x
        case .bfloat16: return HalfFloat.bfloat16ToFloat(HalfFloat.bfloat16FromFloat(x))
        case .float16: return HalfFloat.toFloat(HalfFloat.fromFloat(x))
        }
    }
}

/// A 16-bit output format.
public enum HalfPrecision: String, Sendable, CaseIterable {
    case bfloat16, float16

    @inline(__always)
    public func bits(_ x: Float) -> UInt16 {
        self == .bfloat16 ? HalfFloat.bfloat16FromFloat(x) : HalfFloat.fromFloat(x)
    }
}

/// A weight quantized to 4 bits (NF4 or FP4) the bitsandbytes way: packed nibbles (element 2i in the
/// high nibble), one absmax per block of `blocksize` flattened elements, either plain float32 or
/// double-quantized. Only the stored form is kept in memory (the 16-entry codebook and the 256-entry
/// dynamic map are shared constants): dequantization computes each block's scale (the reconstructed
/// absmax) on the fly, one multiply and one add per block, so resident bytes == stored bytes.
public struct QuantizedTensor: Sendable {
    public enum Absmax: Sendable, Equatable {
        case plain([Float])
        case doubleQuantized(DoubleQuantizedAbsmax)
    }

    public let quantType: QuantType
    public let shape: [Int]
    public let blocksize: Int
    /// The dtype the weight had before quantization (recorded in bitsandbytes' quant state).
    public let originalDType: DType
    /// /// (ceil(n/2))
    public let packed: [UInt8]
    public let absmax: Absmax

    /// Validates the sizes; throws `QuantError.shapeMismatch` naming `name` when they disagree.
    public init(quantType: QuantType, shape: [Int], blocksize: Int, originalDType: DType,
                packed: [UInt8], absmax: Absmax, name: String = "tensor") throws {
        try BlockwiseQuantizer.validate(blocksize: blocksize)
        let n = shape.reduce(1, *)
        guard n > 0 else { throw QuantError.emptyTensor(tensor: name) }
        guard packed.count == (n + 1) / 2 else {
            throw QuantError.shapeMismatch(tensor: name, expected: "\((n + 1) / 2) packed bytes for shape \(shape)",
                                           actual: "\(packed.count)")
        }
        let nb = BlockwiseQuantizer.blockCount(elements: n, blocksize: blocksize)
        switch absmax {
        case .plain(let values):
            guard values.count == nb else {
                throw QuantError.shapeMismatch(tensor: name, expected: "\(nb) absmax values", actual: "\(values.count)")
            }
        case .doubleQuantized(let dq):
            guard dq.codes.count == nb else {
                throw QuantError.shapeMismatch(tensor: name, expected: "\(nb) absmax codes", actual: "\(dq.codes.count)")
            }
            let nn = (nb + dq.nestedBlocksize - 1) / dq.nestedBlocksize
            guard dq.nestedBlocksize > 0, dq.nestedAbsmax.count == nn else {
                throw QuantError.shapeMismatch(tensor: name, expected: "\(nn) nested absmax values",
                                               actual: "\(dq.nestedAbsmax.count)")
            }
        }
        self.quantType = quantType
        self.shape = shape
        self.blocksize = blocksize
        self.originalDType = originalDType
        self.packed = packed
        self.absmax = absmax
    }

    /// Quantizes `count` = product(shape) elements of `input` (F32, BF16 or F16).
    public static func quantize(_ input: UnsafeRawPointer, dtype: DType, shape: [Int], quantType: QuantType = .nf4,
                                blocksize: Int = 64, doubleQuant: Bool = true, rounding: AbsmaxRounding = .cpuLUT,
                                threads: Int = 1, name: String = "tensor") throws -> QuantizedTensor {
        try BlockwiseQuantizer.validate(blocksize: blocksize)
        guard dtype == .F32 || dtype == .BF16 || dtype == .F16 else {
            throw QuantError.unsupportedDType(tensor: name, dtype: dtype.rawValue)
        }
        let n = shape.reduce(1, *)
        guard n > 0 else { throw QuantError.emptyTensor(tensor: name) }
        let nb = BlockwiseQuantizer.blockCount(elements: n, blocksize: blocksize)
        var absmax = [Float](repeating: 0, count: nb)
        let packed = [UInt8](unsafeUninitializedCapacity: (n + 1) / 2) { buffer, count in
            absmax.withUnsafeMutableBufferPointer { a in
                BlockwiseQuantizer.quantize(packed: buffer.baseAddress!, absmax: a.baseAddress!, input: input, dtype: dtype,
                                            count: n, blocksize: blocksize, codebook: quantType.codebook, threads: threads)
            }
            count = (n + 1) / 2
        }
        let stats: Absmax = doubleQuant
            ? .doubleQuantized(BlockwiseQuantizer.doubleQuantize(absmax: absmax, rounding: rounding)) : .plain(absmax)
        return try QuantizedTensor(quantType: quantType, shape: shape, blocksize: blocksize, originalDType: dtype,
                                   packed: packed, absmax: stats, name: name)
    }

    /// Convenience for float32 arrays.
    public static func quantize(_ values: [Float], shape: [Int], quantType: QuantType = .nf4, blocksize: Int = 64,
                                doubleQuant: Bool = true, rounding: AbsmaxRounding = .cpuLUT) throws -> QuantizedTensor {
        guard values.count == shape.reduce(1, *) else {
            throw QuantError.shapeMismatch(tensor: "tensor", expected: "\(shape.reduce(1, *)) values for shape \(shape)",
                                           actual: "\(values.count)")
        }
        return try values.withUnsafeBytes {
            try quantize($0.baseAddress!, dtype: .F32, shape: shape, quantType: quantType, blocksize: blocksize,
                         doubleQuant: doubleQuant, rounding: rounding)
        }
    }

    // MARK: - Sizes and accounting

    public var count: Int { shape.reduce(1, *) }
    public var blockCount: Int {
        switch absmax {
        case .plain(let values): return values.count
        case .doubleQuantized(let dq): return dq.codes.count
        }
    }
    /// Columns of the 2-D view [rows, columns]: the last dimension (a 1-D tensor is one row).
    public var columns: Int { shape.last ?? 1 }
    public var rows: Int { count / columns }
    public var isDoubleQuantized: Bool { if case .doubleQuantized = absmax { return true } else { return false } }

    /// Bytes of the quantized data as stored: packed nibbles + absmax (u8 codes + nested float32 absmax +
    /// float32 offset, or float32 absmax). The shared 16/256-entry code tables are not counted.
    public var storageBytes: Int {
        switch absmax {
        case .plain(let values): return packed.count + 4 * values.count
        case .doubleQuantized(let dq): return packed.count + dq.codes.count + 4 * dq.nestedAbsmax.count + 4
        }
    }

    /// Everything this tensor holds in memory: its stored form, nothing precomputed (block scales are
    /// computed during dequantization).
    public var residentBytes: Int { storageBytes }

    /// The nominal storage cost per parameter: 4 + 8/blocksize + 32/(blocksize * 256) with double
    /// quantization (4.127 at blocksize 64), 4 + 32/blocksize without (4.5 at 64).
    public static func bitsPerParameter(blocksize: Int, doubleQuant: Bool, nestedBlocksize: Int = 256) -> Double {
        let b = Double(blocksize)
        return doubleQuant ? 4 + 8 / b + 32 / (b * Double(nestedBlocksize)) : 4 + 32 / b
    }

    /// The code value of each nibble.
    public var codeValues: [Float] { quantType.codebook.values }
}
