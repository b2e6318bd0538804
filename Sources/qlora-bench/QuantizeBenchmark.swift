import Foundation
import QLoRA
import SafeTensors

/// Blockwise NF4 quantization throughput (with double quantization) of one large random matrix.
enum QuantizeBenchmark: Benchmark {
    static let name = "quantize"
    static let summary = "NF4 quantize throughput (--rows 1536 --columns 576 --threads 1|2), then end-to-end quantize of a random SmolLM2-135M-sized bf16 model (--end-to-end no to skip)"

    static func run(_ arguments: [String]) throws {
        let options = try Bench.options(arguments, allowed: ["rows", "columns", "repeats", "threads", "end-to-end", "model-dir"])
        if let dir = options["model-dir"] { try quantizeModel(dir); return }
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
        if options["end-to-end"] != "no" { try endToEnd() }
    }

    /// Generates a SmolLM2-135M-shaped random bf16 model (seeded) in a temp dir, then quantizes it in a child
    /// process (so its peak RSS is the quantizer's alone).
    static func endToEnd() throws {
        let dir = NSTemporaryDirectory() + "qlora-bench-smollm2-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (vocab, hidden, inter, layers, heads, kvHeads) = (49152, 576, 1536, 30, 9, 3)
        let headDim = hidden / heads
        var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden]), ("model.norm.weight", [hidden])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            shapes += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                       (p + "self_attn.q_proj.weight", [heads * headDim, hidden]), (p + "self_attn.k_proj.weight", [kvHeads * headDim, hidden]),
                       (p + "self_attn.v_proj.weight", [kvHeads * headDim, hidden]), (p + "self_attn.o_proj.weight", [hidden, heads * headDim]),
                       (p + "mlp.gate_proj.weight", [inter, hidden]), (p + "mlp.up_proj.weight", [inter, hidden]),
                       (p + "mlp.down_proj.weight", [hidden, inter])]
        }
        let writer = try SafeTensorsWriter(path: dir + "/model.safetensors",
                                           entries: shapes.map { TensorEntry(name: $0.0, dtype: .BF16, shape: $0.1) }, metadata: ["format": "pt"])
        var rng = BenchGenerator(seed: 135)
        for (name, shape) in shapes {
            let n = shape.reduce(1, *)
            let bits = [UInt16](unsafeUninitializedCapacity: n) { buffer, count in
                for i in 0..<n {
                    let u = Float(rng.next() >> 40) * 0x1p-24 - 0.5          // uniform in [-0.5, 0.5)
                    buffer[i] = HalfFloat.bfloat16FromFloat(shape.count == 1 ? 1 + 0.1 * u : 0.08 * u)
                }
                count = n
            }
            try bits.withUnsafeBytes { try writer.write(name, bytes: $0) }
        }
        try writer.finish()
        let config = #"{"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152}"#
        try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        print("end-to-end: random SmolLM2-135M-sized bf16 model (seed 135) in \(dir)")
        fflush(stdout)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        child.arguments = ["quantize", "--model-dir", dir]
        try child.run()
        child.waitUntilExit()
    }

    /// Child mode: quantize `dir` into `dir/nf4` and report time, sizes and peak RSS.
    static func quantizeModel(_ dir: String) throws {
        let before = ProcessMemory.residentBytes().peak / 1024
        let summary = try CheckpointQuantizer.quantize(input: dir, output: dir + "/nf4")
        let mib = { (b: Int) in String(format: "%.1f MiB", Double(b) / 1048576) }
        print("  quantized \(summary.tensorsQuantized) tensors, \(summary.parametersQuantized) parameters in \(String(format: "%.2f", summary.seconds)) s (incl. reading and writing)")
        print("  bytes \(mib(summary.bytesBefore)) -> \(mib(summary.bytesAfter)); \(String(format: "%.4f", summary.bitsPerParameter)) bits/param")
        print("  peak RSS \(mib(summary.peakRSSBytes)) (process start \(mib(before * 1024))); largest input tensor \(mib(summary.largestTensorBytes))")
    }
}
