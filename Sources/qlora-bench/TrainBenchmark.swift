import Foundation
import QLoRA

/// `qlora-bench train`: QLoRA training steps on a SmolLM2-135M-shaped model (random weights, or
/// `--model DIR`), the configuration of the PyTorch + PEFT + bitsandbytes peer benchmark:
/// NF4 + double quant, bf16 compute, LoRA r=8 (alpha 16) on all 7 projections, AdamW, batch 1.
/// Prints tokens/s, peak RSS, where the time goes and achieved GFLOP/s against measured sgemm peak.
/// `--full fp32|bf16`: full fine-tuning of the same model instead (fp32, or bf16 mixed precision).
enum TrainBenchmark: Benchmark {
    static let name = "train"
    static let summary = "QLoRA training step on SmolLM2-135M's shape: tokens/s, peak RSS, time split, GFLOP/s"

    static let smolLM2: LlamaConfig = {
        var c = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                            numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100000,
                            maxPositionEmbeddings: 8192, tieWordEmbeddings: true)
        c.bosTokenID = 0
        c.eosTokenIDs = [0]
        c.dtype = "bfloat16"   // as the peer's checkpoint: the frozen embedding table stays bf16
        return c
    }()

    static func run(_ arguments: [String]) throws {
        let o = try Bench.options(arguments, allowed: ["model", "seq", "rank", "steps", "warmup", "checkpointing", "quant", "json", "threads", "tile-rows", "table-dtype", "full"])
        let seq = Int(o["seq"] ?? "256") ?? 256
        let rank = Int(o["rank"] ?? "8") ?? 8
        let steps = Int(o["steps"] ?? "5") ?? 5
        let warmup = Int(o["warmup"] ?? "2") ?? 2
        let checkpointing = (o["checkpointing"] ?? "no") == "yes"
        let fullPrecision = try o["full"].map { value -> FullFineTuning.Precision in
            guard let precision = FullFineTuning.Precision(rawValue: value == "bf16" ? "bf16-mixed" : value) else {
                throw BenchError("--full must be fp32 or bf16")
            }
            return precision
        }
        let quant = fullPrecision == nil ? o["quant"] ?? "nf4" : "fp32"
        if let threads = o["threads"].flatMap(Int.init) { Parallel.threads = threads }
        let blas = try OpenBLAS.ensureLoaded()
        let baseline = ProcessMemory.residentBytes().current
        let format: BaseWeightFormat = quant == "nf4" ? .quantized(QuantizationOptions()) : quant == "bf16" ? .denseBF16 : .dense32
        let precision: ComputePrecision = quant == "fp32" ? .fp32 : .bf16

        let loadStart = Bench.now()
        let model: LlamaModel
        if let dir = o["model"] {
            model = try LlamaLoader.load(directory: URL(fileURLWithPath: dir), format: format, precision: precision)
        } else {
            var config = smolLM2
            if o["table-dtype"] == "fp32" { config.dtype = "float32" }   // frozen embedding table in fp32
            model = try LlamaLoader.random(config: config, format: format, precision: precision, seed: 0)
        }
        let config = model.config
        let tileRows = Int(o["tile-rows"] ?? "0") ?? 0   // 0 = automatic
        let shape = ActivationLayout.Shape(batch: 1, seqLen: seq, gradientCheckpointing: checkpointing, tileRows: tileRows)
        let executor: LlamaExecutor, parameters: TrainableParameters
        let full = try fullPrecision.map { try FullFineTuning(copying: model, precision: $0) }
        if let full {
            executor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients, shape: shape)
            parameters = full.parameters
        } else {
            let lora = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: rank, loraAlpha: Double(2 * rank)))
            lora.initialize(seed: 0)
            executor = LlamaExecutor(model: model, lora: lora, shape: shape)
            parameters = lora.parameters
        }
        var trainerOptions = TrainerOptions()
        trainerOptions.learningRate = 1e-3
        trainerOptions.weightDecay = 0.01
        trainerOptions.schedule = .constant
        trainerOptions.maxGradNorm = nil
        trainerOptions.maxSteps = warmup + steps
        let trainer = Trainer(executor: executor, parameters: parameters, options: trainerOptions)
        trainer.fullFineTuning = full
        var generator = SeededGenerator(seed: 0)
        let ids = (0..<seq).map { _ in Int32(generator.next() % UInt64(config.vocabSize)) }
        struct Fixed: BatchSource {
            let batch: TokenBatch
            func batch(step: Int, micro: Int) -> TokenBatch { batch }
        }
        let source = Fixed(batch: TokenBatch(inputIDs: ids, labels: ids, batch: 1, seqLen: seq))
        let loadSeconds = Bench.now() - loadStart
        let afterLoad = ProcessMemory.residentBytes().current

        for _ in 0..<warmup { _ = try trainer.trainStep(source) }
        StepProfiler.reset()
        StepProfiler.enabled = true
        var times: [Double] = []
        var losses: [Double] = []
        for _ in 0..<steps {
            let report = try trainer.trainStep(source)
            times.append(report.seconds)
            losses.append(report.loss)
        }
        StepProfiler.enabled = false
        let split = StepProfiler.seconds
        let total = times.reduce(0, +)
        let median = times.sorted()[times.count / 2]
        let peak = ProcessMemory.residentBytes().peak
        let tokensPerSecond = Double(seq) / median

        // FLOPs per token of a LoRA step (the issue's accounting): forward 2N + input-gradient backward 2N
        // over every base linear and the lm_head (N = 134.5 M for SmolLM2), + 2N for the recompute with
        // checkpointing over the decoder linears but down_proj (whose output the recompute skips); plus
        // attention: QK^T and PV are 4*T*D per head per token forward, backward twice that.
        let decoder = Double(config.decoderLinearParameterCount)
        let allLinear = decoder + Double(config.vocabSize * config.hiddenSize)
        let recomputed = decoder - Double(config.numHiddenLayers * config.intermediateSize * config.hiddenSize)
        let attentionForward = 4 * Double(config.numHiddenLayers * config.numAttentionHeads * config.headDim * seq)
        // Full fine-tuning adds the weight-gradient GEMMs (2N more).
        let frozenFlopsPerToken = (full == nil ? 4 : 6) * allLinear + (checkpointing ? 2 * recomputed : 0)
        let flopsPerToken = frozenFlopsPerToken + attentionForward * (checkpointing ? 4 : 3)
        let achieved = flopsPerToken * Double(seq) / median / 1e9
        // The frozen-weight GEMMs alone: their FLOPs over the time of the gemm phase.
        let gemmRate = frozenFlopsPerToken * Double(seq) * Double(steps) / max(split[.gemm] ?? 0, 1e-9) / 1e9
        let peak1 = sgemmPeak(threads: 1), peak2 = sgemmPeak(threads: Parallel.threads)
        let bf16Peak = GemmKernel.current.usesBF16 ? bf16GemmPeak(kernel: GemmKernel.current) : nil

        print("qlora-bench train — \(blas.summary); CPU \(CPUFeatures.current.modelName); threads \(Parallel.threads)")
        print("\(GemmKernel.current.usesBF16 && (precision == .bf16 || fullPrecision == .bf16Mixed) ? "frozen-weight GEMMs on the \(GemmKernel.current.rawValue) kernel" : "frozen-weight GEMMs through sgemm"); \(GemmKernel.summary)")
        print("model: \(o["model"] ?? "random SmolLM2-135M shape"), \(full.map { "full fine-tuning \($0.precision.rawValue)" } ?? "base \(quant), LoRA r=\(rank) all 7 projections"), batch 1 x \(seq), checkpointing \(checkpointing ? "on" : "off")")
        print(String(format: "load+quantize %.2f s; RSS at start %.1f MiB, after load %.1f MiB", loadSeconds, Double(baseline) / 1048576, Double(afterLoad) / 1048576))
        print(String(format: "step: median %.3f s, min %.3f, max %.3f  ->  %.1f tokens/s", median, times.min()!, times.max()!, tokensPerSecond))
        print(String(format: "peak RSS %.1f MiB (%.1f MiB above the process baseline)", Double(peak) / 1048576, Double(peak - baseline) / 1048576))
        for phase in StepProfiler.Phase.allCases {
            print("  \("\(phase)".padding(toLength: 10, withPad: " ", startingAt: 0))\(String(format: "%5.1f%%", 100 * (split[phase] ?? 0) / total))")
        }
        let other = total - split.values.reduce(0, +)
        print("  other     \(String(format: "%5.1f%%", 100 * other / total))")
        print(String(format: "achieved %.1f GFLOP/s (%.0f MFLOP/token) vs sgemm peak %.1f GFLOP/s (1 thread), %.1f (%d threads)",
                     achieved, flopsPerToken / 1e6, peak1, peak2, Parallel.threads))
        let kernelPeak = bf16Peak ?? peak2
        print(String(format: "frozen-weight GEMMs %.1f GFLOP/s in the gemm phase = %.0f%% of the %@ peak %.1f GFLOP/s (%d threads%@)",
                     gemmRate, 100 * gemmRate / kernelPeak, (bf16Peak == nil ? "sgemm" : "bf16 GEMM") as NSString, kernelPeak, Parallel.threads,
                     (bf16Peak == nil ? "" : "; 1024 x 1024 bf16 weight, 1024 rows, packing included") as NSString))
        print("losses: \(losses.map { String(format: "%.4f", $0) }.joined(separator: " "))")
        if let path = o["json"] {
            let json: [String: Any] = [
                "tokens_per_s": tokensPerSecond, "step_s_median": median, "step_s_all": times, "peak_rss_bytes": peak,
                "rss_start_bytes": baseline, "seq": seq, "rank": rank, "checkpointing": checkpointing, "quant": quant,
                "dequant_share": (split[.dequant] ?? 0) / total, "gemm_share": (split[.gemm] ?? 0) / total,
                "attention_share": (split[.attention] ?? 0) / total, "gflops": achieved, "sgemm_peak_1t": peak1, "sgemm_peak": peak2,
                "kernel": precision == .bf16 ? GemmKernel.current.rawValue : "fp32", "bf16_gemm_peak": bf16Peak ?? 0,
                "gemm_phase_gflops": gemmRate, "lora_share": (split[.lora] ?? 0) / total, "loss_share": (split[.loss] ?? 0) / total,
            ]
            try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
        }
    }

    /// Best-of-3 GFLOP/s of BF16Gemm.forward with a 1024 x 1024 bf16 weight and 1024 rows (packing included).
    static func bf16GemmPeak(kernel: GemmKernel) -> Double {
        let n = 1024
        var generator = SeededGenerator(seed: 1)
        let weight = DenseBFloat16Weight(outFeatures: n, inFeatures: n, floats: (0..<(n * n)).map { _ in generator.uniform(-1, 1) })
        let x = [Float](repeating: 0.5, count: n * n)
        var y = [Float](repeating: 0, count: n * n)
        let bytes = BF16Gemm.workspaceBytes(rows: n, maxInFeatures: n)
        let workspace = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { workspace.deallocate() }
        let seconds = Bench.best(repeats: 3) {
            y.withUnsafeMutableBufferPointer { yp in
                BF16Gemm.forward(y: yp.baseAddress!, x: x, rows: n, weight: weight, level: kernel.level, workspace: workspace, bytes: bytes)
            }
        }
        return 2 * Double(n * n * n) / seconds / 1e9
    }

    /// Best-of-3 GFLOP/s of a 1024^3 sgemm on `threads` threads (our split, single-threaded OpenBLAS inside).
    static func sgemmPeak(threads: Int) -> Double {
        let n = 1024
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        let saved = Parallel.threads
        Parallel.threads = threads
        defer { Parallel.threads = saved }
        let seconds = Bench.best(repeats: 3) {
            c.withUnsafeMutableBufferPointer { cp in
                Blas.sgemmParallel(cp.baseAddress!, ldc: n, a, lda: n, b, ldb: n, m: n, n: n, k: n)
            }
        }
        return 2 * Double(n * n * n) / seconds / 1e9
    }
}
