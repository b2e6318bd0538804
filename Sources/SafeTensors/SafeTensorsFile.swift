import Foundation

/// One tensor's header entry. `byteRange` is relative to the start of the data section.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var byteRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { byteRange.count }
}

/// A memory-mapped, read-only safetensors file. Tensor data is viewed in place (zero copy); the
/// header is fully validated on open, so every later access is in bounds.
public final class SafeTensorsFile: @unchecked Sendable {
    /// Headers larger than this are refused (the reference implementation's limit).
    public static let maxHeaderLength: UInt64 = 100_000_000

    public let path: String
    public let metadata: [String: String]
    /// Tensors in data-offset order.
    public let tensors: [TensorInfo]
    public let fileSize: Int
    private let index: [String: Int]
    private let base: UnsafeRawPointer?
    private let dataStart: Int

    public convenience init(url: URL) throws { try self.init(path: url.path) }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SafeTensorsError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SafeTensorsError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw SafeTensorsError.cannotOpen(path: path, reason: "it is a directory; use SafeTensorsCheckpoint for a model directory")
        }
        let size = Int(info.st_size)
        fileSize = size
        guard size >= 8 else { throw SafeTensorsError.truncated(path: path, size: size) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw SafeTensorsError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        let raw = UnsafeRawPointer(mapped)
        do {
            let headerLength = raw.loadUnaligned(as: UInt64.self).littleEndian
            guard headerLength <= Self.maxHeaderLength else {
                throw SafeTensorsError.headerTooLarge(path: path, headerLength: headerLength)
            }
            guard 8 + Int(headerLength) <= size else {
                throw SafeTensorsError.headerBeyondFile(path: path, headerLength: headerLength, fileSize: size)
            }
            let headerBytes = UnsafeRawBufferPointer(start: raw + 8, count: Int(headerLength))
            let parsed = try Self.parseHeader(headerBytes, path: path, dataSize: size - 8 - Int(headerLength))
            metadata = parsed.metadata
            tensors = parsed.tensors
            dataStart = 8 + Int(headerLength)
            var index: [String: Int] = [:]
            for (i, t) in tensors.enumerated() { index[t.name] = i }
            self.index = index
            base = raw
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), fileSize) }
    }

    public var names: [String] { tensors.map(\.name) }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func info(_ name: String) throws -> TensorInfo {
        guard let i = index[name] else { throw SafeTensorsError.missingTensor(path: path, tensor: name) }
        return tensors[i]
    }

    /// The tensor's bytes, in place in the mapping (valid while this object lives).
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let t = try info(name)
        return UnsafeRawBufferPointer(start: base! + dataStart + t.byteRange.lowerBound, count: t.byteCount)
    }

    /// A typed in-place view. `T` must match the dtype's element size; data must be aligned.
    public func view<T>(_ name: String, as type: T.Type, dtype expected: DType) throws -> UnsafeBufferPointer<T> {
        let t = try info(name)
        guard t.dtype == expected else {
            throw SafeTensorsError.wrongDType(path: path, tensor: name, expected: expected.rawValue, actual: t.dtype)
        }
        precondition(MemoryLayout<T>.stride == expected.size, "view type does not match dtype size")
        let bytes = try rawBytes(name)
        guard let start = bytes.baseAddress else { return UnsafeBufferPointer(start: nil, count: 0) }
        guard Int(bitPattern: start) % MemoryLayout<T>.alignment == 0 else {
            throw SafeTensorsError.misaligned(path: path, tensor: name)
        }
        return UnsafeBufferPointer(start: start.assumingMemoryBound(to: T.self), count: t.elementCount)
    }

    /// A copy of an F32, F16 or BF16 tensor converted to Float.
    public func floats(_ name: String) throws -> [Float] {
        let t = try info(name)
        let bytes = try rawBytes(name)
        let n = t.elementCount
        switch t.dtype {
        case .F32:
            return [Float](unsafeUninitializedCapacity: n) { out, count in
                if n > 0 { _ = memcpy(out.baseAddress!, bytes.baseAddress!, n * 4) }
                count = n
            }
        case .BF16:
            return [Float](unsafeUninitializedCapacity: n) { out, count in
                for i in 0..<n {
                    out[i] = HalfFloat.bfloat16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
                }
                count = n
            }
        case .F16:
            return [Float](unsafeUninitializedCapacity: n) { out, count in
                for i in 0..<n {
                    out[i] = HalfFloat.toFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
                }
                count = n
            }
        default:
            throw SafeTensorsError.wrongDType(path: path, tensor: name, expected: "F32, F16 or BF16", actual: t.dtype)
        }
    }

    /// A copy of an integer tensor (U8, I8, I32, I64, BOOL ...) widened to Int.
    public func integers(_ name: String) throws -> [Int] {
        let t = try info(name)
        let bytes = try rawBytes(name)
        let n = t.elementCount
        switch t.dtype {
        case .U8, .BOOL: return (0..<n).map { Int(bytes[$0]) }
        case .I8: return (0..<n).map { Int(Int8(bitPattern: bytes[$0])) }
        case .I16: return (0..<n).map { Int(bytes.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self).littleEndian) }
        case .U16: return (0..<n).map { Int(bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian) }
        case .I32: return (0..<n).map { Int(bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self).littleEndian) }
        case .U32: return (0..<n).map { Int(bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self).littleEndian) }
        case .I64: return (0..<n).map { Int(bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self).littleEndian) }
        default:
            throw SafeTensorsError.wrongDType(path: path, tensor: name, expected: "an integer type", actual: t.dtype)
        }
    }

    // MARK: - Header validation

    /// Validates a header the way the reference implementation (safetensors 0.8) does: a JSON object
    /// of tensor entries plus an optional `__metadata__` object of strings; known dtypes; shapes of
    /// non-negative integers; `data_offsets` that, sorted, tile the data section exactly from 0 to its
    /// end with no gap and no overlap; byte counts equal to elements x dtype size. Stricter than the
    /// reference in two ways: duplicate keys are refused, and a tensor entry must have all three fields.
    static func parseHeader(_ headerBytes: UnsafeRawBufferPointer, path: String, dataSize: Int) throws -> (metadata: [String: String], tensors: [TensorInfo]) {
        let root: JSONValue
        do {
            root = try JSONValue.parse(headerBytes)
        } catch let error as JSONParseError {
            throw SafeTensorsError.invalidHeader(path: path, reason: "not valid JSON (\(error))")
        }
        guard case .object(let members) = root else {
            throw SafeTensorsError.invalidHeader(path: path, reason: "the header is \(root.kindName), not a JSON object")
        }
        var metadata: [String: String] = [:]
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(members.count)
        for (name, value) in members {
            if name == "__metadata__" {
                if value == .null { continue }
                guard case .object(let entries) = value else {
                    throw SafeTensorsError.invalidHeader(path: path, reason: "__metadata__ is \(value.kindName), not an object of strings")
                }
                for (key, entry) in entries {
                    guard let text = entry.stringValue else {
                        throw SafeTensorsError.invalidHeader(path: path, reason: "__metadata__ value for '\(key)' is \(entry.kindName), not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            tensors.append(try parseEntry(name: name, value: value, path: path, dataSize: dataSize))
        }
        tensors.sort { ($0.byteRange.lowerBound, $0.byteRange.upperBound) < ($1.byteRange.lowerBound, $1.byteRange.upperBound) }
        var expectedBegin = 0
        var previous: String?
        for tensor in tensors {
            let begin = tensor.byteRange.lowerBound
            if begin < expectedBegin, let previous {
                throw SafeTensorsError.overlapping(path: path, tensor: tensor.name, other: previous)
            }
            if begin > expectedBegin {
                throw SafeTensorsError.badOffsets(path: path, tensor: tensor.name, reason: "it begins at \(begin) but the data before it ends at \(expectedBegin); safetensors requires tensors to tile the data section with no gaps")
            }
            expectedBegin = tensor.byteRange.upperBound
            previous = tensor.name
        }
        guard expectedBegin == dataSize else {
            throw SafeTensorsError.incompleteData(path: path, dataSize: dataSize, covered: expectedBegin)
        }
        return (metadata, tensors)
    }

    private static func parseEntry(name: String, value: JSONValue, path: String, dataSize: Int) throws -> TensorInfo {
        guard case .object = value else {
            throw SafeTensorsError.invalidHeader(path: path, reason: "entry '\(name)' is \(value.kindName), not an object")
        }
        guard let dtypeName = value["dtype"]?.stringValue else {
            throw SafeTensorsError.invalidHeader(path: path, reason: "tensor '\(name)' has no dtype string")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw SafeTensorsError.unknownDType(path: path, tensor: name, dtype: dtypeName)
        }
        guard case .array(let shapeValues)? = value["shape"] else {
            throw SafeTensorsError.invalidHeader(path: path, reason: "tensor '\(name)' has no shape array")
        }
        var shape: [Int] = []
        shape.reserveCapacity(shapeValues.count)
        for dimension in shapeValues {
            guard let d = dimension.intValue else {
                throw SafeTensorsError.invalidHeader(path: path, reason: "tensor '\(name)' has a shape dimension that is \(dimension.kindName) (\(describe(dimension))), not a non-negative integer")
            }
            shape.append(d)
        }
        guard case .array(let offsetValues)? = value["data_offsets"], offsetValues.count == 2,
              let begin = offsetValues[0].intValue, let end = offsetValues[1].intValue else {
            throw SafeTensorsError.badOffsets(path: path, tensor: name, reason: "data_offsets must be two non-negative integers")
        }
        guard begin <= end else {
            throw SafeTensorsError.badOffsets(path: path, tensor: name, reason: "begin \(begin) > end \(end)")
        }
        guard end <= dataSize else {
            throw SafeTensorsError.badOffsets(path: path, tensor: name, reason: "end \(end) is past the \(dataSize)-byte data section")
        }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw SafeTensorsError.invalidHeader(path: path, reason: "tensor '\(name)' shape \(shape) is too large")
            }
            count = product
        }
        let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, expected == end - begin else {
            throw SafeTensorsError.sizeMismatch(path: path, tensor: name, expected: overflow ? Int.max : expected, actual: end - begin)
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .unsignedInteger(let u): return String(u)
        case .number(let d): return String(d)
        case .bool(let b): return String(b)
        case .string(let s): return "\"\(s)\""
        default: return value.kindName
        }
    }
}
