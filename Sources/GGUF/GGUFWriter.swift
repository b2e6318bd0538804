import Foundation

/// Writes a GGUF version 3 file (little-endian): metadata in the order given, then tensor infos, then
/// the data section aligned to `general.alignment` (32 unless the metadata says otherwise). Written to
/// a temporary file beside the target and renamed, so a reader never sees half a file.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        public var type: GGMLType
        /// ggml order (ne0, the contiguous dimension, first).
        public var dimensions: [Int]
        public var bytes: [UInt8]

        public init(name: String, type: GGMLType, dimensions: [Int], bytes: [UInt8]) {
            self.name = name
            self.type = type
            self.dimensions = dimensions
            self.bytes = bytes
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.0 == key }) { metadata[i].1 = value } else { metadata.append((key, value)) }
    }

    /// The whole file's bytes.
    public func encoded() throws -> [UInt8] {
        let alignment = metadata.first(where: { $0.0 == "general.alignment" })?.1.int ?? GGUFFile.defaultAlignment
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .float64(let x): u64(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): string(s)
            case .array(let items):
                u32(items.elementType.rawValue)
                u64(UInt64(items.count))
                for i in 0..<items.count { value(items[i]) }
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(v.typeID.rawValue)
            value(v)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            guard t.type.byteCount(elements: t.dimensions.reduce(1, *)) == t.bytes.count else {
                throw GGUFError.invalid(path: t.name, detail: "\(t.bytes.count) bytes do not hold \(t.dimensions) elements of \(t.type)")
            }
            string(t.name)
            u32(UInt32(t.dimensions.count))
            for d in t.dimensions { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offsets.append(offset)
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        out.append(contentsOf: [UInt8](repeating: 0, count: (alignment - out.count % alignment) % alignment))
        for t in tensors {
            out.append(contentsOf: t.bytes)
            out.append(contentsOf: [UInt8](repeating: 0, count: (alignment - t.bytes.count % alignment) % alignment))
        }
        return out
    }

    /// Writes the file to `path` via a temporary file and a rename.
    public func write(to path: String) throws {
        let bytes = try encoded()
        let temporary = path + ".partial-\(getpid())"
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: temporary))
            // Durable before it takes the real name, and the rename durable after.
            let fd = open(temporary, O_RDONLY | O_CLOEXEC)
            guard fd >= 0, fsync(fd) == 0 else {
                if fd >= 0 { close(fd) }
                throw GGUFError.cannotOpen(path: path, reason: "cannot sync: \(String(cString: strerror(errno)))")
            }
            close(fd)
            guard rename(temporary, path) == 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
            let directory = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 { _ = fsync(directory); close(directory) }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw GGUFError.cannotOpen(path: path, reason: "cannot write: \(error.localizedDescription)")
        }
    }
}
