import CQLoRAKernels
import Foundation

/// Which kernel multiplies activations with the frozen base weights when the compute precision is bf16.
/// fp16 and fp32 compute always use `fp32`; LoRA's own small GEMMs are always fp32 sgemm.
public enum GemmKernel: String, CaseIterable, Sendable {
    /// A dequantized tile of bf16-rounded values in fp32 layout through OpenBLAS sgemm (any CPU).
    case fp32
    /// bf16 operands, fp32 accumulation, `vdpbf16ps` (AVX512-BF16): weights dequantized straight into
    /// packed panels, activations rounded to bf16 once per GEMM (Kernels/BF16Gemm.swift).
    case bf16
    /// The same arithmetic, bit for bit, by the portable scalar twin: any CPU, slow; for tests and checks.
    case bf16Reference = "bf16-reference"

    /// The environment variable that forces a kernel.
    public static let environmentKey = "QLORA_KERNEL"

    /// The kernel new layers get (BaseLinear.kernel). Default: bf16 where the CPU has AVX512-BF16, else
    /// fp32; the CLI and the benchmarks set it once at start from `QLORA_KERNEL`.
    nonisolated(unsafe) public static var current: GemmKernel = automatic

    /// What this CPU runs best.
    public static var automatic: GemmKernel { hardwareHasBF16 ? .bf16 : .fp32 }

    /// The fastest C level on this CPU, for work whose bits do not depend on the level.
    public static let fastestLevel: Int32 = qlora_bf16_best_level()

    /// Whether the CPU has the instructions of `bf16`.
    public static var hardwareHasBF16: Bool { fastestLevel >= 1 }

    /// Whether the bf16 GEMM (SIMD or its twin) runs.
    public var usesBF16: Bool { self != .fp32 }

    /// The level the C kernels run at: 1 = AVX-512, 0 = the scalar twin (Sources/CQLoRAKernels/include/GemmBF16.h).
    public var level: Int32 { self == .bf16 && Self.hardwareHasBF16 ? 1 : 0 }

    /// The kernel `QLORA_KERNEL` asks for (nil when unset), refusing a value this CPU cannot run.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GemmKernel? {
        guard let value = environment[environmentKey], !value.isEmpty else { return nil }
        guard let kernel = GemmKernel(rawValue: value) else {
            throw RuntimeError.badKernel(value: value, reason: "known kernels: \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if kernel == .bf16 && !hardwareHasBF16 {
            throw RuntimeError.badKernel(value: value, reason: "this CPU has no AVX512-BF16 (avx512_bf16 in /proc/cpuinfo); use fp32, or bf16-reference for the slow portable twin")
        }
        return kernel
    }

    /// Applies `QLORA_KERNEL` if set (the CLI and the benchmarks call this once at start).
    public static func applyEnvironment() throws {
        if let kernel = try fromEnvironment() { current = kernel }
    }

    /// One line for `qlora version` and the benchmarks.
    public static var summary: String {
        let chosen = ProcessInfo.processInfo.environment[environmentKey].map { _ in "forced by \(environmentKey)" } ?? "chosen from CPU flags"
        return "bf16-compute GEMM kernel \(current.rawValue) (\(chosen); AVX512-BF16 \(hardwareHasBF16 ? "present" : "absent"))"
    }
}
