import Foundation
import QLoRA

/// `qlora-bench gemm`: the frozen-weight GEMMs of one SmolLM2-135M (or Llama-2-7B) layer and its lm_head, forward and
/// input-gradient backward, on the kernel in use (QLORA_KERNEL to force one), per shape: where the
/// training step's GEMM time goes and how close each shape gets to the kernel's peak.
enum GemmBenchmark: Benchmark {
    static let name = "gemm"
    static let summary = "frozen-weight GEMMs per shape (SmolLM2-135M or --shapes 7b layer + lm_head), fwd/bwd GFLOP/s (--rows 256 --weights nf4|bf16)"

    static func run(_ arguments: [String]) throws {
        let o = try Bench.options(arguments, allowed: ["rows", "weights", "repeats", "threads", "shapes"])
        let m = Int(o["rows"] ?? "256") ?? 256
        let repeats = Int(o["repeats"] ?? "5") ?? 5
        let storage = o["weights"] ?? "nf4"
        guard storage == "nf4" || storage == "bf16" else { throw BenchError("--weights must be nf4 or bf16") }
        if let threads = o["threads"].flatMap(Int.init) { Parallel.threads = threads }
        _ = try OpenBLAS.ensureLoaded()
        let llama7b = o["shapes"] == "7b"
        guard llama7b || (o["shapes"] ?? "135m") == "135m" else { throw BenchError("--shapes must be 135m or 7b") }
        let (c, f, kv, vocab) = llama7b ? (4096, 11008, 4096, 32000) : (576, 1536, 192, 49152)
        let shapes: [(String, Int, Int)] = [("q_proj/o_proj", c, c), ("k_proj/v_proj", kv, c), ("gate/up_proj", f, c),
                                            ("down_proj", c, f), ("lm_head (bf16)", vocab, c)]
        let kernel = GemmKernel.current
        print("qlora-bench gemm — \(GemmKernel.summary); CPU \(CPUFeatures.current.modelName); threads \(Parallel.threads)")
        print("\(m) activation rows, \(storage) weights (the lm_head is always bf16), best of \(repeats)")
        print("shape            out x in        forward GFLOP/s   backward GFLOP/s")
        var generator = SeededGenerator(seed: 2)
        for (label, out, inFeatures) in shapes {
            let values = (0..<(out * inFeatures)).map { _ in generator.uniform(-0.05, 0.05) }
            let weight: any FrozenWeight = storage == "nf4" && !label.hasPrefix("lm_head")
                ? try QuantizedWeight.quantize(values, shape: [out, inFeatures], options: QuantizationOptions())
                : DenseBFloat16Weight(outFeatures: out, inFeatures: inFeatures, floats: values)
            let linear = BaseLinear(weight: weight, precision: .bf16)
            linear.kernel = kernel
            let x = (0..<(m * inFeatures)).map { _ in generator.uniform(-1, 1) }
            let dy = (0..<(m * out)).map { _ in generator.uniform(-1, 1) }
            var y = [Float](repeating: 0, count: m * out), dx = [Float](repeating: 0, count: m * inFeatures)
            let tileRows = ActivationLayout.automaticTileRows(maxInFeatures: max(inFeatures, out))
            let floats = GemmWorkspace.floats(rows: m, maxInFeatures: max(inFeatures, out), tileRows: tileRows)
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { buffer.deallocate() }
            let workspace = GemmWorkspace(base: buffer, floats: floats, tileRows: tileRows)
            let flops = 2 * Double(m * out * inFeatures)
            let forward = Bench.best(repeats: repeats) {
                y.withUnsafeMutableBufferPointer { linear.forward(y: $0.baseAddress!, x: x, rows: m, workspace: workspace) }
            }
            let backward = Bench.best(repeats: repeats) {
                dx.withUnsafeMutableBufferPointer { linear.backwardInput(dx: $0.baseAddress!, dy: dy, rows: m, workspace: workspace) }
            }
            print("\(label.padding(toLength: 16, withPad: " ", startingAt: 0)) \("\(out) x \(inFeatures)".padding(toLength: 15, withPad: " ", startingAt: 0)) \(String(format: "%15.1f   %16.1f", flops / forward / 1e9, flops / backward / 1e9))")
        }
    }
}
