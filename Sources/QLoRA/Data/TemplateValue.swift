import Foundation

/// A value inside a chat template (the Jinja2 / Python data model, reduced to what templates use).
public indirect enum TemplateValue: Equatable, CustomStringConvertible {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    /// A mapping with keys in insertion order.
    case object([(String, TemplateValue)])
    /// `namespace(...)`: a mutable object shared by reference (for `set ns.x = ...`).
    case namespace(TemplateNamespace)
    /// A built-in function, by name.
    case function(String)

    public static func == (lhs: TemplateValue, rhs: TemplateValue) -> Bool {
        switch (lhs, rhs) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.int(let a), .double(let b)), (.double(let b), .int(let a)): return Double(a) == b
        case (.double(let a), .double(let b)): return a == b
        case (.string(let a), .string(let b)): return Array(a.unicodeScalars) == Array(b.unicodeScalars)
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.namespace(let a), .namespace(let b)): return a === b
        case (.function(let a), .function(let b)): return a == b
        default: return false
        }
    }

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let value): return value
        case .int(let value): return value != 0
        case .double(let value): return value != 0
        case .string(let value): return !value.isEmpty
        case .array(let value): return !value.isEmpty
        case .object(let value): return !value.isEmpty
        case .namespace, .function: return true
        }
    }

    /// What `{{ value }}` prints (Python `str`).
    public var description: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let value): return value ? "True" : "False"
        case .int(let value): return String(value)
        case .double(let value): return TemplateValue.pythonFloat(value)
        case .string(let value): return value
        case .array, .object, .namespace, .function: return pythonRepr
        }
    }

    /// Python `repr`, used inside containers.
    var pythonRepr: String {
        switch self {
        case .string(let value):
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "'\(escaped)'"
        case .array(let items): return "[" + items.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .object(let pairs): return "{" + pairs.map { "'\($0.0)': \($0.1.pythonRepr)" }.joined(separator: ", ") + "}"
        case .namespace(let space): return "<Namespace \(TemplateValue.object(space.values).pythonRepr)>"
        case .function(let name): return "<function \(name)>"
        case .undefined: return "Undefined"
        default: return description
        }
    }

    static func pythonFloat(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return "\(value)"
    }

    /// `json.dumps(value, ensure_ascii=False)` with `indent` (nil: one line, ", " and ": " separators).
    func json(indent: Int?, level: Int = 0) -> String {
        let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let closing = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let separator = indent == nil ? ", " : ","
        switch self {
        case .undefined, .none, .function: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value): return TemplateValue.pythonFloat(value)
        case .string(let value):
            var out = ""
            PythonJSON.writeString(value, to: &out, ensureASCII: false)
            return out
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[" + newline + items.map { $0.json(indent: indent, level: level + 1) }.joined(separator: separator + newline) + closing + "]"
        case .object(let pairs):
            if pairs.isEmpty { return "{}" }
            return "{" + newline + pairs.map { TemplateValue.string($0.0).json(indent: nil) + ": " + $0.1.json(indent: indent, level: level + 1) }
                .joined(separator: separator + newline) + closing + "}"
        case .namespace(let space): return TemplateValue.object(space.values).json(indent: indent, level: level)
        }
    }

    /// Attribute or key lookup (`value.name`, `value['name']`); undefined when missing.
    func member(_ name: String) -> TemplateValue {
        switch self {
        case .object(let pairs): return pairs.first { $0.0 == name }?.1 ?? .undefined
        case .namespace(let space): return space.values.first { $0.0 == name }?.1 ?? .undefined
        default: return .undefined
        }
    }

    /// Converts Foundation JSON (from JSONSerialization) to a template value.
    public init(json: Any?) {
        switch json {
        case nil, is NSNull: self = .none
        case let string as String: self = .string(string)
        case let number as NSNumber:
            switch String(cString: number.objCType) {
            case "c", "B": self = .bool(number.boolValue)
            case "d", "f": self = .double(number.doubleValue)
            default: self = .int(number.intValue)
            }
        case let array as [Any]: self = .array(array.map { TemplateValue(json: $0) })
        case let object as [String: Any]:
            self = .object(object.keys.sorted().map { ($0, TemplateValue(json: object[$0])) })
        default: self = .undefined
        }
    }
}

/// The mutable storage of a Jinja `namespace`.
public final class TemplateNamespace {
    var values: [(String, TemplateValue)]
    init(_ values: [(String, TemplateValue)]) { self.values = values }

    func set(_ name: String, _ value: TemplateValue) {
        if let index = values.firstIndex(where: { $0.0 == name }) { values[index].1 = value } else { values.append((name, value)) }
    }
}
