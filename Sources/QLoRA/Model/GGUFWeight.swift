import CQLoRAKernels
import GGUF

/// A frozen weight kept in a GGUF file's own blocks (Q4_K, Q8_0, F16, ...), read in place from the
/// memory-mapped file and dequantized a row at a time into tiles: a Q4_1 base stays Q4_1 in memory.
/// Rows are whole blocks (GGUFFile checks ne0 against the block size).
public final class GGUFWeight: FrozenWeight {
    public let type: GGMLType
    public let outFeatures: Int
    public let inFeatures: Int
    private let data: UnsafeRawPointer
    private let rowBytes: Int
    private let blocksPerRow: Int
    /// The stored row behind each output row, when they differ (llama.cpp permutes q/k rows for its
    /// rotary layout; we keep Hugging Face's order so adapters mean what PEFT means).
    private let storedRow: [Int32]?
    /// Keeps the mapping alive.
    private let file: GGUFFile

    /// Chunk of a row dequantized at a time when only some columns are wanted: one K-block.
    static let chunkElements = 256

    public init(file: GGUFFile, tensor name: String, storedRow: [Int32]? = nil) throws {
        let info = try file.info(name)
        guard let type = info.type, type.isSupported else {
            throw GGUFError.unsupportedType(path: file.path, tensor: name, type: info.typeName)
        }
        guard info.dimensions.count == 2 else {
            throw GGUFError.invalid(path: file.path, detail: "tensor '\(name)' is \(info.dimensions.count)-D, a weight matrix is 2-D")
        }
        self.type = type
        inFeatures = info.dimensions[0]
        outFeatures = info.dimensions[1]
        let rows = info.dimensions[1]
        precondition(storedRow.map { $0.count == rows } ?? true)
        blocksPerRow = inFeatures / type.blockGeometry.elements
        rowBytes = blocksPerRow * type.blockGeometry.bytes
        data = try file.data(name).baseAddress!
        self.storedRow = storedRow
        self.file = file
        fused = hasFusedKernel
    }

    public var isQuantized: Bool { type.blockGeometry.elements > 1 }
    public var storageBytes: Int { outFeatures * rowBytes }
    public var denseStorage: UnsafePointer<Float>? {
        type == .f32 && storedRow == nil ? data.assumingMemoryBound(to: Float.self) : nil
    }
    public var bfloat16Storage: UnsafePointer<UInt16>? {
        type == .bf16 && storedRow == nil ? data.assumingMemoryBound(to: UInt16.self) : nil
    }

    @inline(__always) private func row(_ r: Int) -> UnsafeRawPointer {
        data + (storedRow.map { Int($0[r]) } ?? r) * rowBytes
    }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        for (i, r) in rows.enumerated() {
            type.dequantize(blocks: blocksPerRow, from: row(r), into: tile + i * inFeatures)
        }
        precision.round(tile, count: rows.count * inFeatures)
    }

    public func writeBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int) {
        let (blockElements, blockBytes) = type.blockGeometry
        let perChunk = max(1, Self.chunkElements / blockElements)
        let firstBlock = columns.lowerBound / blockElements, endBlock = (columns.upperBound + blockElements - 1) / blockElements
        withUnsafeTemporaryAllocation(of: Float.self, capacity: perChunk * blockElements) { chunk in
            let values = chunk.baseAddress!
            for (i, r) in rows.enumerated() {
                let source = row(r), destination = out + i * ld
                var b = firstBlock
                while b < endBlock {
                    let n = min(perChunk, endBlock - b)
                    type.dequantize(blocks: n, from: source + b * blockBytes, into: values)
                    let lo = max(columns.lowerBound, b * blockElements), hi = min(columns.upperBound, (b + n) * blockElements)
                    // Rounding gives the same bits at every level: use the fastest.
                    qlora_bf16_from_f32_rows(GemmKernel.fastestLevel, destination + (lo - columns.lowerBound), ld,
                                             values + (lo - b * blockElements), blockElements * n, 1, hi - lo)
                    b += n
                }
                if columns.count & 1 == 1 { destination[columns.count] = 0 }
            }
        }
    }

    /// Rows dequantized at a time by the matrix-vector products (into a temporary buffer).
    static let groupRows = 8

    /// Decoding reads each row's blocks once. Q8_0, Q4_0, Q4_1, Q5_0 and the K-quants Q4_K, Q5_K, Q6_K go
    /// through fused kernels that decode each block in registers (CQLoRAKernels/GemvGGML.c, GemvGGMLK.c);
    /// the other types dequantize a group of rows into a small buffer (fp32, then bf16 for the bf16
    /// kernel) for the dense kernels. Either way the arithmetic is that of a dense weight holding the
    /// tile values, so the two paths give the same bits.
    public func hasMatrixVector(precision: ComputePrecision) -> Bool { precision != .fp16 }

    /// Whether the fused kernels take this type.
    public var hasFusedKernel: Bool { qlora_ggml_fused(Int32(type.rawValue)) == 1 }

    /// Whether decoding uses the fused kernels (the default where the type has one); false takes the
    /// row-group path, for benchmarks and tests that compare the two.
    public var usesFusedKernel: Bool {
        get { fused }
        set { precondition(!newValue || hasFusedKernel, "GGUF type \(type) has no fused decode kernel"); fused = newValue }
    }
    private var fused = false

    /// Calls `body` with the stored-row table (nil when rows are in order) as the kernels take it.
    private func withStoredRows<R>(_ body: (UnsafePointer<Int32>?) -> R) -> R {
        guard let storedRow else { return body(nil) }
        return storedRow.withUnsafeBufferPointer { body($0.baseAddress) }
    }

    /// Calls `body(values, rows)` with rows `rows` dequantized (fp32, row-major) `groupRows` at a time.
    private func forEachGroup(_ rows: Range<Int>, _ body: (UnsafeMutablePointer<Float>, Range<Int>) -> Void) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: Self.groupRows * inFeatures) { buffer in
            var r0 = rows.lowerBound
            while r0 < rows.upperBound {
                let group = r0..<min(rows.upperBound, r0 + Self.groupRows)
                for (i, r) in group.enumerated() { type.dequantize(blocks: blocksPerRow, from: row(r), into: buffer.baseAddress! + i * inFeatures) }
                body(buffer.baseAddress!, group)
                r0 = group.upperBound
            }
        }
    }

    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision) {
        let level = qlora_kernels_level(), i = inFeatures
        if fused {
            withStoredRows { stored in
                qlora_gemv_ggml_f32(level, Int32(type.rawValue), y, x, rows.count, i, data.assumingMemoryBound(to: UInt8.self), rowBytes,
                                    stored, rows.lowerBound, precision == .bf16 ? 1 : 0)
            }
            return
        }
        forEachGroup(rows) { values, group in
            precision.round(values, count: group.count * i)
            qlora_gemv_f32(level, y + (group.lowerBound - rows.lowerBound), x, group.count, i, values, i)
        }
    }

    public func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                 rows: Range<Int>, level: Int32) {
        let i = inFeatures, ld = (i + 1) / 2 * 2
        if fused {
            withStoredRows { stored in
                qlora_gemv_ggml_bf16dot(level, Int32(type.rawValue), y, ldy, x, ldx, vectors, rows.count, i,
                                        data.assumingMemoryBound(to: UInt8.self), rowBytes, stored, rows.lowerBound)
            }
            return
        }
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: Self.groupRows * ld) { bits in
            forEachGroup(rows) { values, group in
                qlora_bf16_from_f32_rows(GemmKernel.fastestLevel, bits.baseAddress!, ld, values, i, group.count, i)
                let out = y + (group.lowerBound - rows.lowerBound)
                if vectors == 1 {
                    qlora_gemv_bf16_bf16dot(level, out, x, group.count, i, bits.baseAddress!, ld)
                } else {
                    qlora_gemv_bf16_bf16dot_multi(level, out, ldy, x, ldx, vectors, group.count, i, bits.baseAddress!, ld)
                }
            }
        }
    }
}
