/// A strict, minimal JSON (RFC 8259) reader and a serde_json-compatible writer for safetensors
/// headers and index files. Unlike JSONSerialization it keeps integers exact (up to UInt64), keeps
/// booleans apart from numbers, keeps object key order and reports duplicate keys.
public enum JSONValue: Equatable, Sendable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    /// A number written without sign, fraction or exponent that fits in UInt64.
    case unsignedInteger(UInt64)
    /// Every other number (negative, fractional, with exponent, or too large).
    case number(Double)
    case bool(Bool)
    case null

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let a), .array(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.unsignedInteger(let a), .unsignedInteger(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.bool(let a), .bool(let b)): return a == b
        case (.null, .null): return true
        default: return false
        }
    }

    /// The value for `key` in an object (the first one), nil otherwise.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    /// An exact non-negative integer that fits in Int.
    public var intValue: Int? {
        if case .unsignedInteger(let u) = self, u <= UInt64(Int.max) { return Int(u) }
        return nil
    }

    /// Any number as Double.
    public var doubleValue: Double? {
        switch self {
        case .unsignedInteger(let u): return Double(u)
        case .number(let d): return d
        default: return nil
        }
    }

    /// A short name of the kind of value, for error messages.
    public var kindName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .unsignedInteger: return "an integer"
        case .number: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }

    /// Parses UTF-8 JSON text (surrounding whitespace allowed). Throws `JSONParseError`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0) }
    }

    /// JSON text: compact, or indented by `indent` spaces per level (keys in stored order).
    /// Non-finite numbers, which JSON cannot hold, are written as null.
    public func text(indent: Int? = nil) -> String {
        var out: [UInt8] = []
        append(to: &out, indent: indent, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    private func append(to out: inout [UInt8], indent: Int?, level: Int) {
        func newline(_ level: Int) {
            guard let indent else { return }
            out.append(0x0a)
            out.append(contentsOf: [UInt8](repeating: 0x20, count: indent * level))
        }
        switch self {
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, member) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                JSONValue.appendQuoted(member.key, to: &out)
                out.append(contentsOf: indent == nil ? [UInt8(ascii: ":")] : Array(": ".utf8))
                member.value.append(to: &out, indent: indent, level: level + 1)
            }
            if !members.isEmpty { newline(level) }
            out.append(UInt8(ascii: "}"))
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            let scalarsOnly = elements.allSatisfy { if case .object = $0 { return false }; if case .array = $0 { return false }; return true }
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(contentsOf: scalarsOnly && indent != nil ? Array(", ".utf8) : [UInt8(ascii: ",")]) }
                if !scalarsOnly { newline(level + 1) }
                element.append(to: &out, indent: indent, level: level + 1)
            }
            if !scalarsOnly, !elements.isEmpty { newline(level) }
            out.append(UInt8(ascii: "]"))
        case .string(let s): JSONValue.appendQuoted(s, to: &out)
        case .unsignedInteger(let u): out.append(contentsOf: Array(String(u).utf8))
        case .number(let d):
            if !d.isFinite { out.append(contentsOf: Array("null".utf8)) }
            // Non-negative integral values parse as .unsignedInteger, so an integral .number came from
            // text like "6.0" (keep the fraction) or is negative (print it as an integer).
            else if d == d.rounded(), d < 0, d > -1e15 { out.append(contentsOf: Array(String(Int64(d)).utf8)) }
            else { out.append(contentsOf: Array(String(d).utf8)) }
        case .bool(let b): out.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .null: out.append(contentsOf: Array("null".utf8))
        }
    }

    /// Appends `text` as a JSON string literal the way serde_json writes it: `"` and `\` escaped,
    /// \b \t \n \f \r for those controls, other controls below 0x20 as \u00xx (lowercase hex),
    /// everything else (including non-ASCII and DEL) as raw UTF-8.
    public static func appendQuoted(_ text: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5c, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5c, 0x5c])
            case 0x08: out.append(contentsOf: [0x5c, UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [0x5c, UInt8(ascii: "t")])
            case 0x0a: out.append(contentsOf: [0x5c, UInt8(ascii: "n")])
            case 0x0c: out.append(contentsOf: [0x5c, UInt8(ascii: "f")])
            case 0x0d: out.append(contentsOf: [0x5c, UInt8(ascii: "r")])
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xf)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

public struct JSONParseError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

private struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    var position = 0
    static let maxDepth = 128

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func error(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: position) }

    var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 { position += 1 }
    }

    mutating func expect(_ literal: String) throws {
        for byte in literal.utf8 {
            guard current == byte else { throw error("invalid literal (expected '\(literal)')") }
            position += 1
        }
    }

    mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw error("nesting deeper than \(Self.maxDepth)") }
        guard let c = current else { throw error("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    mutating func parseObject(depth: Int) throws -> JSONValue {
        position += 1
        var members: [(key: String, value: JSONValue)] = []
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") { position += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyStart = position
            let key = try parseString()
            guard seen.insert(key).inserted else {
                throw JSONParseError(message: "duplicate key \"\(key)\"", offset: keyStart)
            }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            members.append((key, try parseValue(depth: depth + 1)))
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            if current == UInt8(ascii: "}") { position += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    mutating func parseArray(depth: Int) throws -> JSONValue {
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { position += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            if current == UInt8(ascii: "]") { position += 1; return .array(elements) }
            throw error("expected ',' or ']'")
        }
    }

    mutating func parseHex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let c = current else { throw error("unexpected end in \\u escape") }
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("bad hex digit in \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    mutating func parseString() throws -> String {
        position += 1  // opening quote
        var utf8: [UInt8] = []
        while true {
            guard let c = current else { throw error("unterminated string") }
            position += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let s = String(validating: utf8, as: UTF8.self) else {
                    throw error("string is not valid UTF-8")
                }
                return s
            case UInt8(ascii: "\\"):
                guard let e = current else { throw error("unterminated escape") }
                position += 1
                switch e {
                case UInt8(ascii: "\""): utf8.append(0x22)
                case UInt8(ascii: "\\"): utf8.append(0x5c)
                case UInt8(ascii: "/"): utf8.append(0x2f)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0c)
                case UInt8(ascii: "n"): utf8.append(0x0a)
                case UInt8(ascii: "r"): utf8.append(0x0d)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xd800..<0xdc00).contains(scalar) {
                        guard current == UInt8(ascii: "\\") else { throw error("lone high surrogate") }
                        position += 1
                        guard current == UInt8(ascii: "u") else { throw error("lone high surrogate") }
                        position += 1
                        let low = try parseHex4()
                        guard (0xdc00..<0xe000).contains(low) else { throw error("bad low surrogate") }
                        scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                    } else if (0xdc00..<0xe000).contains(scalar) {
                        throw error("lone low surrogate")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                    utf8.append(contentsOf: Array(String(Character(unicode)).utf8))
                default: throw error("invalid escape")
                }
            case 0..<0x20:
                throw error("control character in string")
            default:
                utf8.append(c)
            }
        }
    }

    mutating func parseNumber() throws -> JSONValue {
        let start = position
        var isPlainInteger = true
        if current == UInt8(ascii: "-") { position += 1; isPlainInteger = false }
        func digits(_ parser: inout JSONParser) -> Int {
            var count = 0
            while let c = parser.current, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { parser.position += 1; count += 1 }
            return count
        }
        let integerStart = position
        let integerDigits = digits(&self)
        guard integerDigits > 0 else { throw error("invalid number") }
        if integerDigits > 1, bytes[integerStart] == UInt8(ascii: "0") { throw error("leading zero in number") }
        if current == UInt8(ascii: ".") {
            position += 1
            isPlainInteger = false
            guard digits(&self) > 0 else { throw error("invalid number fraction") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            isPlainInteger = false
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw error("invalid number exponent") }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        if isPlainInteger, let value = UInt64(text) { return .unsignedInteger(value) }
        guard let value = Double(text) else { throw error("invalid number") }
        return .number(value)
    }
}
