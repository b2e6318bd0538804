import SafeTensors

/// The token embedding table (V, C), frozen, in fp32 or bf16, or any other frozen weight (a GGUF file's
/// quantized table, kept in its blocks). A bf16 checkpoint's table is kept in bf16: lossless (the values
/// are bf16 already) and half the memory; rows are widened to fp32 when gathered.
/// Also the weight of a tied lm_head, read through tiles like any other frozen weight.
public final class EmbeddingTable: FrozenWeight {
    public enum Storage: Sendable { case float32, bfloat16, frozen }

    public let outFeatures: Int   /// V
    public let inFeatures: Int    /// C
    public let storage: Storage
    private let f32: UnsafeMutablePointer<Float>?
    private let bf16: UnsafeMutablePointer<UInt16>?
    private let frozen: (any FrozenWeight)?
    private let ownsMemory: Bool

    /// A table of its own, from fp32 values (rounded to nearest-even for bf16 storage).
    public init(values: [Float], rows: Int, dim: Int, storage: Storage) {
        precondition(values.count == rows * dim)
        outFeatures = rows
        inFeatures = dim
        self.storage = storage
        ownsMemory = true
        switch storage {
        case .float32:
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: values.count)
            buffer.initialize(from: values, count: values.count)
            f32 = buffer
            bf16 = nil
        case .bfloat16:
            let buffer = UnsafeMutablePointer<UInt16>.allocate(capacity: values.count)
            for i in values.indices { buffer[i] = HalfFloat.bfloat16FromFloat(values[i]) }
            bf16 = buffer
            f32 = nil
        case .frozen:
            preconditionFailure("a table from values is fp32 or bf16; use init(weight:)")
        }
        frozen = nil
    }

    /// A table read through another frozen weight (rows gathered by its tiles).
    public init(weight: any FrozenWeight) {
        outFeatures = weight.outFeatures
        inFeatures = weight.inFeatures
        storage = .frozen
        f32 = nil
        bf16 = nil
        frozen = weight
        ownsMemory = false
    }

    /// A view of fp32 memory owned elsewhere (a trainable copy).
    public init(borrowing values: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        outFeatures = rows
        inFeatures = dim
        storage = .float32
        f32 = values
        bf16 = nil
        frozen = nil
        ownsMemory = false
    }

    deinit {
        guard ownsMemory else { return }
        f32?.deallocate()
        bf16?.deallocate()
    }

    public var count: Int { outFeatures * inFeatures }
    public var storageBytes: Int { frozen?.storageBytes ?? count * (storage == .float32 ? 4 : 2) }
    public var denseStorage: UnsafePointer<Float>? { frozen?.denseStorage ?? f32.map { UnsafePointer($0) } }
    public var bfloat16Storage: UnsafePointer<UInt16>? { frozen?.bfloat16Storage ?? bf16.map { UnsafePointer($0) } }

    public func writeTile(rows: Range<Int>, into tile: UnsafeMutablePointer<Float>, precision: ComputePrecision) {
        if let frozen { return frozen.writeTile(rows: rows, into: tile, precision: precision) }
        let start = rows.lowerBound * inFeatures, n = rows.count * inFeatures
        if let f32 {
            tile.update(from: f32 + start, count: n)
        } else {
            let source = bf16! + start
            let out = UnsafeMutableRawPointer(tile).assumingMemoryBound(to: UInt32.self)
            for i in 0..<n { out[i] = UInt32(source[i]) << 16 }
        }
        precision.round(tile, count: n)
    }

    // A wrapped weight answers for itself; the stored tables use the role's defaults.
    public func writeBFloat16(rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt16>, ld: Int) {
        if let frozen { return frozen.writeBFloat16(rows: rows, columns: columns, into: out, ld: ld) }
        defaultWriteBFloat16(rows: rows, columns: columns, into: out, ld: ld)
    }

    public func hasMatrixVector(precision: ComputePrecision) -> Bool {
        frozen?.hasMatrixVector(precision: precision) ?? (bf16 != nil && precision != .fp16)
    }

    public func matrixVector(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, precision: ComputePrecision) {
        if let frozen { return frozen.matrixVector(y: y, x: x, rows: rows, precision: precision) }
        defaultMatrixVector(y: y, x: x, rows: rows)
    }

    public func matrixVectorBF16(y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<UInt32>, ldx: Int, vectors: Int,
                                 rows: Range<Int>, level: Int32) {
        if let frozen { return frozen.matrixVectorBF16(y: y, ldy: ldy, x: x, ldx: ldx, vectors: vectors, rows: rows, level: level) }
        defaultMatrixVectorBF16(y: y, ldy: ldy, x: x, ldx: ldx, vectors: vectors, rows: rows, level: level)
    }

    /// out (N, C) = table[ids] as fp32; ids validated by the caller.
    public func gather(out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows n: Int) {
        if let f32 {
            Embedding.forward(out: out, table: UnsafePointer(f32), ids: ids, rows: n, dim: inFeatures)
            return
        }
        for row in 0..<n {
            writeTile(rows: Int(ids[row])..<(Int(ids[row]) + 1), into: out + row * inFeatures, precision: .fp32)
        }
    }

    /// The whole table as fp32 values (a copy).
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            writeTile(rows: 0..<outFeatures, into: buffer.baseAddress!, precision: .fp32)
            initialized = count
        }
    }
}

extension LlamaConfig {
    /// How the frozen embedding table (and an untied lm_head) is stored: bf16 when the checkpoint is
    /// bf16 (lossless), fp32 otherwise. The memory plan and the loader both use this.
    public var frozenTableStorage: EmbeddingTable.Storage { dtype == "bfloat16" ? .bfloat16 : .float32 }

    /// Bytes per element of the frozen embedding table / untied lm_head.
    public var frozenTableBytesPerElement: Int { frozenTableStorage == .bfloat16 ? 2 : 4 }
}
