import Foundation
import SafeTensors

/// JSON text exactly as Python's `json.dumps(value, indent=2, sort_keys=True)` writes it (what PEFT and
/// transformers use for adapter_config.json / config.json), so our files diff cleanly against theirs.
public enum PythonJSON {
    public static func dumps(_ value: JSONValue, indent: Int? = 2, sortKeys: Bool = true) -> String {
        var out = ""
        write(value, into: &out, level: 0, indent: indent, sortKeys: sortKeys)
        return out
    }

    private static func write(_ value: JSONValue, into out: inout String, level: Int, indent: Int?, sortKeys: Bool) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .unsignedInteger(let u): out += String(u)
        case .number(let d): out += repr(d)
        case .string(let s): out += quote(s)
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                out += i == 0 ? "" : (indent == nil ? ", " : ",")
                newline(&out, level + 1, indent)
                write(item, into: &out, level: level + 1, indent: indent, sortKeys: sortKeys)
            }
            newline(&out, level, indent)
            out += "]"
        case .object(let pairs):
            guard !pairs.isEmpty else { out += "{}"; return }
            out += "{"
            // Python sorts keys by code point.
            let ordered = sortKeys ? pairs.sorted { $0.key.unicodeScalars.map(\.value).lexicographicallyPrecedes($1.key.unicodeScalars.map(\.value)) } : pairs
            for (i, pair) in ordered.enumerated() {
                out += i == 0 ? "" : (indent == nil ? ", " : ",")
                newline(&out, level + 1, indent)
                out += quote(pair.key) + ": "
                write(pair.value, into: &out, level: level + 1, indent: indent, sortKeys: sortKeys)
            }
            newline(&out, level, indent)
            out += "}"
        }
    }

    private static func newline(_ out: inout String, _ level: Int, _ indent: Int?) {
        guard let indent else { return }
        out += "\n" + String(repeating: " ", count: level * indent)
    }

    /// Python's float repr: shortest round-trip digits, `1e-05` style exponents, `.0` on integers.
    public static func repr(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        // Swift's description is also shortest round-trip; only the notation differs.
        var s = "\(d)"
        if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            var mantissa = String(s[..<e])
            var exponent = String(s[s.index(after: e)...])
            if mantissa.hasSuffix(".0") { mantissa.removeLast(2) }
            let negative = exponent.hasPrefix("-")
            exponent = exponent.trimmingCharacters(in: CharacterSet(charactersIn: "+-"))
            if exponent.count < 2 { exponent = "0" + exponent }
            s = mantissa + "e" + (negative ? "-" : "+") + exponent
            return s
        }
        // Python switches to exponent notation at 1e16 and below 1e-4; Swift at different points.
        let magnitude = abs(d)
        if magnitude != 0 && (magnitude >= 1e16 || magnitude < 1e-4) {
            return repr(fromScientific: d)
        }
        return s
    }

    private static func repr(fromScientific d: Double) -> String {
        // Build the shortest digits via Swift's description of the value, then place the exponent.
        let text = "\(d)"
        let negative = d < 0
        var digits = text.filter { $0.isNumber }
        let pointIndex = text.firstIndex(of: ".").map { text.distance(from: text.startIndex, to: $0) - (negative ? 1 : 0) } ?? digits.count
        var exponent = pointIndex - 1
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); exponent -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let mantissa = digits.count > 1 ? "\(digits.first!).\(digits.dropFirst())" : String(digits)
        let sign = exponent < 0 ? "-" : "+"
        let e = abs(exponent) < 10 ? "0\(abs(exponent))" : "\(abs(exponent))"
        return (negative ? "-" : "") + mantissa + "e" + sign + e
    }

    /// A JSON string with Python's escaping (ensure_ascii=True).
    public static func quote(_ s: String) -> String {
        var out = "\""
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
                if scalar.value < 0x20 || scalar.value > 0x7e {
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
        return out + "\""
    }
}
