import Foundation
import GGUF
import QLoRA

/// `qlora-bench gemv --types q4_K,q6_K,q5_K,q5_0 [--shapes OUTxIN,...] [--threads N] [--repeats N] [--level 0|1|2]`: one-row
/// products (BaseLinear.forward, 1 row, as decoding runs them) of random GGUF-block weights, through the
/// fused kernels and through the row-group path they replace (dequantize 8 rows, dense kernel), for bf16
/// compute (the bf16 kernel where the CPU has AVX512-BF16) and fp32. The blocks are random bytes with
/// weight-sized fp16 scales: the kernels' speed does not depend on the values. `--level` forces the SIMD level
/// of the fp32 kernels (0 scalar, 1 AVX2, 2 AVX-512F; DequantKernels), e.g. AVX2 on an AVX-512 CPU.
enum GGUFBlockProductBenchmark {
    /// SmolLM2-135M's q_proj, gate/up, down; Gemma-3-270M's gate/up and down.
    static let defaultShapes = "576x576,1536x576,576x1536,2048x640,640x2048"

    static func run(_ o: [String: String]) throws {
        let repeats = Int(o["repeats"] ?? "300") ?? 300
        if let threads = o["threads"].flatMap(Int.init) { Parallel.threads = threads }
        let types = try (o["types"] ?? "").split(separator: ",").map { name in
            let blockTypes = GGMLType.supported.filter { $0.blockGeometry.elements > 1 }
            guard let type = blockTypes.first(where: { $0.description.lowercased() == name.lowercased() }) else {
                throw BenchError("--types takes GGML block types: \(blockTypes.map(\.description).joined(separator: ", ")) (got \(name))")
            }
            return type
        }
        let shapes = try (o["shapes"] ?? defaultShapes).split(separator: ",").map { text in
            let parts = text.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { throw BenchError("--shapes takes OUTxIN,... (got \(text))") }
            return (out: parts[0], in: parts[1])
        }
        _ = try OpenBLAS.ensureLoaded()
        if let level = o["level"] {
            guard let value = Int(level), (0...2).contains(value) else { throw BenchError("--level takes 0, 1 or 2") }
            DequantKernels.setLevel(value)
        }

        // One file with a tensor per (type, shape) whose rows are whole blocks.
        var writer = GGUFWriter()
        var random = SeededGenerator(seed: 18)
        var cases: [(name: String, type: GGMLType, out: Int, in: Int)] = []
        var skipped: [String] = []
        for type in types {
            let (elements, blockBytes) = type.blockGeometry
            for shape in shapes {
                guard shape.in % elements == 0 else { skipped.append("\(type) \(shape.out)x\(shape.in)"); continue }
                let name = "\(type)-\(shape.out)x\(shape.in)"
                writer.tensors.append(.init(name: name, type: type, dimensions: [shape.in, shape.out],
                                            bytes: randomBlocks(type, count: shape.out * shape.in / elements, blockBytes: blockBytes, random: &random)))
                cases.append((name, type, shape.out, shape.in))
            }
        }
        let path = NSTemporaryDirectory() + "qlora-bench-gemv-\(getpid()).gguf"
        try writer.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)

        print("qlora-bench gemv --types — \(GemmKernel.summary); fp32 kernels \(DequantKernels.name); CPU \(CPUFeatures.current.modelName); threads \(Parallel.threads)")
        // Wake the pool's workers (and the clocks) first: the first case of a run measured 2 threads as 1.
        let warm = Bench.now() + 0.5
        while Bench.now() < warm { Parallel.forEachRange(4096, minimumPerChunk: 64) { rows in _ = rows.count } }
        print("best of \(repeats) one-row products; GB/s = weight bytes / time")
        print("type   out x in      compute  fused µs   GB/s   row groups µs   GB/s   speed-up")
        for c in cases {
            let weight = try GGUFWeight(file: file, tensor: c.name)
            let x = (0..<c.in).map { _ in random.uniform(-1, 1) }
            var y = [Float](repeating: 0, count: c.out)
            let floats = GemmWorkspace.floats(rows: 1, maxInFeatures: c.in, tileRows: 256)
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { buffer.deallocate() }
            let workspace = GemmWorkspace(base: buffer, floats: floats, tileRows: 256)
            let bytes = Double(weight.storageBytes)
            for precision in [ComputePrecision.bf16, .fp32] {
                let linear = BaseLinear(weight: weight, precision: precision)
                func time(fused: Bool) -> Double {
                    weight.usesFusedKernel = fused
                    return Bench.best(repeats: repeats) {
                        y.withUnsafeMutableBufferPointer { linear.forward(y: $0.baseAddress!, x: x, rows: 1, workspace: workspace) }
                    }
                }
                let fused = time(fused: true), rows = time(fused: false)
                let compute = precision == .bf16 ? (linear.usesBF16Kernel ? "bf16dot" : "bf16") : "fp32"
                print(String(format: "%-6@ %5d x %-6d %-8@ %8.1f %6.1f   %13.1f %6.1f   %6.2fx", c.type.description as NSString, c.out, c.in,
                             compute as NSString, fused * 1e6, bytes / fused / 1e9, rows * 1e6, bytes / rows / 1e9, rows / fused))
            }
        }
        if !skipped.isEmpty { print("skipped (rows not whole blocks, as llama.cpp never stores them): \(skipped.joined(separator: ", "))") }
    }

    /// `count` blocks of random bytes, their fp16 scale fields weight-sized (about 2^-10 .. 2^-5).
    static func randomBlocks(_ type: GGMLType, count: Int, blockBytes: Int, random: inout SeededGenerator) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count * blockBytes)
        let fields: [Int] = switch type {
        case .q4_1, .q5_1, .q4_K, .q5_K: [0, 2]
        case .q2_K: [80, 82]
        case .q3_K: [108]
        case .q6_K: [208]
        default: [0]
        }
        for b in 0..<count {
            for k in 0..<blockBytes { bytes[b * blockBytes + k] = UInt8(truncatingIfNeeded: random.next()) }
            for f in fields {
                let d = UInt16(0x1800 + random.next() % 0x1400)
                bytes[b * blockBytes + f] = UInt8(d & 0xff)
                bytes[b * blockBytes + f + 1] = UInt8(d >> 8)
            }
        }
        return bytes
    }
}
