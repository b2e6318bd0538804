/// What can be wrong with a GGUF file; every case names the file and says what to do.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case notGGUF(path: String)
    case bigEndian(path: String)
    case unsupportedVersion(path: String, version: UInt32)
    case truncated(path: String, offset: Int, needed: String)
    case invalid(path: String, detail: String)
    case unsupportedType(path: String, tensor: String, type: String)
    case missingTensor(path: String, tensor: String)
    case missingKey(path: String, key: String)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "\(path): cannot open the GGUF file: \(reason)"
        case .notGGUF(let path):
            return "\(path): not a GGUF file (it does not start with the bytes 'GGUF')"
        case .bigEndian(let path):
            return "\(path): a big-endian GGUF file; only little-endian files are read (convert it on a little-endian machine with llama.cpp's tools)"
        case .unsupportedVersion(let path, let version):
            return "\(path): GGUF version \(version) is not supported (versions 2 and 3 are); re-convert it with a current llama.cpp"
        case .truncated(let path, let offset, let needed):
            return "\(path): the file ends at byte \(offset) where \(needed) should follow: it is truncated or corrupt; download it again"
        case .invalid(let path, let detail):
            return "\(path): invalid GGUF file: \(detail)"
        case .unsupportedType(let path, let tensor, let type):
            let list = GGMLType.supported.map(\.description).joined(separator: ", ")
            return "\(path): tensor '\(tensor)' has type \(type), which is not supported (supported: \(list)); use a GGUF quantized with one of those"
        case .missingTensor(let path, let tensor):
            return "\(path): the GGUF file has no tensor '\(tensor)'"
        case .missingKey(let path, let key):
            return "\(path): the GGUF metadata lacks '\(key)'"
        }
    }
}
