import QLoRA

/// `qlora version`: the version, the CPU and the OpenBLAS kernel in use.
public enum VersionCommand: Command {
    public static let name = "version"
    public static let summary = "Print the version, the CPU features and the OpenBLAS kernel in use"
    public static let help = """
    Usage: qlora version   (also: qlora --version)

    Prints the qlora version, the CPU model and SIMD level, and which OpenBLAS kernel was loaded
    (and whether it was chosen from CPU flags or set by OPENBLAS_CORETYPE).
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        _ = try Arguments(arguments, command: name, valueOptions: [], flagOptions: [])
        let cpu = CPUFeatures.current
        let simd = cpu.hasAVX512BF16 ? "AVX-512 + BF16" : cpu.hasAVX512 ? "AVX-512" : cpu.hasAVX2 ? "AVX2" : "baseline x86-64"
        let blas = try OpenBLAS.ensureLoaded()
        print("qlora \(QLoRAVersion.string)")
        print("cpu: \(cpu.modelName) (\(simd))")
        print("blas: \(blas.summary)")
        return 0
    }
}
