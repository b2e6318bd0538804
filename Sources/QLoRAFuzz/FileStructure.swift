import Foundation

/// Where the fields of a seed file are, so that mutations can hit lengths, counts and offsets, and
/// truncation can cut at every structural boundary rather than only at random bytes.
public struct FileStructure: Sendable {
    public enum FieldKind: Sendable { case count, length, dimension, typeID, offset, headerLength, value }

    /// A little-endian integer field: where it is, how wide (4 or 8 bytes), what it means.
    public struct Field: Sendable {
        public var offset: Int
        public var width: Int
        public var kind: FieldKind
    }

    public var fields: [Field] = []
    /// Offsets where one structural element ends and the next begins (truncation points).
    public var boundaries: [Int] = []
    /// Byte ranges holding tensor data (where NaN / Inf go).
    public var dataRanges: [Range<Int>] = []
    /// The file is a safetensors file: its header JSON can be rewritten.
    public var safetensorsHeader: Range<Int>?

    public init() {}

    /// A safetensors file: the u64 header length, the header, each tensor's data.
    public static func safetensors(_ bytes: [UInt8]) -> FileStructure {
        var s = FileStructure()
        guard bytes.count >= 8 else { return s }
        let stored = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        guard stored <= UInt64(bytes.count - 8) else { return s }
        let length = Int(stored)
        s.fields.append(Field(offset: 0, width: 8, kind: .headerLength))
        s.safetensorsHeader = 8..<(8 + length)
        s.boundaries = [0, 4, 8, 8 + length]
        let header = Data(bytes[8..<(8 + length)])
        if let object = (try? JSONSerialization.jsonObject(with: header)) as? [String: Any] {
            for (_, value) in object {
                guard let entry = value as? [String: Any], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2,
                      offsets.allSatisfy({ (0...bytes.count).contains($0) }), offsets[0] <= offsets[1] else { continue }
                let begin = 8 + length + offsets[0], end = 8 + length + offsets[1]
                s.boundaries += [begin, end]
                if let dtype = entry["dtype"] as? String, ["F32", "F16", "BF16"].contains(dtype), end > begin {
                    s.dataRanges.append(begin..<end)
                }
            }
        }
        // Inside the header: after every JSON punctuation mark.
        for i in 8..<(8 + length) where [UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: ","), UInt8(ascii: ":"), UInt8(ascii: "[")].contains(bytes[i]) {
            s.boundaries.append(i + 1)
        }
        s.boundaries = Array(Set(s.boundaries.filter { $0 <= bytes.count })).sorted()
        return s
    }

    /// A GGUF file: walks the header (magic, version, counts, key/values, tensor infos) recording each
    /// integer field; the data section's f32 tensors are the data ranges.
    public static func gguf(_ bytes: [UInt8]) -> FileStructure {
        var s = FileStructure()
        var p = 0
        func u32() -> UInt32? {
            guard p + 4 <= bytes.count else { return nil }
            defer { p += 4 }
            return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p, as: UInt32.self).littleEndian }
        }
        func u64() -> UInt64? {
            guard p + 8 <= bytes.count else { return nil }
            defer { p += 8 }
            return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p, as: UInt64.self).littleEndian }
        }
        func field(_ width: Int, _ kind: FieldKind) { s.fields.append(Field(offset: p, width: width, kind: kind)) }
        func string() -> Bool {
            field(8, .length)
            guard let n = u64(), n <= UInt64(bytes.count - p) else { return false }
            p += Int(n)
            return true
        }
        func value(_ type: UInt32, depth: Int) -> Bool {
            switch type {
            case 0, 1, 7: p += 1
            case 2, 3: p += 2
            case 4, 5, 6: field(4, .value); p += 4
            case 10, 11, 12: field(8, .value); p += 8
            case 8: return string()
            case 9:
                guard depth < 4 else { return false }
                field(4, .typeID)
                guard let element = u32() else { return false }
                field(8, .count)
                guard let n = u64(), n < 1 << 20 else { return false }
                for _ in 0..<n where p < bytes.count { guard value(element, depth: depth + 1) else { return false } }
            default: return false
            }
            return p <= bytes.count
        }
        s.boundaries = [0, 4]
        guard u32() != nil else { return s }
        _ = u32()
        s.boundaries.append(p)
        field(8, .count)
        guard let tensorCount = u64() else { return s }
        field(8, .count)
        guard let keyCount = u64(), keyCount < 1 << 20, tensorCount < 1 << 20 else { return s }
        s.boundaries.append(p)
        var alignment = 32
        for _ in 0..<keyCount {
            let keyStart = p + 8
            guard string() else { return s }
            let key = String(decoding: bytes[keyStart..<p], as: UTF8.self)
            s.boundaries.append(p)
            field(4, .typeID)
            guard let type = u32() else { return s }
            if key == "general.alignment", type == 4, p + 4 <= bytes.count {
                alignment = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p, as: UInt32.self).littleEndian })
            }
            guard value(type, depth: 0) else { return s }
            s.boundaries.append(p)
        }
        var tensors: [(offset: Int, elements: Int, type: UInt32)] = []
        for _ in 0..<tensorCount {
            guard string() else { return s }
            s.boundaries.append(p)
            field(4, .count)
            guard let dims = u32(), dims <= 4 else { return s }
            var elements = 1
            for _ in 0..<dims {
                field(8, .dimension)
                guard let d = u64(), d < 1 << 32 else { return s }
                elements = elements.multipliedReportingOverflow(by: Int(d)).partialValue
            }
            field(4, .typeID)
            guard let type = u32() else { return s }
            field(8, .offset)
            guard let offset = u64(), offset < 1 << 40 else { return s }
            tensors.append((Int(offset), elements, type))
            s.boundaries.append(p)
        }
        let dataStart = alignment > 0 ? (p + alignment - 1) / alignment * alignment : p
        s.boundaries.append(dataStart)
        for t in tensors {
            let start = dataStart + t.offset
            s.boundaries.append(start)
            if t.type == 0 { s.dataRanges.append(start..<min(bytes.count, start + 4 * t.elements)) }
        }
        s.boundaries = Array(Set(s.boundaries.filter { $0 <= bytes.count })).sorted()
        s.dataRanges = s.dataRanges.filter { !$0.isEmpty }
        return s
    }

    /// Text (JSON, JSONL): after each line end and each JSON punctuation mark.
    public static func text(_ bytes: [UInt8]) -> FileStructure {
        var s = FileStructure()
        s.boundaries = [0]
        for (i, b) in bytes.enumerated() where b == 0x0A || b == UInt8(ascii: "{") || b == UInt8(ascii: "}") || b == UInt8(ascii: ",")
            || b == UInt8(ascii: ":") || b == UInt8(ascii: "[") || b == UInt8(ascii: "]") || b == UInt8(ascii: "\"") {
            s.boundaries.append(i + 1)
        }
        return s
    }

    /// Unstructured bytes (ggml blocks, token files): fixed-size records.
    public static func records(_ bytes: [UInt8], size: Int) -> FileStructure {
        var s = FileStructure()
        s.boundaries = Array(stride(from: 0, through: bytes.count, by: max(1, size)))
        s.dataRanges = bytes.isEmpty ? [] : [0..<bytes.count]
        return s
    }
}
