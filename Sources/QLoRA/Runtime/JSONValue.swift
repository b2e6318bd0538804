import Foundation

/// Any JSON value, for config blocks we carry through without interpreting every field
/// (`quantization_config`, unknown adapter_config keys).
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// From a JSONSerialization result.
    public init(any value: Any) {
        switch value {
        case let n as NSNumber:
            // JSONSerialization gives booleans as NSNumber too; their ObjC type code is "c".
            let type = String(cString: n.objCType)
            if type == "c" { self = .bool(n.boolValue) } else if type == "d" || type == "f" { self = .number(n.doubleValue) } else { self = .int(n.intValue) }
        case let s as String: self = .string(s)
        case let a as [Any]: self = .array(a.map(JSONValue.init(any:)))
        case let d as [String: Any]: self = .object(d.mapValues(JSONValue.init(any:)))
        default: self = .null
        }
    }

    /// For JSONSerialization.
    public var anyValue: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .number(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map(\.anyValue)
        case .object(let o): return o.mapValues(\.anyValue)
        }
    }

    /// True for an NSNumber that JSONSerialization made from `true` / `false`.
    public static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var doubleValue: Double? {
        switch self {
        case .number(let d): return d
        case .int(let i): return Double(i)
        default: return nil
        }
    }
    public var intValue: Int? { if case .int(let i) = self { return i } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}
