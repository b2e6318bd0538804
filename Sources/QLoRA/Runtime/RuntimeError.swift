/// Errors of the runtime environment (libraries, CPU).
public enum RuntimeError: Error, CustomStringConvertible, Equatable {
    case openBLASMissing(reason: String)

    public var description: String {
        switch self {
        case .openBLASMissing(let reason):
            return "OpenBLAS could not be loaded (\(reason)). Install it with: apt-get install -y libopenblas-dev"
        }
    }
}
