import Foundation
import QLoRA

/// Single-thread NF4 dequantization throughput into a tile that stays in L2 (default 256 x 576).
enum DequantBenchmark: Benchmark {
    static let name = "dequant"
    static let summary = "NF4 -> f32 / bf16 / bf16-in-f32 dequant throughput, one thread, tile in L2 (--rows 256 --columns 576); "
        + "--types q4_K,...|all: GGUF block tiles"

    static func run(_ arguments: [String]) throws {
        let options = try Bench.options(arguments, allowed: ["rows", "columns", "repeats", "types"])
        if options["types"] != nil { return try GGUFTileBenchmark.run(options) }
        let rows = Int(options["rows"] ?? "256")!, columns = Int(options["columns"] ?? "576")!
        let repeats = Int(options["repeats"] ?? "200")!
        var rng = BenchGenerator(seed: 1)
        let values = (0..<(rows * columns)).map { _ in Float(Double(rng.next() >> 11) * 0x1p-53 - 0.5) * 0.1 }
        let q = try QuantizedTensor.quantize(values, shape: [rows, columns])
        let n = rows * columns
        let f32 = UnsafeMutablePointer<Float>.allocate(capacity: n)
        let half = UnsafeMutablePointer<UInt16>.allocate(capacity: n)
        defer { f32.deallocate(); half.deallocate() }
        print("dequant NF4 (double quant, blocksize 64), tile \(rows) x \(columns) = \(n) elements, 1 thread, best of \(repeats)")
        let runs: [(String, () -> Void)] = [
            ("f32", { q.dequantize(rows: 0..<rows, into: f32) }),
            ("bf16", { q.dequantize(rows: 0..<rows, into: half, as: .bfloat16) }),
            ("f16", { q.dequantize(rows: 0..<rows, into: half, as: .float16) }),
            ("bf16-in-f32", { q.dequantize(rows: 0..<rows, into: f32, roundedTo: .bfloat16) }),
            ("f32 reference", { q.dequantizeReference(rows: 0..<rows, into: f32) }),
        ]
        for (label, body) in runs {
            let seconds = Bench.best(repeats: label.hasSuffix("reference") ? 5 : repeats, body)
            let rate = Double(n) / seconds / 1e9
            print("  \(label.padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%7.2f", rate)) G elem/s  (\(String(format: "%.1f", seconds * 1e6)) us per tile)")
        }
    }
}

typealias BenchGenerator = SeededGenerator
