import Foundation

/// One tensor to be written: its name, element type and shape (the byte count follows).
public struct TensorEntry: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// Writes a safetensors file byte-identical to the reference library (safetensors 0.8,
/// `serialize_to_file` / `safetensors.torch.save_file`):
/// * tensors are laid out sorted by dtype descending in the reference's dtype order
///   (U64, I64, F64, F32, U32, I32, BF16, F16, U16, I16, F8_E4M3, F8_E5M2, I8, U8, BOOL), then by name
///   compared as UTF-8 bytes, contiguous from offset 0;
/// * the header is compact JSON (serde_json): `__metadata__` first when given, then the tensors in
///   that same order, each `{"dtype":..,"shape":[..],"data_offsets":[b,e]}`; strings escaped as
///   serde_json does (see `JSONValue.appendQuoted`);
/// * the header is padded with spaces to a multiple of 8 bytes, and its length is stored as a
///   little-endian UInt64 before it.
/// The reference keeps `__metadata__` in a Rust HashMap, so with more than one key its key order is
/// arbitrary; here metadata keys are written sorted by UTF-8 bytes (identical for one key).
///
/// The whole layout is fixed in `init`, so the data can be streamed tensor by tensor in any order.
/// The file is written under a temporary name in the same directory and renamed over `path` by
/// `finish()` after an fsync; until then nothing exists under `path`.
public final class SafeTensorsWriter {
    public let path: String
    /// Entries in file order, with their byte ranges in the data section.
    public let layout: [TensorInfo]
    /// The header bytes (length prefix excluded), padding included.
    public let header: [UInt8]
    private let index: [String: Int]
    private var written: [Bool]
    private let temporaryPath: String
    private var descriptor: Int32
    private var finished = false
    private let dataStart: Int

    /// Lays out the header from all entries up front (so data can be streamed tensor by tensor) and
    /// opens a temp file beside `path`.
    public init(path: String, entries: [TensorEntry], metadata: [String: String]? = nil) throws {
        self.path = path
        var seen = Set<String>()
        for entry in entries {
            guard seen.insert(entry.name).inserted else {
                throw SafeTensorsError.writeFailed(path: path, reason: "tensor '\(entry.name)' is listed twice")
            }
            if entry.name == "__metadata__" {
                throw SafeTensorsError.writeFailed(path: path, reason: "'__metadata__' is reserved and cannot name a tensor")
            }
            if let bad = entry.shape.first(where: { $0 < 0 }) {
                throw SafeTensorsError.writeFailed(path: path, reason: "tensor '\(entry.name)' has negative dimension \(bad) in shape \(entry.shape)")
            }
        }
        let sorted = Self.referenceOrder(entries)
        var layout: [TensorInfo] = []
        layout.reserveCapacity(sorted.count)
        var offset = 0
        for entry in sorted {
            var bytes = entry.dtype.size
            for d in entry.shape {
                let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
                guard !overflow else { throw SafeTensorsError.writeFailed(path: path, reason: "tensor '\(entry.name)' shape \(entry.shape) is too large") }
                bytes = product
            }
            let (end, overflow) = offset.addingReportingOverflow(bytes)
            guard !overflow else { throw SafeTensorsError.writeFailed(path: path, reason: "total size overflows") }
            layout.append(TensorInfo(name: entry.name, dtype: entry.dtype, shape: entry.shape, byteRange: offset..<end))
            offset = end
        }
        self.layout = layout
        header = Self.headerBytes(layout: layout, metadata: metadata)
        var index: [String: Int] = [:]
        for (i, t) in layout.enumerated() { index[t.name] = i }
        self.index = index
        written = [Bool](repeating: false, count: layout.count)
        dataStart = 8 + header.count

        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        temporaryPath = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SafeTensorsError.writeFailed(path: path, reason: "cannot create \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        do {
            guard ftruncate(descriptor, off_t(dataStart + offset)) == 0 else {
                throw SafeTensorsError.writeFailed(path: path, reason: "cannot size the file to \(dataStart + offset) bytes: \(String(cString: strerror(errno)))")
            }
            var prefix = [UInt8](repeating: 0, count: 8)
            withUnsafeBytes(of: UInt64(header.count).littleEndian) { for i in 0..<8 { prefix[i] = $0[i] } }
            try (prefix + header).withUnsafeBytes { try writeFully($0, at: 0) }
        } catch {
            abandon()
            throw error
        }
    }

    deinit {
        if !finished { abandon() }
    }

    /// Writes one tensor's bytes (any order; exact byte count required, else throws naming the tensor).
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        guard descriptor >= 0, !finished else {
            throw SafeTensorsError.writeFailed(path: path, reason: "writer already finished or abandoned (writing '\(name)')")
        }
        guard let i = index[name] else { throw SafeTensorsError.missingTensor(path: path, tensor: name) }
        let info = layout[i]
        guard bytes.count == info.byteCount else {
            throw SafeTensorsError.sizeMismatch(path: path, tensor: name, expected: info.byteCount, actual: bytes.count)
        }
        guard !written[i] else {
            throw SafeTensorsError.writeFailed(path: path, reason: "tensor '\(name)' was already written")
        }
        try writeFully(bytes, at: dataStart + info.byteRange.lowerBound)
        written[i] = true
    }

    /// Checks every tensor was written, fsyncs, renames the temp file to `path` (atomic). On any
    /// failure the temp file is removed and nothing is left under `path`.
    public func finish() throws {
        guard descriptor >= 0, !finished else {
            throw SafeTensorsError.writeFailed(path: path, reason: "writer already finished or abandoned")
        }
        do {
            let missing = layout.indices.filter { !written[$0] }.map { layout[$0].name }
            guard missing.isEmpty else {
                let shown = missing.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
                throw SafeTensorsError.writeFailed(path: path, reason: "\(missing.count) tensor(s) never written: \(shown)\(missing.count > 5 ? ", ..." : "")")
            }
            guard fsync(descriptor) == 0 else {
                throw SafeTensorsError.writeFailed(path: path, reason: "fsync failed: \(String(cString: strerror(errno)))")
            }
            let closed = close(descriptor)
            descriptor = -1
            guard closed == 0 else {
                throw SafeTensorsError.writeFailed(path: path, reason: "close failed: \(String(cString: strerror(errno)))")
            }
            guard rename(temporaryPath, path) == 0 else {
                throw SafeTensorsError.writeFailed(path: path, reason: "rename from \(temporaryPath) failed: \(String(cString: strerror(errno)))")
            }
        } catch {
            abandon()
            throw error
        }
        finished = true
        Self.syncDirectory(of: path)
    }

    /// Removes the temp file (also done in deinit if finish() was never called).
    public func abandon() {
        guard !finished else { return }
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
        unlink(temporaryPath)
        finished = true
    }

    /// Convenience: all tensors at once.
    public static func write(path: String, tensors: [(TensorEntry, Data)], metadata: [String: String]? = nil) throws {
        let writer = try SafeTensorsWriter(path: path, entries: tensors.map(\.0), metadata: metadata)
        do {
            for (entry, data) in tensors {
                try data.withUnsafeBytes { try writer.write(entry.name, bytes: $0) }
            }
            try writer.finish()
        } catch {
            writer.abandon()
            throw error
        }
    }

    // MARK: - Layout

    /// Sorted as the reference does: dtype descending in its enum order, then name by UTF-8 bytes.
    static func referenceOrder(_ entries: [TensorEntry]) -> [TensorEntry] {
        let rank = Dictionary(uniqueKeysWithValues: DType.allCases.enumerated().map { ($1, $0) })
        return entries.sorted { a, b in
            let ra = rank[a.dtype]!, rb = rank[b.dtype]!
            if ra != rb { return ra > rb }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
    }

    /// Compact header JSON, padded with spaces to a multiple of 8 bytes.
    static func headerBytes(layout: [TensorInfo], metadata: [String: String]?) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        func separator() {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
        }
        if let metadata {
            separator()
            JSONValue.appendQuoted("__metadata__", to: &out)
            out.append(contentsOf: Array(":{".utf8))
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (i, key) in keys.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.appendQuoted(key, to: &out)
                out.append(UInt8(ascii: ":"))
                JSONValue.appendQuoted(metadata[key]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        for tensor in layout {
            separator()
            JSONValue.appendQuoted(tensor.name, to: &out)
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            out.append(contentsOf: Array(":{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(tensor.byteRange.lowerBound),\(tensor.byteRange.upperBound)]}".utf8))
        }
        out.append(UInt8(ascii: "}"))
        while out.count % 8 != 0 { out.append(UInt8(ascii: " ")) }
        return out
    }

    // MARK: - I/O

    private func writeFully(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SafeTensorsError.writeFailed(path: path, reason: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Makes the rename durable; failures here are ignored (the data itself is already synced).
    private static func syncDirectory(of path: String) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }
}
