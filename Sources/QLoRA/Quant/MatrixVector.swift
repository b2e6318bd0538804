import CQLoRAKernels

extension QuantizedTensor {
    /// Whether `matrixVector` can read this tensor: every row is whole blocks.
    public var rowsAreWholeBlocks: Bool { shape.count == 2 && columns % blocksize == 0 && blocksize % 32 == 0 }

    /// y[r - rows.lowerBound] = W[r] . x for the rows `rows` of the 2-D view, straight from the packed codes
    /// (Sources/CQLoRAKernels/include/Gemv.h): the weights are those `dequantize` writes (rounded to bf16
    /// when `precision` is), nothing but y is written. `level`: nil = the best this CPU has.
    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>,
                             precision: DequantPrecision, level: Int32? = nil) {
        precondition(rowsAreWholeBlocks && precision != .float16, "matrixVector needs rows of whole blocks and fp32 or bf16 weights")
        let c = columns, blocksPerRow = c / blocksize
        packed.withUnsafeBufferPointer { bytes in
            codeValues.withUnsafeBufferPointer { codes in
                withBlockScales { scales in
                    qlora_gemv4(level ?? qlora_kernels_level(), y, x, rows.count, c, bytes.baseAddress! + rows.lowerBound * c / 2,
                                scales, rows.lowerBound * blocksPerRow, blocksize / 2, codes.baseAddress!, precision == .bfloat16 ? 1 : 0)
                }
            }
        }
    }

    /// The same with bf16 operands (`x`: bf16 pairs zero-padded to a multiple of 32 elements), the
    /// arithmetic of vdpbf16ps; weights rounded to bf16. `vectors` vectors at x + v * ldx (words) into
    /// y + v * ldy, each bit-identical to a call of its own. `level` as GemmKernel.level.
    public func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                 rows: Range<Int>, level: Int32) {
        precondition(rowsAreWholeBlocks, "matrixVectorBF16 needs rows of whole blocks")
        let c = columns, blocksPerRow = c / blocksize
        packed.withUnsafeBufferPointer { bytes in
            codeValues.withUnsafeBufferPointer { codes in
                withBlockScales { scales in
                    let start = bytes.baseAddress! + rows.lowerBound * c / 2, first = rows.lowerBound * blocksPerRow
                    if vectors == 1 {
                        qlora_gemv4_bf16dot(level, y, x, rows.count, c, start, scales, first, blocksize / 2, codes.baseAddress!)
                    } else {
                        qlora_gemv4_bf16dot_multi(level, y, ldy, x, ldx, vectors, rows.count, c, start, scales, first, blocksize / 2,
                                                  codes.baseAddress!)
                    }
                }
            }
        }
    }
}
