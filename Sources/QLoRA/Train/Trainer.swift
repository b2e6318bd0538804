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
    /// Seconds this step spent in the group's collectives (0 without a group): the cost of data parallelism,
    /// including the wait for the slowest rank.
    public var allreduceSeconds: Double = 0
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
    /// The ranks of a data-parallel run (nil: this process alone). Every rank runs the same steps; the
    /// gradients, losses and target counts are summed across ranks before clipping and AdamW.
    public var group: DataParallelGroup?
    /// Gradient sum of a step's earlier micro-batches (`parameters.count` floats, with accumulation only).
    private var accumulated: UnsafeMutablePointer<Float>?
    private var accumulatedCount = 0
    /// Scalars summed across ranks: the target count, then the loss sum and tokens (or evaluation's sum and count).
    private let scalars = UnsafeMutablePointer<Double>.allocate(capacity: 2)
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

    /// Mean loss over the evaluation batches (no gradients). In a group each rank evaluates every
    /// size-th batch and the sums are combined.
    public func evaluate() throws -> Double {
        var sum = 0.0, count = 0
        guard let batcher = evaluationBatcher else { return .nan }
        executor.appliesDropout = false
        defer { executor.appliesDropout = true }
        for index in stride(from: group?.rank ?? 0, to: batcher.batchesPerEpoch, by: group?.size ?? 1) {
            batcher.loadBatch(index, epoch: 0)
            try executor.forward(inputIDs: batcher.inputIDs, batch: batcher.options.batchSize, seqLen: batcher.options.maxSequenceLength)
            let result = executor.loss(labels: batcher.labels)
            sum += result.sum
            count += result.count
        }
        if let group {
            scalars[0] = sum
            scalars[1] = Double(count)
            try group.sumInPlace(scalars, count: 2)
            sum = scalars[0]
            count = Int(scalars[1])
        }
        return count > 0 ? sum / Double(count) : .nan
    }

    /// Micro-batches one step takes from the source: `gradientAccumulationSteps` per rank.
    public var microBatchesPerStep: Int { max(1, options.gradientAccumulationSteps) * (group?.size ?? 1) }

    /// Bytes the trainer itself holds beside the arena: the earlier micro-batches' gradient sum.
    public var accumulationBytes: Int { accumulatedCount * 4 }

    /// One optimizer step (over `gradientAccumulationSteps` micro-batches per rank). Returns the report.
    ///
    /// The step's gradient is the sum of its micro-batches' gradients, each computed alone (from zero) and
    /// then added, the scale 1 / (targets of the whole step) applied inside each. So with two ranks of
    /// one micro-batch each, the allreduce adds exactly the two terms `--grad-accum 2` adds in one process,
    /// and a sum of two is the same in either order: the runs agree bit for bit.
    public func trainStep(_ source: BatchSource) throws -> StepReport {
        let started = DispatchTime.now().uptimeNanoseconds
        parameters.zeroGradients()
        let micro = max(1, options.gradientAccumulationSteps)
        let first = (group?.rank ?? 0) * micro
        prepareAccumulation(micro: micro)
        // The loss is the mean over every target of the accumulated batches (transformers >= 4.46), all ranks'.
        // The targets are counted first and each batch is fetched again when it runs (a source is a pure
        // function; a Batcher copies out of the mapped token file), so one batch buffer serves the step
        // and nothing is allocated for the micro-batches.
        var targets = 0
        for index in 0..<micro { targets += source.batch(step: step, micro: first + index).targetCount }
        var waited: UInt64 = 0
        if let group {
            let began = DispatchTime.now().uptimeNanoseconds
            scalars[0] = Double(targets)
            try group.sumInPlace(scalars, count: 1)
            targets = Int(scalars[0])
            waited += DispatchTime.now().uptimeNanoseconds - began
        }
        let scale: Float = targets > 0 ? 1 / Float(targets) : 0
        var lossSum = 0.0, tokens = 0
        let gradients = parameters.gradients, count = parameters.count
        for index in 0..<micro {
            let batch = source.batch(step: step, micro: first + index)
            if index > 0, let sum = accumulated {
                // Set the earlier micro-batches' sum aside, so that this one is computed from zero.
                if index == 1 { sum.update(from: gradients, count: count) }
                else { for i in 0..<count { sum[i] += gradients[i] } }
                parameters.zeroGradients()
            }
            executor.dropoutSeed = dropoutSeed(micro: first + index)
            let result = try executor.lossAndGradients(inputIDs: batch.inputIDs, labels: batch.labels,
                                                       batch: batch.batch, seqLen: batch.seqLen, gradScale: scale)
            lossSum += result.sum
            tokens += batch.batch * batch.seqLen
        }
        if micro > 1, let sum = accumulated { for i in 0..<count { gradients[i] += sum[i] } }
        if let group {
            let began = DispatchTime.now().uptimeNanoseconds
            try group.sumInPlace(gradients, count: count)
            scalars[0] = lossSum
            scalars[1] = Double(tokens)
            try group.sumInPlace(scalars, count: 2)
            lossSum = scalars[0]
            tokens = Int(scalars[1])
            waited += DispatchTime.now().uptimeNanoseconds - began
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
                          residentBytes: rss.current, peakResidentBytes: rss.peak, allreduceSeconds: Double(waited) / 1e9)
    }

    /// The dropout masks' seed of global micro-batch `micro` of the current step.
    private func dropoutSeed(micro: Int) -> UInt64 {
        SeededGenerator.mix(options.seed &+ UInt64(step) &* 1_000_003 &+ UInt64(micro))
    }

    /// The accumulation buffer, laid out on the first step that needs it (never inside later steps).
    private func prepareAccumulation(micro: Int) {
        guard micro > 1, accumulatedCount != parameters.count else { return }
        accumulated?.deallocate()
        accumulated = .allocate(capacity: parameters.count)
        accumulatedCount = parameters.count
    }

    /// What the run holds now, per category, from the buffers themselves.
    public func liveMemory() -> MemoryBreakdown {
        var memory = fullFineTuning.map { LiveMemory.breakdown(full: $0, executor: executor, datasetBytes: datasetBytes) }
            ?? LiveMemory.breakdown(executor: executor, datasetBytes: datasetBytes)
        memory[.gradients] += accumulationBytes
        return memory
    }

    /// Runs until `options.maxSteps`, reporting every event.
    public func run(_ source: BatchSource, onEvent: (TrainingEvent) -> Void) throws {
        prepareAccumulation(micro: max(1, options.gradientAccumulationSteps))
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
            let saving = options.saveEvery.map { $0 > 0 && (step % $0 == 0 || step == options.maxSteps) } ?? false
            if let group, group.size > 1, saving || step == options.maxSteps { try group.checkIdentical(parameters, step: step) }
            if saving, let save = saveCheckpoint {
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
