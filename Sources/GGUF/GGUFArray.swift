/// A metadata array, held as one typed Swift array: a 262k-token vocabulary is a `[String]` and its
/// scores a `[Float]` (about 6 MB for Gemma 3's), not one `GGUFValue` per element (about 40 MB).
public struct GGUFArray: Sendable, Equatable {
    public enum Elements: Sendable, Equatable {
        case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16]), uint32([UInt32]), int32([Int32])
        case uint64([UInt64]), int64([Int64]), float32([Float]), float64([Double]), bool([Bool]), string([String])
        /// Nested arrays (each of its own element type).
        case array([GGUFArray])
    }

    public var elements: Elements

    public init(_ elements: Elements) { self.elements = elements }

    /// The elements' value type id (`GGUFValue.TypeID`).
    public var elementType: GGUFValue.TypeID {
        switch elements {
        case .uint8: .uint8; case .int8: .int8; case .uint16: .uint16; case .int16: .int16
        case .uint32: .uint32; case .int32: .int32; case .uint64: .uint64; case .int64: .int64
        case .float32: .float32; case .float64: .float64; case .bool: .bool; case .string: .string; case .array: .array
        }
    }

    public var count: Int {
        switch elements {
        case .uint8(let a): a.count; case .int8(let a): a.count; case .uint16(let a): a.count; case .int16(let a): a.count
        case .uint32(let a): a.count; case .int32(let a): a.count; case .uint64(let a): a.count; case .int64(let a): a.count
        case .float32(let a): a.count; case .float64(let a): a.count; case .bool(let a): a.count; case .string(let a): a.count
        case .array(let a): a.count
        }
    }

    public subscript(index: Int) -> GGUFValue {
        switch elements {
        case .uint8(let a): .uint8(a[index]); case .int8(let a): .int8(a[index])
        case .uint16(let a): .uint16(a[index]); case .int16(let a): .int16(a[index])
        case .uint32(let a): .uint32(a[index]); case .int32(let a): .int32(a[index])
        case .uint64(let a): .uint64(a[index]); case .int64(let a): .int64(a[index])
        case .float32(let a): .float32(a[index]); case .float64(let a): .float64(a[index])
        case .bool(let a): .bool(a[index]); case .string(let a): .string(a[index]); case .array(let a): .array(a[index])
        }
    }

    /// Every element as a `GGUFValue` (a copy: prefer the typed accessors for long arrays).
    public var values: [GGUFValue] { (0..<count).map { self[$0] } }

    /// An array of `elementType` from values of that type; nil when a value has another type.
    public init?(elementType: GGUFValue.TypeID, values: [GGUFValue]) {
        guard let elements = Self.collect(elementType, count: values.count, { values[$0] }) else { return nil }
        self.elements = elements
    }

    /// `count` elements of `type`, the i-th from `next(i)`, into one typed array; nil when one has another type.
    static func collect(_ type: GGUFValue.TypeID, count: Int, _ next: (Int) throws -> GGUFValue) rethrows -> Elements? {
        switch type {
        case .uint8: return try gather(count, next) { if case .uint8(let x) = $0 { x } else { nil } }.map(Elements.uint8)
        case .int8: return try gather(count, next) { if case .int8(let x) = $0 { x } else { nil } }.map(Elements.int8)
        case .uint16: return try gather(count, next) { if case .uint16(let x) = $0 { x } else { nil } }.map(Elements.uint16)
        case .int16: return try gather(count, next) { if case .int16(let x) = $0 { x } else { nil } }.map(Elements.int16)
        case .uint32: return try gather(count, next) { if case .uint32(let x) = $0 { x } else { nil } }.map(Elements.uint32)
        case .int32: return try gather(count, next) { if case .int32(let x) = $0 { x } else { nil } }.map(Elements.int32)
        case .uint64: return try gather(count, next) { if case .uint64(let x) = $0 { x } else { nil } }.map(Elements.uint64)
        case .int64: return try gather(count, next) { if case .int64(let x) = $0 { x } else { nil } }.map(Elements.int64)
        case .float32: return try gather(count, next) { if case .float32(let x) = $0 { x } else { nil } }.map(Elements.float32)
        case .float64: return try gather(count, next) { if case .float64(let x) = $0 { x } else { nil } }.map(Elements.float64)
        case .bool: return try gather(count, next) { if case .bool(let x) = $0 { x } else { nil } }.map(Elements.bool)
        case .string: return try gather(count, next) { if case .string(let x) = $0 { x } else { nil } }.map(Elements.string)
        case .array: return try gather(count, next) { if case .array(let x) = $0 { x } else { nil } }.map(Elements.array)
        }
    }

    private static func gather<T>(_ count: Int, _ next: (Int) throws -> GGUFValue, _ extract: (GGUFValue) -> T?) rethrows -> [T]? {
        var out: [T] = []
        out.reserveCapacity(count)
        for i in 0..<count { guard let x = extract(try next(i)) else { return nil }; out.append(x) }
        return out
    }

    /// The elements as strings, if they are strings.
    public var strings: [String]? { if case .string(let a) = elements { a } else { nil } }

    /// The elements as Float, if they are float32.
    public var floats: [Float]? { if case .float32(let a) = elements { a } else { nil } }

    /// The elements as Int, if they are integers that fit.
    public var ints: [Int]? {
        switch elements {
        case .uint8(let a): a.map(Int.init); case .int8(let a): a.map(Int.init)
        case .uint16(let a): a.map(Int.init); case .int16(let a): a.map(Int.init)
        case .uint32(let a): a.map(Int.init); case .int32(let a): a.map(Int.init); case .int64(let a): a.map(Int.init)
        case .uint64(let a): a.allSatisfy { $0 <= UInt64(Int.max) } ? a.map(Int.init) : nil
        default: nil
        }
    }
}
