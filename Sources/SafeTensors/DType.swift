/// safetensors element types, spelled as in the file header. The case order is the reference
/// library's `Dtype` order (by alignment, then a fixed total order): the writer lays tensors out by
/// this order descending, so do not reorder the cases.
public enum DType: String, Sendable, CaseIterable, Codable {
    case BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3: return 1
        case .I16, .U16, .F16, .BF16: return 2
        case .I32, .U32, .F32: return 4
        case .F64, .I64, .U64: return 8
        }
    }

    /// True for F32, F16 and BF16: the types `floats(_:)` converts.
    public var isFloat16or32: Bool { self == .F32 || self == .F16 || self == .BF16 }
}
