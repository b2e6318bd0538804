/// Text as Unicode scalar values, each carrying the UTF-8 byte range of the original input it came
/// from, so that tokens can report offsets after normalization and pre-tokenization changed the text.
struct AlignedText {
    /// Unicode scalar values (for byte-level pieces: the GPT-2 byte characters).
    var scalars: [UInt32] = []
    /// Original UTF-8 byte offset where each scalar's source starts.
    var starts: [Int32] = []
    /// Original UTF-8 byte offset where each scalar's source ends (exclusive).
    var ends: [Int32] = []
    /// True when this text starts at the very beginning of the original input (Metaspace "first").
    var isAtInputStart = false

    init() {}

    /// `bytes[range]` decoded as UTF-8 (invalid sequences become U+FFFD), offsets relative to `bytes`.
    init(utf8 bytes: UnsafeBufferPointer<UInt8>, range: Range<Int>) {
        scalars.reserveCapacity(range.count)
        starts.reserveCapacity(range.count)
        ends.reserveCapacity(range.count)
        var i = range.lowerBound
        while i < range.upperBound {
            let (scalar, length) = AlignedText.decodeScalar(bytes, at: i, end: range.upperBound)
            scalars.append(scalar)
            starts.append(Int32(i))
            ends.append(Int32(i + length))
            i += length
        }
        isAtInputStart = range.lowerBound == 0
    }

    var count: Int { scalars.count }
    var isEmpty: Bool { scalars.isEmpty }

    mutating func reserveCapacity(_ count: Int) {
        scalars.reserveCapacity(count)
        starts.reserveCapacity(count)
        ends.reserveCapacity(count)
    }

    mutating func append(_ scalar: UInt32, start: Int32, end: Int32) {
        scalars.append(scalar)
        starts.append(start)
        ends.append(end)
    }

    /// The scalars `range` as a new aligned text.
    func slice(_ range: Range<Int>) -> AlignedText {
        if range == 0..<count { return self }   // shares the storage: a long text is not copied again
        var out = AlignedText()
        out.scalars = Array(scalars[range])
        out.starts = Array(starts[range])
        out.ends = Array(ends[range])
        out.isAtInputStart = isAtInputStart && range.lowerBound == 0
        return out
    }

    /// Inserts `prefix` in front, every inserted scalar aligned to the first scalar's source.
    mutating func prepend(_ prefix: [UInt32]) {
        guard !scalars.isEmpty else { return }
        let start = starts[0], end = ends[0]
        scalars.insert(contentsOf: prefix, at: 0)
        starts.insert(contentsOf: repeatElement(start, count: prefix.count), at: 0)
        ends.insert(contentsOf: repeatElement(end, count: prefix.count), at: 0)
    }

    /// Replaces every non-overlapping occurrence of `pattern` (left to right) by `content`.
    mutating func replace(_ pattern: [UInt32], with content: [UInt32]) {
        guard !pattern.isEmpty, scalars.count >= pattern.count else { return }
        if pattern.count == 1 && content.count == 1 {
            let p = pattern[0], c = content[0]
            for i in scalars.indices where scalars[i] == p { scalars[i] = c }
            return
        }
        var out = AlignedText()
        out.isAtInputStart = isAtInputStart
        var i = 0
        while i < scalars.count {
            if i + pattern.count <= scalars.count && scalars[i] == pattern[0]
                && scalars[i..<(i + pattern.count)].elementsEqual(pattern) {
                let start = starts[i], end = ends[i + pattern.count - 1]
                for scalar in content { out.append(scalar, start: start, end: end) }
                i += pattern.count
            } else {
                out.append(scalars[i], start: starts[i], end: ends[i])
                i += 1
            }
        }
        self = out
    }

    /// Applies `transform` to each extended grapheme cluster; the outputs of a cluster are aligned to
    /// the whole cluster (Unicode normalization forms never cross cluster boundaries).
    mutating func mapClusters(_ transform: (String) -> String) {
        var text = String.UnicodeScalarView()
        for scalar in scalars { text.append(Unicode.Scalar(scalar) ?? "\u{FFFD}") }
        let string = String(text)
        if string.utf8.allSatisfy({ $0 < 0x80 }) && transform(string) == string { return }
        var out = AlignedText()
        out.isAtInputStart = isAtInputStart
        var position = 0
        for character in string {
            let sourceCount = character.unicodeScalars.count
            let start = starts[position], end = ends[position + sourceCount - 1]
            for scalar in transform(String(character)).unicodeScalars {
                out.append(scalar.value, start: start, end: end)
            }
            position += sourceCount
        }
        self = out
    }

    /// UTF-8 bytes of the scalars.
    var utf8Bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(scalars.count)
        for scalar in scalars { AlignedText.appendUTF8(scalar, to: &bytes) }
        return bytes
    }

    static func appendUTF8(_ scalar: UInt32, to bytes: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            bytes.append(UInt8(scalar))
        case 0x80..<0x800:
            bytes.append(UInt8(0xC0 | (scalar >> 6)))
            bytes.append(UInt8(0x80 | (scalar & 0x3F)))
        case 0x800..<0x10000:
            bytes.append(UInt8(0xE0 | (scalar >> 12)))
            bytes.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (scalar & 0x3F)))
        default:
            bytes.append(UInt8(0xF0 | (scalar >> 18)))
            bytes.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
            bytes.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (scalar & 0x3F)))
        }
    }

    /// Decodes one scalar at `i`; malformed input yields U+FFFD over one byte.
    static func decodeScalar(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int, end: Int) -> (UInt32, Int) {
        let b0 = UInt32(bytes[i])
        if b0 < 0x80 { return (b0, 1) }
        func continuation(_ k: Int) -> UInt32? {
            guard i + k < end, bytes[i + k] & 0xC0 == 0x80 else { return nil }
            return UInt32(bytes[i + k] & 0x3F)
        }
        if b0 & 0xE0 == 0xC0, let c1 = continuation(1) {
            return (((b0 & 0x1F) << 6) | c1, 2)
        }
        if b0 & 0xF0 == 0xE0, let c1 = continuation(1), let c2 = continuation(2) {
            return (((b0 & 0x0F) << 12) | (c1 << 6) | c2, 3)
        }
        if b0 & 0xF8 == 0xF0, let c1 = continuation(1), let c2 = continuation(2), let c3 = continuation(3) {
            return (((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4)
        }
        return (0xFFFD, 1)
    }
}
