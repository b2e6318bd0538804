import Foundation

/// What the CPU can do, read once from /proc/cpuinfo (Linux). Used to pick the OpenBLAS kernel
/// before the library loads and to choose SIMD code paths at run time: CI and development machines
/// are sometimes AVX-512 (Intel Xeon, AMD Zen 4) and sometimes AVX2 only (older AMD EPYC).
public struct CPUFeatures: Sendable, Equatable {
    public var flags: Set<String>
    public var modelName: String

    public static let current: CPUFeatures = CPUFeatures.read()

    public init(flags: Set<String>, modelName: String) {
        self.flags = flags
        self.modelName = modelName
    }

    /// The AVX-512 subset OpenBLAS' SkylakeX kernels use.
    public var hasAVX512: Bool {
        ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }
    public var hasAVX512BF16: Bool { hasAVX512 && flags.contains("avx512_bf16") }
    public var hasAVX2: Bool { flags.contains("avx2") && flags.contains("fma") }

    static func read() -> CPUFeatures {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else {
            return CPUFeatures(flags: [], modelName: "unknown")
        }
        return parse(cpuinfo: text)
    }

    /// Parses the first processor's `flags` and `model name` lines.
    public static func parse(cpuinfo text: String) -> CPUFeatures {
        var flags = Set<String>()
        var model = "unknown"
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if key == "flags", flags.isEmpty {
                flags = Set(value.split(separator: " ").map(String.init))
            } else if key == "model name", model == "unknown" {
                model = value
            }
            if !flags.isEmpty && model != "unknown" { break }
        }
        return CPUFeatures(flags: flags, modelName: model)
    }
}
