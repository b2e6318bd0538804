/// One GGUF metadata value (gguf.md: `gguf_metadata_value_type`).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    /// Elements of one type, stored typed (GGUFArray); nested arrays are arrays of arrays.
    case array(GGUFArray)

    /// An array of `elementType` (the raw type id) from values that all have that type.
    public static func array(elementType: UInt32, _ items: [GGUFValue]) -> GGUFValue {
        guard let type = TypeID(rawValue: elementType), let array = GGUFArray(elementType: type, values: items) else {
            preconditionFailure("GGUF array of type \(elementType) built from values of other types")
        }
        return .array(array)
    }

    /// The value type ids of the format.
    public enum TypeID: UInt32, Sendable {
        case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7, string = 8
        case array = 9, uint64 = 10, int64 = 11, float64 = 12
    }

    public var typeID: TypeID {
        switch self {
        case .uint8: .uint8; case .int8: .int8; case .uint16: .uint16; case .int16: .int16
        case .uint32: .uint32; case .int32: .int32; case .uint64: .uint64; case .int64: .int64
        case .float32: .float32; case .float64: .float64; case .bool: .bool; case .string: .string; case .array: .array
        }
    }

    /// An integer value of any width, if it is one and fits in Int.
    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v); case .int8(let v): Int(v); case .uint16(let v): Int(v); case .int16(let v): Int(v)
        case .uint32(let v): Int(v); case .int32(let v): Int(v); case .int64(let v): Int(v)
        case .uint64(let v): v <= UInt64(Int.max) ? Int(v) : nil
        default: nil
        }
    }

    /// A numeric value as Double (integers and floats).
    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: int.map(Double.init)
        }
    }

    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    /// The elements of an array as values (a copy: for long arrays use `typedArray`'s accessors).
    public var array: [GGUFValue]? { if case .array(let a) = self { a.values } else { nil } }
    public var typedArray: GGUFArray? { if case .array(let a) = self { a } else { nil } }

    /// A short rendering for listings: arrays show their length and first elements.
    public var summary: String {
        switch self {
        case .string(let s): return s.count > 80 ? "\"\(s.prefix(77))...\" (\(s.utf8.count) bytes)" : "\"\(s)\""
        case .array(let items):
            let head = (0..<min(4, items.count)).map { items[$0].summary }.joined(separator: ", ")
            return "[\(head)\(items.count > 4 ? ", ..." : "")] (\(items.count))"
        case .bool(let b): return String(b)
        case .float32(let v): return String(v)
        case .float64(let v): return String(v)
        default: return int.map(String.init) ?? "\(self)"
        }
    }
}
