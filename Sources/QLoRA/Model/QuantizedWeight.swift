/// How to quantize dense linears on load (QLoRA): bitsandbytes' `BitsAndBytesConfig` choices.
public struct QuantizationOptions: Sendable, Equatable {
    public var quantType: QuantType
    public var blocksize: Int
    public var doubleQuant: Bool
    public var rounding: AbsmaxRounding

    public init(quantType: QuantType = .nf4, blocksize: Int = 64, doubleQuant: Bool = true, rounding: AbsmaxRounding = .cpuLUT) {
        self.quantType = quantType
        self.blocksize = blocksize
        self.doubleQuant = doubleQuant
        self.rounding = rounding
    }
}

/// A 4-bit base weight as the model uses it: dequantized one tile of rows at a time into the compute buffer.
public final class QuantizedWeight: FrozenWeight {
    public let tensor: QuantizedTensor

    public init(_ tensor: QuantizedTensor) {
        precondition(tensor.shape.count == 2, "a linear weight is 2-D")
        self.tensor = tensor
    }

    public static func quantize(_ values: [Float], shape: [Int], options: QuantizationOptions) throws -> QuantizedWeight {
        QuantizedWeight(try QuantizedTensor.quantize(values, shape: shape, quantType: options.quantType, blocksize: options.blocksize,
                                                     doubleQuant: options.doubleQuant, rounding: options.rounding))
    }

    public var outFeatures: Int { tensor.shape[0] }
    public var inFeatures: Int { tensor.shape[1] }
    public var storageBytes: Int { tensor.residentBytes }
    public var isQuantized: Bool { true }
    public var denseStorage: UnsafePointer<Float>? { nil }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        tensor.dequantize(rows: rows, into: tile, roundedTo: precision.dequantPrecision)
    }

    public func hasMatrixVector(precision: ComputePrecision) -> Bool { tensor.rowsAreWholeBlocks && precision != .fp16 }

    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision) {
        tensor.matrixVector(y: y, x: x, rows: rows, precision: precision.dequantPrecision)
    }

    public func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                 rows: Range<Int>, level: Int32) {
        tensor.matrixVectorBF16(y: y, ldy: ldy, x: x, ldx: ldx, vectors: vectors, rows: rows, level: level)
    }

    public func writeBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int) {
        tensor.dequantizeBFloat16(rows: rows, columns: columns, into: out, ld: ld)
        if columns.count & 1 == 1 { for i in 0..<rows.count { out[i * ld + columns.count] = 0 } }
    }
}

extension ComputePrecision {
    var dequantPrecision: DequantPrecision {
        switch self {
        case .fp32: return .float32
        case .bf16: return .bfloat16
        case .fp16: return .float16
        }
    }
}
