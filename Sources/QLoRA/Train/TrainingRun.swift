import Foundation
import SafeTensors

/// A whole fine-tuning run as `qlora train` performs it: load (and quantize) the base model, tokenize a
/// JSONL dataset, build adapters, train with periodic evaluation and checkpoints, write the final
/// adapter and a metrics log. Resumable from the newest checkpoint in the output directory.
public struct TrainingRun {
    public struct Options: Sendable {
        public var modelDirectory: URL
        public var dataFile: URL
        public var evalFile: URL?
        /// Fraction of the training file held out for evaluation when no eval file is given.
        public var evalFraction: Double = 0
        public var outputDirectory: URL
        public var format: BaseWeightFormat = .quantized(QuantizationOptions())
        public var precision: ComputePrecision = .bf16
        public var lora = LoRAConfig(r: 16, loraAlpha: 32, targetModules: ["all-linear"])
        public var batchSize = 1
        public var seqLen = 512
        public var packing = true
        public var gradientCheckpointing = false
        public var trainer = TrainerOptions()
        /// Train for this many epochs instead of `trainer.maxSteps` when set.
        public var epochs: Double?
        public var resume = false
        /// Start from this PEFT adapter (its config and weights) instead of a fresh one.
        public var initialAdapter: URL?
        /// Full fine-tuning (every weight trained with AdamW on fp32 master weights; the GEMMs in fp32
        /// with fp32 `precision`, on bf16 working copies with bf16) instead of LoRA; `format` must be
        /// dense. The output is a model.
        public var full = false
        public var seed: UInt64 = 42
        /// Where tokenized datasets are kept for the next run (`TokenFileCache.defaultDirectory` when nil).
        public var tokenCache: URL?

        public init(modelDirectory: URL, dataFile: URL, outputDirectory: URL) {
            self.modelDirectory = modelDirectory
            self.dataFile = dataFile
            self.outputDirectory = outputDirectory
        }
    }

    public enum Event {
        /// A data file's token file: mapped from the cache (`reused`) or tokenized into it now.
        case tokenized(data: URL, tokenFile: URL, examples: Int, tokens: Int, reused: Bool, seconds: Double)
        case loaded(model: LlamaConfig, trainableSummary: String, trainExamples: Int, evalExamples: Int, rows: Int, seconds: Double)
        case resumed(step: Int, from: URL)
        case training(TrainingEvent)
        case saved(URL)
    }

    public let options: Options
    /// The ranks of a data-parallel run (`mpirun -np N qlora train`), nil for this process alone. Every rank
    /// loads the model and data; each trains on its share of every step's micro-batches; rank 0 alone
    /// writes the output directory (checkpoints, metrics.jsonl, the adapter) and reads a checkpoint to
    /// resume from, which it then broadcasts.
    public let group: DataParallelGroup?

    public init(options: Options, group: DataParallelGroup? = nil) {
        self.options = options
        self.group = group
    }

    /// Whether this process writes the output directory (rank 0, or the only process).
    public var writesOutput: Bool { (group?.rank ?? 0) == 0 }

    /// A BatchSource over a Batcher: global batch index = step * accumulation + micro, wrapping epochs;
    /// `accumulation` counts every rank's micro-batches (rank r takes micro r * perRank ..< (r + 1) * perRank).
    struct BatcherSource: BatchSource {
        let batcher: Batcher
        let accumulation: Int

        func batch(step: Int, micro: Int) -> TokenBatch {
            let global = step * accumulation + micro
            let perEpoch = max(1, batcher.batchesPerEpoch)
            batcher.loadBatch(global % perEpoch, epoch: global / perEpoch)
            return TokenBatch(inputIDs: batcher.inputIDs, labels: batcher.labels,
                              batch: batcher.options.batchSize, seqLen: batcher.options.maxSequenceLength)
        }
    }

    /// The data files as token files (each tokenized once into a mapped file; batches are read out of
    /// it) and the token ids batching needs; the tokenizer itself is not kept.
    private func tokenizeData(vocabSize: Int, onEvent: (Event) -> Void) throws
        -> (train: TokenFile, eval: TokenFile?, padTokenID: Int32, eosTokenID: Int32?) {
        let o = options
        let dataset = try DatasetTokenizer(modelDirectory: o.modelDirectory, vocabSize: vocabSize, purpose: "training")
        let cache = TokenFileCache(directory: o.tokenCache ?? TokenFileCache.defaultDirectory)
        func tokenFile(_ data: URL) throws -> TokenFile {
            let began = DispatchTime.now().uptimeNanoseconds
            let entry = try cache.tokenFile(for: data, dataset: dataset)
            onEvent(.tokenized(data: data, tokenFile: entry.file.url, examples: entry.file.exampleCount, tokens: entry.file.tokenCount,
                               reused: entry.reused, seconds: Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9))
            return entry.file
        }
        return (try tokenFile(o.dataFile), try o.evalFile.map(tokenFile), dataset.padTokenID, dataset.tokenizer.eosTokenID)
    }

    @discardableResult
    public func run(onEvent: (Event) -> Void) throws -> TrainingSummary? {
        let started = DispatchTime.now().uptimeNanoseconds
        let o = options
        guard o.batchSize > 0, o.seqLen > 1 else { throw TrainError.badOptions("batch size must be positive and sequence length at least 2") }
        // One run per output directory (rank 0's, in a data-parallel run); a dead run's lock and temp files are taken over.
        let lock = writesOutput ? try OutputLock(directory: o.outputDirectory) : nil
        defer { lock?.release() }
        // Full fine-tuning copies fp32 master weights out of the loaded model, so it loads them exactly.
        let model = try LlamaLoader.load(directory: o.modelDirectory, format: o.full ? .dense32 : o.format,
                                         precision: o.full ? .fp32 : o.precision)
        // The tokenizer only builds the token files: it is released before training starts (Gemma 3's
        // 262k-token tokenizer holds about 100 MB that the memory plan does not count).
        let data = try tokenizeData(vocabSize: model.config.vocabSize, onEvent: onEvent)
        let trainFile = data.train
        var trainExamples = Array(0..<trainFile.exampleCount)
        var evalSource: (file: TokenFile, examples: [Int])?
        if let file = data.eval {
            evalSource = (file, Array(0..<file.exampleCount))
        } else if o.evalFraction > 0 {
            let split = try TrainingExample.split(trainExamples, evalFraction: o.evalFraction, seed: o.seed)
            trainExamples = split.train
            if !split.eval.isEmpty { evalSource = (trainFile, split.eval) }
        }
        let pad = data.padTokenID
        let mode: BatchingMode = o.packing ? .packing : .padding
        let train = try Batcher(source: trainFile, examples: trainExamples,
                                options: BatcherOptions(batchSize: o.batchSize, maxSequenceLength: o.seqLen, mode: mode, shuffleSeed: o.seed),
                                padTokenID: pad, separatorTokenID: o.packing ? data.eosTokenID : nil)
        var trainerOptions = o.trainer
        trainerOptions.seed = o.seed
        if let epochs = o.epochs {
            let perStep = max(1, trainerOptions.gradientAccumulationSteps) * (group?.size ?? 1)
            trainerOptions.maxSteps = max(1, Int((Double(train.batchesPerEpoch) * epochs / Double(perStep)).rounded(.up)))
        }
        let shape = ActivationLayout.Shape(batch: o.batchSize, seqLen: o.seqLen, gradientCheckpointing: o.gradientCheckpointing)
        var adapters: LoRAAdapters?
        var full: FullFineTuning?
        let executor: LlamaExecutor
        if o.full {
            // fp32 weights and compute, or bf16 mixed precision (bf16 working copies, fp32 masters).
            guard o.format == .dense32 || o.format == .denseBF16, let precision = FullFineTuning.Precision(compute: o.precision) else {
                throw TrainError.badOptions("full fine-tuning trains dense fp32 master weights: use --quant none (or no --quant) with --compute-dtype fp32, or --compute-dtype bf16 for bf16 mixed precision")
            }
            guard !o.resume else { throw TrainError.badOptions("--resume is not supported with --full (checkpoints hold adapters)") }
            let copy = try FullFineTuning(copying: model, precision: precision)
            executor = LlamaExecutor(model: copy.model, lora: nil, gradients: copy.gradients, shape: shape)
            full = copy
        } else {
            var lora = try o.initialAdapter.map { try PEFTAdapterIO.loadConfig(directory: $0) } ?? o.lora
            lora.baseModelNameOrPath = o.modelDirectory.path
            let created = try LoRAAdapters(modelConfig: model.config, config: lora)
            if let initial = o.initialAdapter {
                try PEFTAdapterIO.loadWeights(into: created, directory: initial)
            } else {
                created.initialize(seed: o.seed)
                created.initializeModulesToSave(from: model)
            }
            executor = LlamaExecutor(model: model, lora: created, shape: shape)
            adapters = created
        }
        let parameters = full?.parameters ?? adapters!.parameters
        let trainer = Trainer(executor: executor, parameters: parameters, options: trainerOptions)
        trainer.fullFineTuning = full
        trainer.group = group
        var datasetBytes = train.heldBytes + trainFile.indexBytes
        if let evalSource {
            let batcher = try Batcher(source: evalSource.file, examples: evalSource.examples,
                                      options: BatcherOptions(batchSize: o.batchSize, maxSequenceLength: o.seqLen, mode: mode, shuffleSeed: nil),
                                      padTokenID: pad, separatorTokenID: o.packing ? data.eosTokenID : nil)
            trainer.evaluationBatcher = batcher
            datasetBytes += batcher.heldBytes + (evalSource.file === trainFile ? 0 : evalSource.file.indexBytes)
        }
        trainer.datasetBytes = datasetBytes
        let trainable = parameters.parameterCount
        let all = model.config.totalParameterCount + (full == nil ? trainable : 0)
        onEvent(.loaded(model: model.config, trainableSummary: LoRAAdapters.summaryLine(trainable: trainable, all: all),
                        trainExamples: trainExamples.count, evalExamples: evalSource?.examples.count ?? 0, rows: train.rowCount,
                        seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9))

        if writesOutput { try FileManager.default.createDirectory(at: o.outputDirectory, withIntermediateDirectories: true) }
        var losses: [Double] = []
        // What decides which batches each step sees: a checkpoint resumes only under the same.
        let dataOrder: [String: JSONValue] = ["seed": .int(Int(o.seed)), "batch_size": .int(o.batchSize), "seq_len": .int(o.seqLen),
                                              "micro_batches_per_step": .int(trainer.microBatchesPerStep)]
        var resumedStep = 0
        if o.resume, writesOutput, let adapters, let checkpoint = TrainingCheckpoint.latest(in: o.outputDirectory) {
            let restored = try TrainingCheckpoint.load(checkpoint, into: adapters, sameAs: dataOrder)
            trainer.lastCheckpoint = checkpoint
            losses = restored.losses
            resumedStep = restored.step
            onEvent(.resumed(step: restored.step, from: checkpoint))
        }
        if let group, group.size > 1, let adapters {
            // Every rank starts from rank 0's adapters and optimizer state (the same seeded init, or the checkpoint).
            var step = Double(resumedStep)
            try group.broadcast(&step, count: MemoryLayout<Double>.size, root: 0)
            resumedStep = Int(step)
            try group.broadcastFromRankZero(adapters.parameters)
        }
        if resumedStep > 0 { trainer.resume(atStep: resumedStep) }
        // Resumed: the log keeps what the checkpoint covers (steps after it are trained again);
        // otherwise it starts empty. Rank 0 alone writes it.
        let metrics = try writesOutput ? MetricsLog(url: o.outputDirectory.appendingPathComponent("metrics.jsonl"),
                                                         keepingStepsThrough: o.resume && resumedStep > 0 ? resumedStep : nil,
                                                         distributed: (group?.size ?? 1) > 1) : nil
        // Loading and tokenizing left freed temporaries in the heap; give them back before training.
        ProcessMemory.releaseFreedMemory()
        if let adapters, writesOutput {
            trainer.saveCheckpoint = { step in
                try TrainingCheckpoint.save(adapters: adapters, step: step, losses: losses, into: o.outputDirectory,
                                            extraState: dataOrder.merging(["max_steps": .int(trainerOptions.maxSteps)]) { a, _ in a })
            }
        }
        var summary: TrainingSummary?
        try trainer.run(BatcherSource(batcher: train, accumulation: trainer.microBatchesPerStep)) { event in
            switch event {
            case .step(let report):
                losses.append(report.loss)
                metrics?.write(step: report)
            case .evaluated(let step, let loss):
                metrics?.write(evaluation: loss, step: step)
            case .finished(let s):
                summary = s
            default: break
            }
            onEvent(.training(event))
        }
        if let failure = metrics?.failure { throw failure }
        guard writesOutput else { return summary }
        if let full {
            // The trained model itself: weights, config.json and the base's tokenizer files.
            let sourceConfig = try? Data(contentsOf: o.modelDirectory.appendingPathComponent("config.json"))
            try LlamaWriter.save(try full.exportModel(format: .dense32, precision: .fp32), to: o.outputDirectory, sourceConfig: sourceConfig)
            try LlamaWriter.copyCompanionFiles(from: o.modelDirectory, to: o.outputDirectory)
        } else if let adapters {
            try PEFTAdapterIO.save(adapters, to: o.outputDirectory)
        }
        onEvent(.saved(o.outputDirectory))
        return summary
    }
}

/// metrics.jsonl: one JSON object per step / evaluation, appended and flushed as training goes.
final class MetricsLog {
    private let handle: FileHandle
    private let url: URL
    private let distributed: Bool

    /// `keepingStepsThrough`: keep the complete lines of steps up to it (rewritten atomically), drop the
    /// rest (a line cut by a kill, steps after the checkpoint); nil starts an empty log. `distributed`:
    /// each step also records its time in the allreduces.
    init(url: URL, keepingStepsThrough step: Int?, distributed: Bool = false) throws {
        self.distributed = distributed
        var kept = Data()
        if let step, let old = FileManager.default.contents(atPath: url.path) {
            for line in old.split(separator: 0x0A) {
                guard let entry = try? JSONValue.parse(data: Data(line)), let s = entry["step"]?.intValue, s <= step else { continue }
                kept.append(line)
                kept.append(0x0A)
            }
        }
        self.url = url
        try AtomicFile.write(kept, to: url)
        handle = try FileHandle(forWritingTo: url)
        _ = try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    /// The first write that failed (a full disk): reported when the run ends, never a crash mid-run.
    private(set) var failure: Error?

    /// One line, one write(2) call: a kill leaves whole lines (at most a cut last one, dropped on resume).
    private func write(_ value: JSONValue) {
        guard failure == nil else { return }
        do { try handle.write(contentsOf: Data((PythonJSON(value).render(indent: nil, sortKeys: false) + "\n").utf8)) } catch {
            failure = RuntimeError.writeFailed(path: url.path, reason: "\(error)")
        }
    }

    func write(step r: StepReport) {
        var memory: [(key: String, value: JSONValue)] = MemoryCategory.allCases.map { ($0.rawValue, .int(r.memory[$0])) }
        memory.append(("rss", .int(r.residentBytes)))
        memory.append(("peak_rss", .int(r.peakResidentBytes)))
        var fields: [(key: String, value: JSONValue)] = [
            ("step", .int(r.step)), ("loss", .number(r.loss)), ("learning_rate", .number(r.learningRate)),
            ("grad_norm", .number(r.gradNorm)), ("tokens", .int(r.tokens)), ("seconds", .number(r.seconds)),
            ("tokens_per_second", .number(r.tokensPerSecond)), ("memory_bytes", .object(memory)),
        ]
        // Data-parallel runs: rank 0's time in the allreduces (waiting for the other ranks included).
        if distributed { fields.insert(("allreduce_seconds", .number(r.allreduceSeconds)), at: 6) }
        write(.object(fields))
    }

    func write(evaluation loss: Double, step: Int) {
        write(.object([("step", .int(step)), ("eval_loss", .number(loss)), ("eval_perplexity", .number(Foundation.exp(loss)))]))
    }
}
