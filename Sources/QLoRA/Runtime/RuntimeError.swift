/// Errors of the runtime environment (libraries, CPU).
public enum RuntimeError: Error, CustomStringConvertible, Equatable {
    case openBLASMissing(reason: String)
    case writeFailed(path: String, reason: String)
    case badKernel(value: String, reason: String)
    case mpiMissing(reason: String)
    case mpiUnsupported(library: String, reason: String)
    case mpiFailed(call: String, code: Int32, detail: String)
    case outputInUse(path: String, pid: Int32?, lock: String)

    public var description: String {
        switch self {
        case .openBLASMissing(let reason):
            return "OpenBLAS could not be loaded (\(reason)). Install it with: apt-get install -y libopenblas-dev"
        case .writeFailed(let path, let reason):
            return "\(path): could not write (\(reason)). Nothing was left under that name; check free disk space and permissions."
        case .outputInUse(let path, let pid, let lock):
            return "\(path) is in use by another qlora train run\(pid.map { " (pid \($0))" } ?? ""); wait for it to finish or choose another --output. If no run is using it, delete \(lock)."
        case .badKernel(let value, let reason):
            return "QLORA_KERNEL=\(value) cannot be used: \(reason). Unset it to let qlora choose."
        case .mpiMissing(let reason):
            return "distributed training needs Open MPI's libmpi, which could not be loaded (\(reason)). Install it with: apt-get install -y openmpi-bin libopenmpi-dev"
        case .mpiUnsupported(let library, let reason):
            return "\(library) cannot be used for distributed training: \(reason). qlora supports Open MPI only: apt-get install -y openmpi-bin libopenmpi-dev (or point QLORA_MPI_LIBRARY at Open MPI's libmpi.so.40)"
        case .mpiFailed(let call, let code, let detail):
            return "\(call) failed with error \(code) (\(detail))"
        }
    }
}
