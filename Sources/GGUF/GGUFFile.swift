import Foundation

/// One tensor of a GGUF file. `dimensions` are in ggml order (ne0 = the contiguous one first);
/// `shape` is the row-major shape (reversed), as PyTorch and safetensors write it.
public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    /// The raw ggml type id; `type` is nil for ids this reader does not know.
    public var typeID: UInt32
    public var dimensions: [Int]
    /// Offset of the data from the start of the data section.
    public var offset: Int
    public var byteCount: Int

    public var type: GGMLType? { GGMLType(rawValue: typeID) }
    public var typeName: String { type?.description ?? "type id \(typeID)" }
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A memory-mapped, read-only GGUF file (versions 2 and 3, little-endian). The header, metadata and
/// tensor infos are parsed and validated on open — every count, length and offset is checked against
/// the file before use — so later accesses are in bounds; tensor data stays in the mapping, never read
/// whole.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" read little-endian
    public static let defaultAlignment = 32
    /// Limits that keep a hostile header from asking for absurd allocations.
    static let maxDimensions = 4, maxArrayDepth = 8

    public let path: String
    public let version: UInt32
    /// Metadata in file order, and by key.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let fileSize: Int
    /// Where the data section starts in the file.
    public let dataOffset: Int
    private let index: [String: Int]
    private let base: UnsafeRawPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw GGUFError.cannotOpen(path: path, reason: "not a regular file") }
        let size = Int(info.st_size)
        fileSize = size
        guard size >= 4 else { throw GGUFError.notGGUF(path: path) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw GGUFError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(mapped)
        do {
            var reader = Reader(base: base, size: size, path: path)
            guard try reader.u32("the magic") == Self.magic else { throw GGUFError.notGGUF(path: path) }
            let rawVersion = try reader.u32("the version")
            if rawVersion & 0xFFFF == 0 && rawVersion != 0 { throw GGUFError.bigEndian(path: path) }
            guard rawVersion == 2 || rawVersion == 3 else { throw GGUFError.unsupportedVersion(path: path, version: rawVersion) }
            version = rawVersion
            let tensorCount = try reader.count("the tensor count", minimumBytesEach: 24)
            let keyCount = try reader.count("the metadata count", minimumBytesEach: 12)

            var keys: [String] = [], values: [String: GGUFValue] = [:]
            keys.reserveCapacity(keyCount)
            for _ in 0..<keyCount {
                let key = try reader.string("a metadata key")
                let type = try reader.u32("the type of '\(key)'")
                let value = try reader.value(type: type, key: key, depth: 0)
                guard values.updateValue(value, forKey: key) == nil else {
                    throw GGUFError.invalid(path: path, detail: "metadata key '\(key)' appears twice")
                }
                keys.append(key)
            }
            metadataKeys = keys
            metadata = values

            var alignment = Self.defaultAlignment
            if let value = values["general.alignment"] {
                guard let a = value.int, a > 0, a & (a - 1) == 0, a <= 1 << 20 else {
                    throw GGUFError.invalid(path: path, detail: "general.alignment \(value.summary) is not a power of two")
                }
                alignment = a
            }
            self.alignment = alignment

            var infos: [GGUFTensorInfo] = [], names: [String: Int] = [:]
            infos.reserveCapacity(tensorCount)
            for i in 0..<tensorCount {
                let name = try reader.string("the name of tensor \(i)")
                let dimensionCount = Int(try reader.u32("the dimension count of '\(name)'"))
                guard (1...Self.maxDimensions).contains(dimensionCount) else {
                    throw GGUFError.invalid(path: path, detail: "tensor '\(name)' has \(dimensionCount) dimensions (1 to 4 allowed)")
                }
                var dimensions: [Int] = [], elements = 1
                for _ in 0..<dimensionCount {
                    let d = try reader.u64("a dimension of '\(name)'")
                    guard d > 0, d <= UInt64(Int32.max) else {
                        throw GGUFError.invalid(path: path, detail: "tensor '\(name)' has a dimension of \(d)")
                    }
                    let (product, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                    guard !overflow, product <= 1 << 40 else {
                        throw GGUFError.invalid(path: path, detail: "tensor '\(name)' has too many elements")
                    }
                    elements = product
                    dimensions.append(Int(d))
                }
                let typeID = try reader.u32("the type of '\(name)'")
                let offset = try reader.u64("the offset of '\(name)'")
                guard offset <= UInt64(size) else {
                    throw GGUFError.invalid(path: path, detail: "tensor '\(name)' starts at \(offset), beyond the file (\(size) bytes)")
                }
                var bytes = 0
                if let type = GGMLType(rawValue: typeID) {
                    guard dimensions[0] % type.blockGeometry.elements == 0, let count = type.byteCount(elements: elements) else {
                        throw GGUFError.invalid(path: path, detail: "tensor '\(name)' (\(type)) has a row of \(dimensions[0]) elements, "
                                                + "not a multiple of the block size \(type.blockGeometry.elements)")
                    }
                    bytes = count
                }
                guard Int(offset) % alignment == 0 else {
                    throw GGUFError.invalid(path: path, detail: "tensor '\(name)' data offset \(offset) is not aligned to \(alignment)")
                }
                guard names.updateValue(infos.count, forKey: name) == nil else {
                    throw GGUFError.invalid(path: path, detail: "tensor '\(name)' appears twice")
                }
                infos.append(GGUFTensorInfo(name: name, typeID: typeID, dimensions: dimensions, offset: Int(offset), byteCount: bytes))
            }
            let start = (reader.offset + alignment - 1) / alignment * alignment
            dataOffset = start
            for t in infos where t.type != nil {
                guard start <= size, t.offset + t.byteCount <= size - start else {
                    throw GGUFError.truncated(path: path, offset: size,
                                              needed: "the \(t.byteCount) bytes of tensor '\(t.name)' at data offset \(t.offset)")
                }
            }
            tensors = infos
            index = names
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), fileSize) }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func info(_ name: String) throws -> GGUFTensorInfo {
        guard let i = index[name] else { throw GGUFError.missingTensor(path: path, tensor: name) }
        return tensors[i]
    }

    /// The tensor's bytes in the mapping (valid while the file object lives). Unknown types are refused.
    public func data(_ name: String) throws -> UnsafeRawBufferPointer {
        let t = try info(name)
        guard t.type != nil else { throw GGUFError.unsupportedType(path: path, tensor: name, type: t.typeName) }
        return UnsafeRawBufferPointer(start: base + dataOffset + t.offset, count: t.byteCount)
    }

    /// The tensor dequantized to fp32 in row-major order (small tensors: norms, biases).
    public func floats(_ name: String) throws -> [Float] {
        let t = try info(name)
        guard let type = t.type, type.isSupported else { throw GGUFError.unsupportedType(path: path, tensor: name, type: t.typeName) }
        let bytes = try data(name)
        return [Float](unsafeUninitializedCapacity: t.elementCount) { out, count in
            type.dequantize(blocks: t.elementCount / type.blockGeometry.elements, from: bytes.baseAddress!, into: out.baseAddress!)
            count = t.elementCount
        }
    }

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    /// The model's architecture (`general.architecture`).
    public var architecture: String? { metadata["general.architecture"]?.string }
}

/// A bounds-checked little-endian cursor over the mapped header.
private struct Reader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var offset = 0

    mutating func take(_ bytes: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer {
        guard bytes >= 0, bytes <= size - offset else { throw GGUFError.truncated(path: path, offset: size, needed: what()) }
        defer { offset += bytes }
        return base + offset
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { UInt32(littleEndian: try take(4, what()).loadUnaligned(as: UInt32.self)) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { UInt64(littleEndian: try take(8, what()).loadUnaligned(as: UInt64.self)) }

    /// A u64 count whose items need at least `minimumBytesEach` bytes: one that cannot fit in the rest of
    /// the file is refused before anything is allocated for it.
    mutating func count(_ what: @autoclosure () -> String, minimumBytesEach: Int) throws -> Int {
        let name = what()
        let n = try u64(name)
        guard n <= UInt64(max(0, size - offset) / max(1, minimumBytesEach)) else {
            throw GGUFError.invalid(path: path, detail: "\(name) is \(n), more than the file could hold")
        }
        return Int(n)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let name = what()
        let length = try count("the length of \(name)", minimumBytesEach: 1)
        let bytes = UnsafeRawBufferPointer(start: try take(length, name), count: length)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw GGUFError.invalid(path: path, detail: "\(name) at byte \(offset - length) is not valid UTF-8")
        }
        return s
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        guard let id = GGUFValue.TypeID(rawValue: type) else {
            throw GGUFError.invalid(path: path, detail: "metadata '\(key)' has unknown value type \(type)")
        }
        let what = "the value of '\(key)'"
        switch id {
        case .uint8: return .uint8(try take(1, what).load(as: UInt8.self))
        case .int8: return .int8(try take(1, what).load(as: Int8.self))
        case .uint16: return .uint16(UInt16(littleEndian: try take(2, what).loadUnaligned(as: UInt16.self)))
        case .int16: return .int16(Int16(littleEndian: try take(2, what).loadUnaligned(as: Int16.self)))
        case .uint32: return .uint32(try u32(what))
        case .int32: return .int32(Int32(bitPattern: try u32(what)))
        case .uint64: return .uint64(try u64(what))
        case .int64: return .int64(Int64(bitPattern: try u64(what)))
        case .float32: return .float32(Float(bitPattern: try u32(what)))
        case .float64: return .float64(Double(bitPattern: try u64(what)))
        case .bool:
            let b = try take(1, what).load(as: UInt8.self)
            guard b <= 1 else { throw GGUFError.invalid(path: path, detail: "metadata '\(key)' is a bool of value \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string(what))
        case .array:
            guard depth < GGUFFile.maxArrayDepth else {
                throw GGUFError.invalid(path: path, detail: "metadata '\(key)' nests arrays deeper than \(GGUFFile.maxArrayDepth)")
            }
            let rawType = try u32("the element type of '\(key)'")
            guard let elementType = GGUFValue.TypeID(rawValue: rawType) else {
                throw GGUFError.invalid(path: path, detail: "metadata '\(key)' is an array of unknown type \(rawType)")
            }
            let minimum: Int
            switch elementType {
            case .uint8, .int8, .bool: minimum = 1
            case .uint16, .int16: minimum = 2
            case .uint32, .int32, .float32: minimum = 4
            case .uint64, .int64, .float64, .string: minimum = 8
            case .array: minimum = 12
            }
            let n = try count("the length of '\(key)'", minimumBytesEach: minimum)
            // Read straight into one typed array (value(type:) returns the element type's own case).
            guard let elements = try GGUFArray.collect(elementType, count: n, { _ in try value(type: rawType, key: key, depth: depth + 1) }) else {
                throw GGUFError.invalid(path: path, detail: "metadata '\(key)': an array element is not of the array's type")
            }
            return .array(GGUFArray(elements))
        }
    }
}
