import Foundation
import QLoRA

/// `qlora-bench <name> [options]`: one file per benchmark, each a `Benchmark` registered here.
protocol Benchmark {
    static var name: String { get }
    static var summary: String { get }
    static func run(_ arguments: [String]) throws
}

let benchmarks: [any Benchmark.Type] = [
    DecodeProductBenchmark.self,
    DequantBenchmark.self,
    GemmBenchmark.self,
    GenerateBenchmark.self,
    QuantizeBenchmark.self,
    TokenizeBenchmark.self,
    TrainBenchmark.self,
]

let argv = Array(CommandLine.arguments.dropFirst())
guard let name = argv.first, let benchmark = benchmarks.first(where: { $0.name == name }) else {
    print("Usage: qlora-bench <benchmark> [options]   (build with -c release)\n\nBenchmarks:")
    for b in benchmarks { print("  \(b.name.padding(toLength: 12, withPad: " ", startingAt: 0))\(b.summary)") }
    exit(argv.isEmpty || argv.first == "--help" ? 0 : 2)
}
do {
    try GemmKernel.applyEnvironment()
    try benchmark.run(Array(argv.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
