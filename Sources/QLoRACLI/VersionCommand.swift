import QLoRA

/// `qlora version`: the version, the CPU, the OpenBLAS kernel and the bf16 GEMM kernel in use.
public enum VersionCommand: Command {
    public static let name = "version"
    public static let summary = "Print the version, the CPU features and the GEMM kernels in use"
    public static let help = """
    Usage: qlora version   (also: qlora --version)

    Prints the qlora version, the CPU model and SIMD level, which OpenBLAS kernel was loaded (and
    whether it was chosen from CPU flags or set by OPENBLAS_CORETYPE), and which kernel multiplies
    with the frozen weights under bf16 compute:
      bf16            bf16 operands, fp32 accumulation (AVX512-BF16; the default where the CPU has it)
      fp32            bf16-rounded weights in fp32 through OpenBLAS sgemm (the default elsewhere)
      bf16-reference  the bf16 arithmetic by a portable scalar twin, bit-identical and slow (checks)
    Set QLORA_KERNEL to one of these to force it for any command.
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        _ = try Arguments(arguments, command: name, valueOptions: [], flagOptions: [])
        let cpu = CPUFeatures.current
        let simd = cpu.hasAVX512BF16 ? "AVX-512 + BF16" : cpu.hasAVX512 ? "AVX-512" : cpu.hasAVX2 ? "AVX2" : "baseline x86-64"
        let blas = try OpenBLAS.ensureLoaded()
        print("qlora \(QLoRAVersion.string)")
        print("cpu: \(cpu.modelName) (\(simd))")
        print("blas: \(blas.summary)")
        print("gemm: \(GemmKernel.summary)")
        return 0
    }
}
