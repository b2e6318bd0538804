import SafeTensors

/// Conveniences on the SafeTensors module's order-keeping JSONValue for config files.
extension JSONValue {
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }

    /// An integer value (Python `int`), non-negative ones exact.
    public static func int(_ i: Int) -> JSONValue { i >= 0 ? .unsignedInteger(UInt64(i)) : .number(Double(i)) }

    /// An object from a dictionary (key order does not matter to writers that sort keys).
    public static func dictionary(_ fields: [String: JSONValue]) -> JSONValue {
        .object(fields.map { (key: $0.key, value: $0.value) })
    }

    /// The members of an object by key (first wins), nil for other values.
    public var members: [String: JSONValue]? {
        guard case .object(let pairs) = self else { return nil }
        var result: [String: JSONValue] = [:]
        for (key, value) in pairs where result[key] == nil { result[key] = value }
        return result
    }

    /// Parses a JSON file's bytes.
    public static func parse(data: Data) throws -> JSONValue { try parse([UInt8](data)) }
}

import Foundation

extension PythonJSON {
    /// Converts a parsed JSONValue (numbers become Python literals: integers as written, floats by repr).
    public init(_ value: JSONValue) {
        switch value {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .string(let s): self = .string(s)
        case .unsignedInteger(let u): self = .number(String(u))
        case .number(let d): self = d == d.rounded() && abs(d) < 1e16 && d < 0 && !"\(d)".contains("e") ? .number(String(Int(d))) : .number(PythonFloat.repr(d))
        case .array(let items): self = .array(items.map(PythonJSON.init))
        case .object(let pairs): self = .object(pairs.map { (key: $0.key, value: PythonJSON($0.value)) })
        }
    }

    /// `json.dumps(value, indent=2, sort_keys=True)`: what PEFT and transformers write for their JSON files.
    public static func dumps(_ value: JSONValue) -> String { PythonJSON(value).render(indent: 2, sortKeys: true) }
}
