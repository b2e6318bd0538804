import Foundation
import QLoRA

/// `qlora-bench gemv`: the one-row products a decoded token runs (BaseLinear.forward, 1 row), per frozen
/// weight of one layer and the lm_head, on a real model (`--model DIR | x.gguf`, `--quant nf4|keep|...`):
/// µs per product and GB/s of weight bytes read, the figure that decides decode speed. With `--types`
/// instead, random GGUF blocks of those types and shapes (GGUFBlockProductBenchmark).
enum DecodeProductBenchmark: Benchmark {
    static let name = "gemv"
    static let summary = "one-row decode products per weight of a layer and the lm_head (--model x.gguf --quant nf4|keep), GB/s; "
        + "--types q4_K,q6_K,... [--shapes 576x1536,...]: fused GGUF kernels vs row groups"

    static func run(_ arguments: [String]) throws {
        let o = try Bench.options(arguments, allowed: ["model", "quant", "threads", "repeats", "layer", "types", "shapes", "level"])
        if o["types"] != nil { return try GGUFBlockProductBenchmark.run(o) }
        guard let path = o["model"] else { throw BenchError("--model DIR or x.gguf (or --types) is required") }
        let repeats = Int(o["repeats"] ?? "200") ?? 200
        if let threads = o["threads"].flatMap(Int.init) { Parallel.threads = threads }
        let quant = o["quant"] ?? "nf4"
        let format: BaseWeightFormat = switch quant {
        case "nf4": .quantized(QuantizationOptions())
        case "keep": .stored
        case "bf16": .denseBF16
        case "fp32": .dense32
        default: throw BenchError("--quant takes nf4, keep, bf16 or fp32")
        }
        _ = try OpenBLAS.ensureLoaded()
        let model = try LlamaLoader.load(directory: URL(fileURLWithPath: path), format: format, precision: .bf16)
        let layer = Int(o["layer"] ?? "0") ?? 0
        print("qlora-bench gemv — \(GemmKernel.summary); CPU \(CPUFeatures.current.modelName); threads \(Parallel.threads)")
        print("model \(path), --quant \(quant), layer \(layer); best of \(repeats) one-row products")
        print("weight        out x in       format                      µs    GB/s")
        var linears: [(String, BaseLinear)] = model.config.layerProjections.map { ($0.moduleName, model.layers[layer].linear($0)) }
        linears.append(("lm_head", model.lmHead))
        var generator = SeededGenerator(seed: 3)
        var total = 0.0
        for (label, linear) in linears {
            let x = (0..<linear.inFeatures).map { _ in generator.uniform(-1, 1) }
            var y = [Float](repeating: 0, count: linear.outFeatures)
            let floats = GemmWorkspace.floats(rows: 1, maxInFeatures: linear.inFeatures, tileRows: 256)
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { buffer.deallocate() }
            let workspace = GemmWorkspace(base: buffer, floats: floats, tileRows: 256)
            let seconds = Bench.best(repeats: repeats) {
                y.withUnsafeMutableBufferPointer { linear.forward(y: $0.baseAddress!, x: x, rows: 1, workspace: workspace) }
            }
            total += seconds * (label == "lm_head" ? 1 : Double(model.config.numHiddenLayers))
            let bytes = Double(linear.weight.storageBytes)
            print(String(format: "%-13@ %6d x %-6d %-22@ %8.1f %7.1f", label as NSString, linear.outFeatures, linear.inFeatures,
                         String(describing: type(of: linear.weight)).prefix(22) as NSString, seconds * 1e6, bytes / seconds / 1e9))
        }
        print(String(format: "all products of a token (layers x 7 + lm_head): %.2f ms", total * 1e3))
    }
}
