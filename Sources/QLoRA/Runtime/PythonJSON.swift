import Foundation

/// JSON as Python writes it, for the files bitsandbytes and transformers produce: number literals are
/// kept as their original text (so `10000.0`, `1e-05` and `-1` survive a round trip), object key order
/// is kept, and `render` reproduces `json.dumps(value, indent=2, sort_keys=True)` (transformers'
/// config.json) or the compact `json.dumps(value)` form with ", " and ": " separators.
public indirect enum PythonJSON: Equatable, Sendable {
    case object([(key: String, value: PythonJSON)])
    case array([PythonJSON])
    case string(String)
    /// The literal text of a number.
    case number(String)
    case bool(Bool)
    case null

    public static func == (a: PythonJSON, b: PythonJSON) -> Bool { a.render(indent: nil, sortKeys: false) == b.render(indent: nil, sortKeys: false) }

    public subscript(key: String) -> PythonJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// Sets (replacing or appending) a key of an object.
    public mutating func set(_ key: String, _ value: PythonJSON) {
        guard case .object(var members) = self else { return }
        if let i = members.firstIndex(where: { $0.key == key }) { members[i].value = value } else { members.append((key, value)) }
        self = .object(members)
    }

    /// A float32 value as Python prints `float(x)`.
    public static func float(_ x: Float) -> PythonJSON { .number(PythonFloat.repr(Double(x))) }
    public static func int(_ x: Int) -> PythonJSON { .number(String(x)) }

    // MARK: Rendering

    /// `indent` nil: compact `json.dumps` (", " / ": "); otherwise that many spaces per level.
    public func render(indent: Int?, sortKeys: Bool) -> String {
        var out = ""
        write(&out, indent: indent, sortKeys: sortKeys, level: 0)
        return out
    }

    private func write(_ out: inout String, indent: Int?, sortKeys: Bool, level: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let text): out += text
        case .string(let s): Self.writeString(s, to: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += indent == nil ? ", " : "," }
                if let indent { out += "\n" + String(repeating: " ", count: indent * (level + 1)) }
                item.write(&out, indent: indent, sortKeys: sortKeys, level: level + 1)
            }
            if let indent { out += "\n" + String(repeating: " ", count: indent * level) }
            out += "]"
        case .object(var members):
            if members.isEmpty { out += "{}"; return }
            if sortKeys { members.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } }
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += indent == nil ? ", " : "," }
                if let indent { out += "\n" + String(repeating: " ", count: indent * (level + 1)) }
                Self.writeString(member.key, to: &out)
                out += ": "
                member.value.write(&out, indent: indent, sortKeys: sortKeys, level: level + 1)
            }
            if let indent { out += "\n" + String(repeating: " ", count: indent * level) }
            out += "}"
        }
    }

    /// A JSON string as Python's `json.dumps` writes it: with `ensureASCII` (its default) every non-ASCII
    /// character becomes a \u escape (surrogate pairs above U+FFFF); without, only control characters do,
    /// and U+FEFF with `escapeByteOrderMark` (Foundation's JSON reader drops it raw at a string's start).
    static func writeString(_ s: String, to out: inout String, ensureASCII: Bool = true, escapeByteOrderMark: Bool = false) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 || (ensureASCII && scalar.value > 0x7e) || (escapeByteOrderMark && scalar.value == 0xFEFF) {
                    if scalar.value > 0xffff {
                        let v = scalar.value - 0x10000
                        out += String(format: "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff))
                    } else {
                        out += String(format: "\\u%04x", scalar.value)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    // MARK: Parsing

    public struct ParseError: Error, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    public static func parse(_ data: Data) throws -> PythonJSON {
        var parser = Parser(bytes: [UInt8](data))
        parser.skipSpace()
        let value = try parser.value()
        parser.skipSpace()
        guard parser.i == parser.bytes.count else { throw ParseError(offset: parser.i, reason: "trailing characters") }
        return value
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x0a, 0x0d, 0x09].contains(bytes[i]) { i += 1 }
        }

        func fail(_ reason: String) -> ParseError { ParseError(offset: i, reason: reason) }

        mutating func literal(_ word: String, _ value: PythonJSON) throws -> PythonJSON {
            let w = Array(word.utf8)
            guard i + w.count <= bytes.count, Array(bytes[i..<(i + w.count)]) == w else { throw fail("expected \(word)") }
            i += w.count
            return value
        }

        mutating func value() throws -> PythonJSON {
            guard i < bytes.count else { throw fail("unexpected end") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(key: String, value: PythonJSON)] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                    let key = try string()
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    skipSpace()
                    members.append((key, try value()))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [PythonJSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value())
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "N"): return try literal("NaN", .number("NaN"))
            case UInt8(ascii: "I"): return try literal("Infinity", .number("Infinity"))
            default:
                let start = i
                if bytes[i] == UInt8(ascii: "-"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "I") {
                    i += 1
                    _ = try literal("Infinity", .null)
                    return .number("-Infinity")
                }
                while i < bytes.count, "+-0123456789.eE".utf8.contains(bytes[i]) { i += 1 }
                guard i > start, let text = String(bytes: bytes[start..<i], encoding: .utf8), Double(text) != nil else {
                    throw fail("unexpected character")
                }
                return .number(text)
            }
        }

        mutating func string() throws -> String {
            i += 1   // opening quote
            var scalars = String.UnicodeScalarView()
            var raw: [UInt8] = []
            func flush() throws {
                guard !raw.isEmpty else { return }
                guard let s = String(bytes: raw, encoding: .utf8) else { throw ParseError(offset: i, reason: "invalid UTF-8") }
                scalars.append(contentsOf: s.unicodeScalars)
                raw.removeAll()
            }
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c != UInt8(ascii: "\\") { raw.append(c); i += 1; continue }
                try flush()
                guard i + 1 < bytes.count else { throw fail("bad escape") }
                let e = bytes[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xd800..<0xdc00).contains(code), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                        i += 2
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("bad \\u escape") }
                    scalars.append(scalar)
                default: scalars.append(Unicode.Scalar(e))
                }
            }
            try flush()
            return String(scalars)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count, let text = String(bytes: bytes[i..<(i + 4)], encoding: .ascii),
                  let v = UInt32(text, radix: 16) else { throw fail("bad \\u escape") }
            i += 4
            return v
        }
    }
}

/// Python's `repr(float)`: the shortest decimal string that round-trips (Swift's `description` finds
/// the same digits), laid out like CPython: fixed notation when the decimal exponent is in [-4, 16),
/// otherwise `d.ddde±XX`; integral values keep a trailing `.0`.
public enum PythonFloat {
    public static func repr(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x < 0 ? "-inf" : "inf" }
        if x == 0 { return x.sign == .minus ? "-0.0" : "0.0" }
        // Shortest round-trip digits and exponent from Swift's description.
        var text = abs(x).description
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let integerPart = String(parts[0]), fraction = parts.count > 1 ? String(parts[1]) : ""
        var digits = integerPart + fraction
        var decimalPoint = integerPart.count + exponent      // value = 0.digits * 10^decimalPoint
        while digits.hasPrefix("0") { digits.removeFirst(); decimalPoint -= 1 }
        while digits.hasSuffix("0") { digits.removeLast() }
        let sign = x < 0 ? "-" : ""
        if decimalPoint > -4 && decimalPoint <= 16 {
            if decimalPoint <= 0 {
                return sign + "0." + String(repeating: "0", count: -decimalPoint) + digits
            }
            if digits.count <= decimalPoint {
                return sign + digits + String(repeating: "0", count: decimalPoint - digits.count) + ".0"
            }
            let cut = digits.index(digits.startIndex, offsetBy: decimalPoint)
            return sign + digits[..<cut] + "." + digits[cut...]
        }
        let e = decimalPoint - 1
        let mantissa = digits.count == 1 ? digits : String(digits.first!) + "." + digits.dropFirst()
        return sign + mantissa + "e" + (e < 0 ? "-" : "+") + (abs(e) < 10 ? "0" : "") + String(abs(e))
    }
}
