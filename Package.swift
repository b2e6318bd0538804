// swift-tools-version:6.0
import PackageDescription

// Release builds drop overflow/bounds checks in the numeric code; debug keeps them for the tests.
let fastMath: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "qlora-swift",
    products: [
        .executable(name: "qlora", targets: ["qlora"]),
        .library(name: "QLoRA", targets: ["QLoRA"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "GGUF", targets: ["GGUF"]),
    ],
    targets: [
        // The safetensors format only: Foundation, nothing else.
        .target(name: "SafeTensors", swiftSettings: fastMath),
        // The GGUF format (llama.cpp): reader, ggml block types, writer. Foundation only.
        .target(name: "GGUF", swiftSettings: fastMath),
        // The library: kernels, NF4 store, model, LoRA, training, data, memory accounting.
        // OpenBLAS is loaded at run time (Runtime/OpenBLAS.swift), never linked, so that the
        // kernel choice (OPENBLAS_CORETYPE) can be made before the library initializes.
        .target(name: "CQLoRAKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),   // double-quant scales: no FMA
        .target(name: "QLoRA", dependencies: ["SafeTensors", "GGUF", "CQLoRAKernels"], swiftSettings: fastMath,
                linkerSettings: [.linkedLibrary("dl")]),
        // One file per subcommand; argument parsing by hand.
        .target(name: "QLoRACLI", dependencies: ["QLoRA", "SafeTensors", "GGUF"], swiftSettings: fastMath),
        .executableTarget(name: "qlora", dependencies: ["QLoRACLI"], swiftSettings: fastMath),
        .executableTarget(name: "qlora-bench", dependencies: ["QLoRA", "SafeTensors"], swiftSettings: fastMath),
        // The loader fuzzer (docs/reliability.md): mutations, targets and the crash-surviving supervisor
        // in a library the tests run a short form of; Foundation and the project's modules only.
        .target(name: "QLoRAFuzz", dependencies: ["QLoRA", "SafeTensors", "GGUF"], swiftSettings: fastMath),
        .executableTarget(name: "qlora-fuzz", dependencies: ["QLoRAFuzz"], swiftSettings: fastMath),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"], path: "Tests/SafeTensorsTests"),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF"], path: "Tests/GGUFTests"),
        .testTarget(name: "QLoRACLITests", dependencies: ["QLoRACLI", "SafeTensors"], path: "Tests/QLoRACLITests"),
        .testTarget(name: "QLoRAFuzzTests", dependencies: ["QLoRAFuzz", "QLoRA", "SafeTensors", "GGUF"], path: "Tests/QLoRAFuzzTests"),
        .testTarget(name: "QLoRATests", dependencies: ["QLoRA", "SafeTensors"], path: "Tests/QLoRATests"),
    ],
    swiftLanguageModes: [.v5]
)
