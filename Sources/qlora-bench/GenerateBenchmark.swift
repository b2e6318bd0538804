import Foundation
import QLoRA

/// `qlora-bench generate`: prompt tokens/s and decode tokens/s of the KV-cache decoder on SmolLM2-135M's
/// shape (random weights, or `--model DIR`), for NF4, bf16 and fp32 bases, without and with a LoRA adapter
/// (r = 8 on all projections); and the bytes of frozen weights a decoded token reads against this
/// machine's measured read bandwidth.
enum GenerateBenchmark: Benchmark {
    static let name = "generate"
    static let summary = "prompt and decode tokens/s (nf4 / bf16 / fp32 base, +- adapter), bytes per token vs measured bandwidth"

    static func run(_ arguments: [String]) throws {
        let o = try Bench.options(arguments, allowed: ["model", "prompt", "tokens", "bases", "threads", "repeats", "adapter", "mixed"])
        let promptLength = Int(o["prompt"] ?? "128") ?? 128
        let newTokens = Int(o["tokens"] ?? "64") ?? 64
        let repeats = Int(o["repeats"] ?? "3") ?? 3
        let bases = (o["bases"] ?? "nf4,bf16,fp32").split(separator: ",").map(String.init)
        let adapterModes = (o["adapter"] ?? "no,yes").split(separator: ",").map { $0 == "yes" }
        if let threads = o["threads"].flatMap(Int.init) { Parallel.threads = threads }
        let blas = try OpenBLAS.ensureLoaded()
        let bandwidth = readBandwidth()
        print("qlora-bench generate — \(blas.summary); \(GemmKernel.summary); CPU \(CPUFeatures.current.modelName); threads \(Parallel.threads)")
        print(String(format: "measured read bandwidth %.1f GB/s (%d threads, 512 MiB streamed, best of 3)", bandwidth / 1e9, Parallel.threads))
        print("model: \(o["model"] ?? "random SmolLM2-135M shape"); prompt \(promptLength) tokens, then \(newTokens) decoded (greedy), best of \(repeats)")
        print("base   adapter  prompt tok/s  decode tok/s  ms/token  frozen MB/token  GB/s  of bandwidth")
        for base in bases {
            guard ["nf4", "bf16", "fp32", "keep"].contains(base) else { throw BenchError("--bases takes nf4, bf16, fp32, keep (a GGUF file's blocks)") }
            guard base != "keep" || o["model"] != nil else { throw BenchError("--bases keep needs --model x.gguf") }
            let format: BaseWeightFormat = base == "nf4" ? .quantized(QuantizationOptions()) : base == "bf16" ? .denseBF16
                : base == "keep" ? .stored : .dense32
            let precision: ComputePrecision = base == "fp32" ? .fp32 : .bf16
            let model: LlamaModel
            if let dir = o["model"] {
                model = try LlamaLoader.load(directory: URL(fileURLWithPath: dir), format: format, precision: precision)
            } else {
                var config = TrainBenchmark.smolLM2
                if base == "fp32" { config.dtype = "float32" }
                model = try LlamaLoader.random(config: config, format: format, precision: precision, seed: 0)
            }
            let config = model.config
            var generator = SeededGenerator(seed: 1)
            let prompt = (0..<promptLength).map { _ in Int32(generator.next() % UInt64(config.vocabSize)) }
            let frozen = model.frozenBytes
            // An untied model reads one row of its embedding table per token, not the table.
            let bytesPerToken = Double(frozen.quantized + frozen.other - (config.tieWordEmbeddings ? 0 : model.embedTokens.storageBytes))
            for withAdapter in adapterModes {
                var lora: LoRAAdapters?
                if withAdapter {
                    let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 8, loraAlpha: 16), training: false)
                    adapters.initialize(seed: 0)
                    lora = adapters
                }
                let decoder = Generator(model: model, lora: lora, maxSeqLen: promptLength + newTokens + 1)
                var bestPrompt = Double.infinity, bestDecode = Double.infinity
                for _ in 0..<repeats {
                    decoder.decoder.reset()
                    let start = Bench.now()
                    var logits = try decoder.decoder.append(prompt)
                    let afterPrompt = Bench.now()
                    for _ in 0..<newTokens {
                        let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                        logits = try decoder.decoder.append([next])
                    }
                    let end = Bench.now()
                    bestPrompt = min(bestPrompt, afterPrompt - start)
                    bestDecode = min(bestDecode, (end - afterPrompt) / Double(newTokens))
                }
                let rate = bytesPerToken / bestDecode
                print(String(format: "%-6@ %-7@ %13.1f %13.1f %9.2f %16.1f %5.1f %11.0f%%", base as NSString, (withAdapter ? "r=8" : "none") as NSString,
                             Double(promptLength) / bestPrompt, 1 / bestDecode, 1000 * bestDecode, bytesPerToken / 1e6, rate / 1e9,
                             100 * rate / bandwidth))
            }
        }
        if o["mixed"] == "yes" { try mixedBatch(prompt: promptLength, tokens: newTokens, model: o["model"]) }
        print("frozen MB/token: every frozen weight byte (4-bit codes and scales, dense weights, the embedding table as lm_head), read once per decoded token")
    }

    /// 8 sequences over 4 adapters (r = 8, all projections) decoded together vs one after another (NF4 base).
    static func mixedBatch(prompt promptLength: Int, tokens: Int, model directory: String?) throws {
        let model = try directory.map { try LlamaLoader.load(directory: URL(fileURLWithPath: $0), format: .quantized(QuantizationOptions()), precision: .bf16) }
            ?? LlamaLoader.random(config: TrainBenchmark.smolLM2, format: .quantized(QuantizationOptions()), precision: .bf16, seed: 0)
        let config = model.config
        var generator = SeededGenerator(seed: 3)
        let adapters = try (0..<4).map { index -> LoRAAdapters in
            let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 8, loraAlpha: 16), training: false)
            adapters.initialize(seed: UInt64(index))
            for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
                adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.01 })
            }
            return adapters
        }
        let requests = (0..<8).map { index in
            (prompt: (0..<promptLength).map { _ in Int32(generator.next() % UInt64(config.vocabSize)) }, lora: adapters[index % 4] as LoRAAdapters?)
        }
        let batchStart = Bench.now()
        let batched = try Generator.generateBatch(model: model, requests: requests, maxNewTokens: tokens)
        let batchSeconds = Bench.now() - batchStart
        let aloneStart = Bench.now()
        var alone: [[Int32]] = []
        for request in requests {
            alone.append(try Generator(model: model, lora: request.lora, maxSeqLen: request.prompt.count + tokens)
                .generate(prompt: request.prompt, maxNewTokens: tokens))
        }
        let aloneSeconds = Bench.now() - aloneStart
        let total = Double(batched.map(\.count).reduce(0, +))
        print(String(format: "mixed batch: 8 sequences over 4 adapters (r=8), %d-token prompts, %d new tokens each (prompts included in the time)",
                     promptLength, tokens))
        print(String(format: "  together %.2f s = %.1f generated tokens/s; one after another %.2f s = %.1f tokens/s; %.2fx; outputs identical: %@",
                     batchSeconds, total / batchSeconds, aloneSeconds, total / aloneSeconds, aloneSeconds / batchSeconds,
                     (batched == alone ? "yes" : "NO") as NSString))
    }

    /// Bytes per second of streaming reads over 512 MiB on `Parallel.threads` threads (best of 3).
    static func readBandwidth() -> Double {
        let count = 128 << 20   // floats
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        var sink: Float = 0
        let seconds = Bench.best(repeats: 3) {
            var partial = [Float](repeating: 0, count: Parallel.threads)
            partial.withUnsafeMutableBufferPointer { sums in
                Parallel.forEach(Parallel.threads) { t in
                    let range = Parallel.range(chunk: t, of: Parallel.threads, total: count / 64)
                    let raw = UnsafeRawPointer(buffer)
                    var a = SIMD16<Float>(), b = SIMD16<Float>(), c = SIMD16<Float>(), d = SIMD16<Float>()
                    for i in range {
                        let offset = i * 256
                        a += raw.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
                        b += raw.loadUnaligned(fromByteOffset: offset + 64, as: SIMD16<Float>.self)
                        c += raw.loadUnaligned(fromByteOffset: offset + 128, as: SIMD16<Float>.self)
                        d += raw.loadUnaligned(fromByteOffset: offset + 192, as: SIMD16<Float>.self)
                    }
                    sums[t] = (a + b + c + d).sum()
                }
            }
            sink += partial.reduce(0, +)
        }
        if sink.isNaN { print("") }
        return Double(count * 4) / seconds
    }
}
