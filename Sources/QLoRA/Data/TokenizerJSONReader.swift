import Foundation

/// Reads tokenizer.json keeping every token exactly as spelled. Foundation's JSONSerialization returns
/// `[String: Any]`, whose keys merge canonically equivalent tokens (Gemma's vocabulary has 434 such
/// pairs), and it drops a raw U+FEFF at the start of a string (Gemma has the token "\u{FEFF}"). Here a
/// `"vocab"` object of integer ids becomes a `TokenizerVocabulary` and strings keep their exact scalars;
/// everything else comes out as JSONSerialization's values (`[String: Any]`, `[Any]`, `String`,
/// `NSNumber`, `Bool`, `NSNull`).
struct TokenizerJSONReader {
    private let bytes: [UInt8]
    private var position = 0

    static func parse(_ data: Data) throws -> Any {
        var reader = TokenizerJSONReader(bytes: [UInt8](data))
        reader.skipWhitespace()
        let value = try reader.value(key: nil)
        reader.skipWhitespace()
        guard reader.position == reader.bytes.count else { throw reader.error("text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ detail: String) -> DataError {
        .invalidTokenizerFile(file: "tokenizer.json", detail: "\(detail) at byte \(position)")
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, bytes[position] == 0x20 || bytes[position] == 0x0A || bytes[position] == 0x0D || bytes[position] == 0x09 {
            position += 1
        }
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard position < bytes.count, bytes[position] == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        position += 1
    }

    /// `key` is the object key this value belongs to ("vocab" gets the exact-spelling treatment).
    private mutating func value(key: String?) throws -> Any {
        guard position < bytes.count else { throw error("unexpected end") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return key == "vocab" ? try vocabularyOrObject() : try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return try string()
        case UInt8(ascii: "t"): try literal("true"); return true
        case UInt8(ascii: "f"): try literal("false"); return false
        case UInt8(ascii: "n"): try literal("null"); return NSNull()
        default: return try number()
        }
    }

    private mutating func literal(_ word: String) throws {
        for byte in word.utf8 { try expect(byte) }
    }

    private mutating func object() throws -> [String: Any] {
        var result: [String: Any] = [:]
        try members { key, reader in result[key] = try reader.value(key: key) }
        return result
    }

    /// A vocabulary object (every value an integer id) as a `TokenizerVocabulary`; any other object as usual.
    private mutating func vocabularyOrObject() throws -> Any {
        let start = position
        var entries: [(String, Int)] = []
        var isVocabulary = true
        try members { key, reader in
            let first = reader.position < reader.bytes.count ? reader.bytes[reader.position] : 0
            guard (0x30...0x39).contains(first) else {
                isVocabulary = false
                _ = try reader.value(key: nil)
                return
            }
            let number = try reader.number()
            // Whole ids below the BPE table limit; anything else is left to the model's own checks.
            if number.doubleValue == Double(number.intValue), number.intValue < Int(BytePairModel.maxTokenID) {
                entries.append((key, number.intValue))
            } else {
                isVocabulary = false
            }
        }
        guard isVocabulary else {
            position = start
            return try object()
        }
        var vocabulary = TokenizerVocabulary(count: (entries.map(\.1).max() ?? -1) + 1)
        for (token, id) in entries { vocabulary.tokens[id] = token }
        return vocabulary
    }

    private mutating func members(_ body: (String, inout TokenizerJSONReader) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return }
        while true {
            skipWhitespace()
            let key = try string()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            try body(key, &self)
            skipWhitespace()
            guard position < bytes.count else { throw error("unterminated object") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "}"))
            return
        }
    }

    private mutating func array() throws -> [Any] {
        try expect(UInt8(ascii: "["))
        var result: [Any] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return result }
        while true {
            skipWhitespace()
            result.append(try value(key: nil))
            skipWhitespace()
            guard position < bytes.count else { throw error("unterminated array") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "]"))
            return result
        }
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        var utf8: [UInt8] = []
        while true {
            guard position < bytes.count else { throw error("unterminated string") }
            let byte = bytes[position]
            position += 1
            if byte == UInt8(ascii: "\"") { break }
            guard byte == UInt8(ascii: "\\") else { utf8.append(byte); continue }
            guard position < bytes.count else { throw error("unterminated escape") }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    // A surrogate pair: \uD83D\uDE00.
                    guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                        throw error("lone surrogate")
                    }
                    position += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("bad surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let value = Unicode.Scalar(scalar) else { throw error("bad \\u escape") }
                AlignedText.appendUTF8(value.value, to: &utf8)
            default:
                throw error("bad escape")
            }
        }
        guard let string = String(validatingUTF8Bytes: utf8) else { throw error("string is not valid UTF-8") }
        return string
    }

    private mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count, let value = UInt32(String(decoding: bytes[position..<(position + 4)], as: UTF8.self), radix: 16) else {
            throw error("bad \\u escape")
        }
        position += 4
        return value
    }

    private mutating func number() throws -> NSNumber {
        let start = position
        var isInteger = true
        while position < bytes.count {
            let byte = bytes[position]
            if (0x30...0x39).contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+") {
                position += 1
            } else if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                isInteger = false
                position += 1
            } else {
                break
            }
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if isInteger, let int = Int(text) { return NSNumber(value: int) }
        guard !text.isEmpty, let double = Double(text) else { throw error("unexpected character") }
        return NSNumber(value: double)
    }
}
