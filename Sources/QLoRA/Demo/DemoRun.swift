import Foundation
import SafeTensors

/// The built-in demo: pretrain a small Llama in full precision on "+" progressions, quantize it to NF4,
/// fine-tune LoRA adapters on "-" progressions with the base frozen in 4 bits, and report what
/// happened (losses, accuracy before/after, memory, bytes). Emits events; the CLI renders them.
public struct DemoRun {
    public struct Options: Sendable {
        public var outputDirectory: URL
        public var pretrainSteps = 400
        public var finetuneSteps = 150
        public var batchSize = 32
        public var rank = 8
        public var seed: UInt64 = 7
        public init(outputDirectory: URL) { self.outputDirectory = outputDirectory }
    }

    public enum Event {
        case phase(String)
        case pretrainStep(StepReport)
        case pretrained(lossFirst: Double, lossLast: Double, accuracyPlus: Double, accuracyMinus: Double, seconds: Double)
        case quantized(bytesBefore: Int, bytesAfter: Int, bitsPerParameter: Double, parameters: Int, seconds: Double)
        case trainableSummary(String)
        /// The plan (from the config alone) and the bytes the fine-tune's buffers really hold.
        case finetuneStart(planned: MemoryBreakdown, measured: MemoryBreakdown)
        /// Plan vs measured after fine-tuning, with the peak RSS of the fine-tune.
        case memoryCheck(planned: MemoryBreakdown, measured: MemoryBreakdown, peakResidentBytes: Int)
        case finetuneStep(StepReport)
        case samples([Sample])
        case finished(Report)
    }

    public struct Sample: Sendable {
        public var prompt: String
        public var expected: String
        public var before: String
        public var after: String
    }

    public struct Report: Sendable {
        public var pretrainLoss: (first: Double, last: Double)
        public var finetuneLoss: (first: Double, last: Double)
        public var accuracyMinusBefore: Double
        public var accuracyMinusAfter: Double
        public var accuracyPlusAfterBase: Double
        public var quantizedBytes: Int
        public var denseBytes: Int
        public var bitsPerParameter: Double
        public var memory: MemoryBreakdown
        public var peakResidentBytes: Int
        public var seconds: Double
        public var adapterDirectory: URL
        public var reportFile: URL
    }

    public let options: Options

    public init(options: Options) { self.options = options }

    public static let modelConfig: LlamaConfig = {
        var config = LlamaConfig(vocabSize: CountingTask.vocabSize, hiddenSize: 128, intermediateSize: 384, numHiddenLayers: 4,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, rmsNormEps: 1e-5, ropeTheta: 10000,
                                 maxPositionEmbeddings: 64, tieWordEmbeddings: true)
        config.bosTokenID = Int(CountingTask.bos)
        config.eosTokenIDs = [Int(CountingTask.eos)]
        config.padTokenID = Int(CountingTask.pad)
        return config
    }()

    public func run(onEvent: (Event) -> Void) throws -> Report {
        let started = DispatchTime.now().uptimeNanoseconds
        func elapsed(since t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 }
        let config = Self.modelConfig
        let seqLen = CountingTask.sequenceLength

        // 1-2. Pretrain in full precision, then quantize; the fp32 model and its training state are
        // freed before the fine-tune, whose memory the plan describes.
        let options4 = QuantizationOptions()
        let (base, pretrainLosses) = try pretrainAndQuantize(config: config, seqLen: seqLen, quantization: options4, onEvent: onEvent)
        let linearParameters = config.decoderLinearParameterCount
        let quantizedBytes = base.frozenBytes.quantized
        ProcessMemory.releaseFreedMemory()
        ProcessMemory.resetPeak()

        // 3. LoRA on the frozen 4-bit base, "-" task.
        onEvent(.phase("Fine-tuning LoRA adapters (r=\(options.rank), all linears) on \"-k d:\" with the base frozen in NF4, bf16 compute"))
        let loraConfig = LoRAConfig(r: options.rank, loraAlpha: Double(2 * options.rank), targetModules: ["all-linear"],
                                    baseModelNameOrPath: "qlora-demo-base")
        let lora = try LoRAAdapters(modelConfig: config, config: loraConfig)
        lora.initialize(seed: options.seed &+ 1)
        onEvent(.trainableSummary(LoRAAdapters.summaryLine(trainable: lora.parameters.parameterCount,
                                                           all: config.totalParameterCount + lora.parameters.parameterCount)))
        let before = try samples(model: base, lora: nil)
        let accuracyBefore = try accuracy(model: base, lora: nil, direction: "-")
        let shape = ActivationLayout.Shape(batch: options.batchSize, seqLen: seqLen)
        let executor = LlamaExecutor(model: base, lora: lora, shape: shape)
        var planOptions = MemoryPlan.Options(baseFormat: .quantized(options4), computePrecision: .bf16, lora: loraConfig)
        planOptions.batch = options.batchSize
        planOptions.seqLen = seqLen
        let plan = try MemoryPlan(config: config, options: planOptions)
        var finetuneOptions = TrainerOptions()
        finetuneOptions.learningRate = 4e-3
        finetuneOptions.schedule = .linear
        finetuneOptions.warmupSteps = options.finetuneSteps / 20
        finetuneOptions.maxSteps = options.finetuneSteps
        finetuneOptions.seed = options.seed &+ 2
        let trainer = Trainer(executor: executor, parameters: lora.parameters, options: finetuneOptions)
        var finetuneLosses: [Double] = []
        onEvent(.finetuneStart(planned: plan.breakdown, measured: LiveMemory.breakdown(executor: executor)))
        try trainer.run(CountingTask(direction: "-", batchSize: options.batchSize, seed: options.seed &+ 3)) { event in
            if case .step(let report) = event {
                finetuneLosses.append(report.loss)
                onEvent(.finetuneStep(report))
            }
        }
        var measured = LiveMemory.breakdown(executor: executor)
        measured[.runtimeOverhead] = plan.breakdown[.runtimeOverhead]
        onEvent(.memoryCheck(planned: plan.breakdown, measured: measured, peakResidentBytes: ProcessMemory.residentBytes().peak))
        let after = try samples(model: base, lora: lora)
        onEvent(.samples(zip(before, after).map { Sample(prompt: $0.prompt, expected: $0.expected, before: $0.output, after: $1.output) }))
        let accuracyAfter = try accuracy(model: base, lora: lora, direction: "-")
        let plusAfter = try accuracy(model: base, lora: nil, direction: "+")

        // 4. Save the adapter (PEFT format) and a report.
        let adapterDirectory = options.outputDirectory.appendingPathComponent("adapter")
        try PEFTAdapterIO.save(lora, to: adapterDirectory)
        let report = Report(
            pretrainLoss: (pretrainLosses.first ?? .nan, pretrainLosses.last ?? .nan),
            finetuneLoss: (finetuneLosses.first ?? .nan, finetuneLosses.last ?? .nan),
            accuracyMinusBefore: accuracyBefore, accuracyMinusAfter: accuracyAfter, accuracyPlusAfterBase: plusAfter,
            quantizedBytes: quantizedBytes, denseBytes: linearParameters * 4,
            bitsPerParameter: Double(quantizedBytes * 8) / Double(linearParameters),
            memory: LiveMemory.breakdown(executor: executor), peakResidentBytes: ProcessMemory.residentBytes().peak,
            seconds: elapsed(since: started), adapterDirectory: adapterDirectory,
            reportFile: options.outputDirectory.appendingPathComponent("report.json"))
        try writeReport(report, losses: (pretrainLosses, finetuneLosses))
        onEvent(.finished(report))
        return report
    }

    /// Pretrains every weight in fp32 on the "+" task, reports accuracy, and returns the model quantized.
    private func pretrainAndQuantize(config: LlamaConfig, seqLen: Int, quantization: QuantizationOptions,
                                     onEvent: (Event) -> Void) throws -> (LlamaModel, [Double]) {
        func elapsed(since t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 }
        onEvent(.phase("Pretraining a \(config.totalParameterCount)-parameter Llama (\(config.numHiddenLayers) layers, hidden \(config.hiddenSize)) in full precision on \"+k d:\" progressions"))
        let phaseStart = DispatchTime.now().uptimeNanoseconds
        let initial = try LlamaLoader.random(config: config, format: .dense32, precision: .fp32, seed: options.seed, std: 0.05)
        let full = try FullFineTuning(copying: initial)
        let pretrainExecutor = LlamaExecutor(model: full.model, lora: nil, gradients: full.gradients,
                                             shape: .init(batch: options.batchSize, seqLen: seqLen))
        var pretrainOptions = TrainerOptions()
        pretrainOptions.learningRate = 3e-3
        pretrainOptions.weightDecay = 0.01
        pretrainOptions.schedule = .cosine
        pretrainOptions.warmupSteps = options.pretrainSteps / 20
        pretrainOptions.maxSteps = options.pretrainSteps
        pretrainOptions.seed = options.seed
        let pretrainer = Trainer(executor: pretrainExecutor, parameters: full.parameters, options: pretrainOptions)
        var pretrainLosses: [Double] = []
        try pretrainer.run(CountingTask(direction: "+", batchSize: options.batchSize, seed: options.seed)) { event in
            if case .step(let report) = event {
                pretrainLosses.append(report.loss)
                onEvent(.pretrainStep(report))
            }
        }
        let baseAccuracyPlus = try accuracy(model: full.model, lora: nil, direction: "+")
        let baseAccuracyMinus = try accuracy(model: full.model, lora: nil, direction: "-")
        onEvent(.pretrained(lossFirst: pretrainLosses.first ?? .nan, lossLast: pretrainLosses.last ?? .nan,
                            accuracyPlus: baseAccuracyPlus, accuracyMinus: baseAccuracyMinus, seconds: elapsed(since: phaseStart)))

        // 2. Quantize the linears to NF4 with double quantization (bitsandbytes' format).
        onEvent(.phase("Quantizing the base linears to NF4 (blocksize 64, double quantization)"))
        let quantizeStart = DispatchTime.now().uptimeNanoseconds
        let base = try full.exportModel(format: .quantized(quantization), precision: .bf16)
        let linearParameters = config.decoderLinearParameterCount
        let quantizedBytes = base.frozenBytes.quantized
        onEvent(.quantized(bytesBefore: linearParameters * 4, bytesAfter: quantizedBytes,
                           bitsPerParameter: Double(quantizedBytes * 8) / Double(linearParameters),
                           parameters: linearParameters, seconds: elapsed(since: quantizeStart)))

        return (base, pretrainLosses)
    }

    /// Exact-match accuracy of greedy answers over all 30 problems of a direction.
    func accuracy(model: LlamaModel, lora: LoRAAdapters?, direction: Character) throws -> Double {
        let task = CountingTask(direction: direction, batchSize: 1, seed: 0)
        let generator = Generator(model: model, lora: lora, maxSeqLen: CountingTask.sequenceLength)
        var correct = 0
        for (step, start) in CountingTask.allProblems {
            let prompt = [CountingTask.bos] + CountingTask.encode(task.prompt(step: step, start: start))
            let output = try generator.generate(prompt: prompt, maxNewTokens: CountingTask.answerLength, stopTokens: [CountingTask.eos])
            if CountingTask.decode(output) == task.answer(step: step, start: start) { correct += 1 }
        }
        return Double(correct) / Double(CountingTask.allProblems.count)
    }

    func samples(model: LlamaModel, lora: LoRAAdapters?) throws -> [(prompt: String, expected: String, output: String)] {
        let task = CountingTask(direction: "-", batchSize: 1, seed: 0)
        let generator = Generator(model: model, lora: lora, maxSeqLen: CountingTask.sequenceLength)
        return try [(1, 7), (2, 4), (3, 9)].map { step, start in
            let prompt = task.prompt(step: step, start: start)
            let output = try generator.generate(prompt: [CountingTask.bos] + CountingTask.encode(prompt),
                                                maxNewTokens: CountingTask.answerLength, stopTokens: [CountingTask.eos])
            return (prompt, task.answer(step: step, start: start), CountingTask.decode(output))
        }
    }

    func writeReport(_ report: Report, losses: ([Double], [Double])) throws {
        var memory: [String: JSONValue] = [:]
        for category in MemoryCategory.allCases { memory[category.rawValue] = .int(report.memory[category]) }
        let json: JSONValue = .dictionary([
            "pretrain_losses": .array(losses.0.map { .number($0) }),
            "finetune_losses": .array(losses.1.map { .number($0) }),
            "accuracy_minus_before": .number(report.accuracyMinusBefore),
            "accuracy_minus_after": .number(report.accuracyMinusAfter),
            "accuracy_plus_base": .number(report.accuracyPlusAfterBase),
            "quantized_linear_bytes": .int(report.quantizedBytes),
            "dense_linear_bytes": .int(report.denseBytes),
            "bits_per_parameter": .number(report.bitsPerParameter),
            "memory_bytes": .dictionary(memory),
            "peak_rss_bytes": .int(report.peakResidentBytes),
            "seconds": .number(report.seconds),
        ])
        try FileManager.default.createDirectory(at: options.outputDirectory, withIntermediateDirectories: true)
        try AtomicFile.write(Data((PythonJSON.dumps(json) + "\n").utf8), to: report.reportFile)
    }
}
