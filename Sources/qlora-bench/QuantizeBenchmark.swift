import Foundation
import QLoRA

/// Blockwise NF4 quantization throughput (with double quantization) of one large random matrix.
enum QuantizeBenchmark: Benchmark {
    static let name = "quantize"
    static let summary = "NF4 quantize throughput of a random matrix (--rows 1536 --columns 576 --threads 1|2)"

    static func run(_ arguments: [String]) throws {
        let options = try Bench.options(arguments, allowed: ["rows", "columns", "repeats", "threads"])
        let rows = Int(options["rows"] ?? "1536")!, columns = Int(options["columns"] ?? "576")!
        let repeats = Int(options["repeats"] ?? "20")!
        var rng = BenchGenerator(seed: 2)
        let values = (0..<(rows * columns)).map { _ in Float(Double(rng.next() >> 11) * 0x1p-53 - 0.5) * 0.1 }
        let n = rows * columns
        print("quantize NF4 + double quant, \(rows) x \(columns) = \(n) elements, best of \(repeats)")
        let threadCounts = options["threads"].map { [Int($0)!] } ?? [1, 2]
        for threads in threadCounts {
            let seconds = try values.withUnsafeBytes { raw in
                try Bench.best(repeats: repeats) {
                    _ = try QuantizedTensor.quantize(raw.baseAddress!, dtype: .F32, shape: [rows, columns], threads: threads)
                }
            }
            print("  \(threads) thread(s): \(String(format: "%7.3f", Double(n) / seconds / 1e9)) G elem/s  (\(String(format: "%.2f", seconds * 1e3)) ms)")
        }
    }
}
