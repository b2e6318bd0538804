import Foundation

/// One batch of token ids and unshifted labels (B, T), row-major; -100 labels are ignored.
public struct TokenBatch: Sendable {
    public var inputIDs: [Int32]
    public var labels: [Int32]
    public var batch: Int
    public var seqLen: Int

    public init(inputIDs: [Int32], labels: [Int32], batch: Int, seqLen: Int) {
        precondition(inputIDs.count == batch * seqLen && labels.count == batch * seqLen)
        self.inputIDs = inputIDs
        self.labels = labels
        self.batch = batch
        self.seqLen = seqLen
    }

    /// Targets the HF label shift leaves (labels[b, t+1] != -100 for t < T-1).
    public var targetCount: Int {
        var count = 0
        for b in 0..<batch { for t in 1..<max(seqLen, 1) where labels[b * seqLen + t] != -100 { count += 1 } }
        return count
    }
}

/// Where training batches come from. `batch(step:micro:)` must be a pure function of its arguments (and
/// the source's seed), so that a resumed run sees exactly the batches the interrupted one would have.
public protocol BatchSource {
    func batch(step: Int, micro: Int) -> TokenBatch
}

public struct TrainerOptions: Sendable {
    public var learningRate: Double = 2e-4
    public var weightDecay: Double = 0
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8
    public var schedule: LearningRateSchedule = .linear
    public var warmupSteps: Int = 0
    public var maxSteps: Int = 100
    public var gradientAccumulationSteps: Int = 1
    /// Global-norm clipping (transformers' default 1.0); nil disables it.
    public var maxGradNorm: Double? = 1.0
    public var evalEvery: Int? = nil
    public var saveEvery: Int? = nil
    public var seed: UInt64 = 42

    public init() {}
}

/// What the trainer reports; front ends render these (the library never prints).
public enum TrainingEvent {
    case started(TrainingStart)
    case step(StepReport)
    case evaluated(step: Int, loss: Double)
    case checkpointSaved(step: Int, directory: URL)
    case finished(TrainingSummary)
}

public struct TrainingStart {
    public var trainableParameters: Int
    public var memory: MemoryBreakdown
    public var startStep: Int
    public var maxSteps: Int
}

public struct StepReport {
    public var step: Int
    public var maxSteps: Int
    public var loss: Double
    public var learningRate: Double
    public var gradNorm: Double
    public var tokens: Int
    public var seconds: Double
    public var tokensPerSecond: Double
    /// Live bytes per category, and the process' RSS now / peak.
    public var memory: MemoryBreakdown
    public var residentBytes: Int
    public var peakResidentBytes: Int
}

public struct TrainingSummary {
    public var steps: Int
    public var firstLoss: Double
    public var lastLoss: Double
    public var seconds: Double
    public var tokensPerSecond: Double
    public var peakResidentBytes: Int
}

/// The training loop: gradient accumulation, clipping, AdamW with a schedule, periodic evaluation and
/// checkpoints. Works on whatever the executor trains (LoRA adapters or every weight).
public final class Trainer {
    public let executor: LlamaExecutor
    public let parameters: TrainableParameters
    public var options: TrainerOptions
    public private(set) var optimizer: AdamW
    public private(set) var step = 0
    /// Called to save a checkpoint at `step` into a directory the trainer names.
    public var saveCheckpoint: ((Int) throws -> URL)?
    /// Where evaluation batches come from (loss only), loaded one at a time.
    public var evaluationBatcher: Batcher?
    /// Set for full fine-tuning: its memory is reported, and its bf16 working copies are refreshed after each update.
    public var fullFineTuning: FullFineTuning?
    /// Bytes the training data holds in memory (batchers, token file index), reported as `.dataset`.
    public var datasetBytes = 0
    /// The newest checkpoint saved (or resumed from), named when training diverges.
    public var lastCheckpoint: URL?

    public init(executor: LlamaExecutor, parameters: TrainableParameters, options: TrainerOptions) {
        self.executor = executor
        self.parameters = parameters
        self.options = options
        optimizer = AdamW(learningRate: options.learningRate, beta1: options.beta1, beta2: options.beta2,
                          epsilon: options.epsilon, weightDecay: options.weightDecay)
    }

    /// Continues from a checkpoint taken after `step` updates (parameters and optimizer state already loaded).
    public func resume(atStep step: Int) {
        self.step = step
        optimizer.restore(step: step)
    }

    /// Mean loss over the evaluation batches (no gradients).
    public func evaluate() throws -> Double {
        var sum = 0.0, count = 0
        guard let batcher = evaluationBatcher else { return .nan }
        for index in 0..<batcher.batchesPerEpoch {
            batcher.loadBatch(index, epoch: 0)
            try executor.forward(inputIDs: batcher.inputIDs, batch: batcher.options.batchSize, seqLen: batcher.options.maxSequenceLength)
            let result = executor.loss(labels: batcher.labels)
            sum += result.sum
            count += result.count
        }
        return count > 0 ? sum / Double(count) : .nan
    }

    /// One optimizer step (over `gradientAccumulationSteps` micro-batches). Returns the report.
    public func trainStep(_ source: BatchSource) throws -> StepReport {
        let started = DispatchTime.now().uptimeNanoseconds
        parameters.zeroGradients()
        let micro = max(1, options.gradientAccumulationSteps)
        // The loss is the mean over every target of the accumulated batches (transformers >= 4.46).
        let batches = (0..<micro).map { source.batch(step: step, micro: $0) }
        let targets = batches.reduce(0) { $0 + $1.targetCount }
        let scale: Float = targets > 0 ? 1 / Float(targets) : 0
        var lossSum = 0.0, tokens = 0
        for (index, batch) in batches.enumerated() {
            executor.dropoutSeed = SeededGenerator.mix(options.seed &+ UInt64(step) &* 1_000_003 &+ UInt64(index))
            let result = try executor.lossAndGradients(inputIDs: batch.inputIDs, labels: batch.labels,
                                                       batch: batch.batch, seqLen: batch.seqLen, gradScale: scale)
            lossSum += result.sum
            tokens += batch.batch * batch.seqLen
        }
        let gradNorm = options.maxGradNorm.map { GradientClipping.clip(parameters, maxNorm: $0) }
            ?? GradientClipping.globalNorm(parameters)
        // A NaN / Inf loss or gradient would poison every weight the optimizer touches: stop first.
        guard lossSum.isFinite, gradNorm.isFinite else {
            throw TrainError.diverged(step: step + 1, loss: targets > 0 ? lossSum / Double(targets) : lossSum, gradNorm: gradNorm,
                                      lastCheckpoint: lastCheckpoint?.path)
        }
        let factor = options.schedule.factor(step: step, warmupSteps: options.warmupSteps, totalSteps: options.maxSteps)
        optimizer.learningRate = options.learningRate * factor
        optimizer.update(parameters)
        fullFineTuning?.refreshWorkingCopies()
        step += 1
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let rss = ProcessMemory.residentBytes()
        return StepReport(step: step, maxSteps: options.maxSteps, loss: targets > 0 ? lossSum / Double(targets) : .nan,
                          learningRate: optimizer.learningRate, gradNorm: gradNorm, tokens: tokens, seconds: seconds,
                          tokensPerSecond: Double(tokens) / max(seconds, 1e-9), memory: liveMemory(),
                          residentBytes: rss.current, peakResidentBytes: rss.peak)
    }

    /// What the run holds now, per category, from the buffers themselves.
    public func liveMemory() -> MemoryBreakdown {
        fullFineTuning.map { LiveMemory.breakdown(full: $0, executor: executor, datasetBytes: datasetBytes) }
            ?? LiveMemory.breakdown(executor: executor, datasetBytes: datasetBytes)
    }

    /// Runs until `options.maxSteps`, reporting every event.
    public func run(_ source: BatchSource, onEvent: (TrainingEvent) -> Void) throws {
        onEvent(.started(TrainingStart(trainableParameters: parameters.parameterCount,
                                       memory: liveMemory(), startStep: step, maxSteps: options.maxSteps)))
        let started = DispatchTime.now().uptimeNanoseconds
        var first = Double.nan, last = Double.nan, tokens = 0
        while step < options.maxSteps {
            let report = try trainStep(source)
            if first.isNaN { first = report.loss }
            last = report.loss
            tokens += report.tokens
            onEvent(.step(report))
            if let every = options.evalEvery, every > 0, step % every == 0, evaluationBatcher != nil {
                onEvent(.evaluated(step: step, loss: try evaluate()))
            }
            if let every = options.saveEvery, every > 0, step % every == 0 || step == options.maxSteps, let save = saveCheckpoint {
                let directory = try save(step)
                lastCheckpoint = directory
                onEvent(.checkpointSaved(step: step, directory: directory))
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        onEvent(.finished(TrainingSummary(steps: step, firstLoss: first, lastLoss: last, seconds: seconds,
                                          tokensPerSecond: Double(tokens) / max(seconds, 1e-9),
                                          peakResidentBytes: ProcessMemory.residentBytes().peak)))
    }
}
