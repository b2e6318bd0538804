import Foundation
import QLoRA

/// `qlora train`: QLoRA / LoRA fine-tuning of a Hugging Face model on a JSONL dataset.
public enum TrainCommand: Command {
    public static let name = "train"
    public static let summary = "Fine-tune LoRA adapters on a (4-bit) Hugging Face model from a JSONL dataset"
    public static let help = """
    Usage: qlora train --model DIR --data FILE.jsonl --output DIR [options]

    Loads the model (dense safetensors are quantized to NF4 on load; bitsandbytes 4-bit checkpoints are
    used as they are), tokenizes the dataset with the model's tokenizer.json and chat template, trains
    LoRA adapters, and writes the adapter (PEFT format: adapter_config.json + adapter_model.safetensors)
    to the output directory, with metrics.jsonl and checkpoint-N/ directories along the way. One run at
    a time per output directory (.qlora-train.lock holds the pid; a killed run's lock is taken over). A NaN
    or infinite loss or gradient stops training at that step, naming the last good checkpoint.

    Dataset lines (JSONL): {"text": ...} trains every token; {"prompt": ..., "completion": ...} trains the
    completion; {"messages": [{"role": ..., "content": ...}, ...]} renders the chat template and trains
    the assistant turns.

    Options:
      --model DIR              Hugging Face model directory (config.json, *.safetensors, tokenizer.json),
                               or a .gguf file (tokenizer and chat template from its metadata)
      --data FILE              training JSONL
      --output DIR             where the adapter, checkpoints and metrics.jsonl go
      --eval-data FILE         evaluation JSONL (or --eval-fraction F to hold out part of --data)
      --steps N                optimizer steps (default 100), or --epochs E
      --lr X                   peak learning rate (default 2e-4)
      --schedule S             linear (default), cosine, constant, constant_with_warmup
      --warmup N               warmup steps (default 0)
      --grad-accum N           micro-batches per optimizer step (default 1)
      --max-grad-norm X        global-norm clipping (default 1.0; 0 disables)
      --weight-decay X         AdamW decoupled weight decay (default 0)
      --[no-]packing           pack examples into full rows (default on) or pad each example
      --eval-every N           evaluate every N steps
      --save-every N           checkpoint every N steps (and at the end)
      --resume                 continue from the newest checkpoint-N in --output (same --seed, --batch,
                               --seq-len and ranks x --grad-accum as the run that wrote it)
      --adapter DIR            start from this PEFT adapter (continue a fine-tune, or a second stage): its
                               rank, alpha and targets are used; conflicting --rank/--alpha/--targets are errors
      --full                   full fine-tuning: every weight trained with AdamW on fp32 master weights (implies
                               --quant none and --compute-dtype fp32; with --compute-dtype bf16, bf16 mixed
                               precision: the GEMMs read bf16 copies refreshed after each step); LoRA
                               options do not apply; --output receives the trained model (config.json,
                               model.safetensors, tokenizer files)
      --seed S                 data order, LoRA init and dropout (default 42)
      --token-cache DIR        where tokenized datasets are kept and reused (default $QLORA_CACHE/tokens,
                               $XDG_CACHE_HOME/qlora/tokens or ~/.cache/qlora/tokens)
      --threads N              compute threads (default: the cores, divided among the ranks on one machine)
    \(TrainingArguments.helpText)
      Several machines (data-parallel over Open MPI, docs/distributed.md):
        mpirun -np N qlora train ...   N ranks each take --grad-accum micro-batches of every step (a step is
                                 N x grad-accum micro-batches, in the data order of one process with
                                 --grad-accum N x grad-accum); the adapter gradients are summed with an MPI
                                 allreduce before clipping and AdamW. Rank 0 alone writes --output and reads
                                 --resume checkpoints (then broadcasts them); every rank needs --model and --data.
                                 Open MPI's libmpi is loaded at run time (apt-get install openmpi-bin libopenmpi-dev)
        --distributed            use MPI even outside mpirun (implied under mpirun -np N > 1)
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name,
                                 valueOptions: TrainingArguments.valueOptions.union([
                                    "model", "data", "output", "eval-data", "eval-fraction", "steps", "epochs", "lr", "schedule",
                                    "warmup", "grad-accum", "max-grad-norm", "weight-decay", "eval-every", "save-every", "seed", "adapter", "token-cache",
                                    "threads"]),
                                 flagOptions: TrainingArguments.flagOptions.union(["packing", "resume", "full", "distributed"]))
        guard let model = args.string("model"), let data = args.string("data"), let output = args.string("output") else {
            throw CLIError.failed("qlora train: --model, --data and --output are required. Run `qlora train --help`.")
        }
        try PathChecks.modelDirectory(model, command: name)
        try PathChecks.readableFile(data, command: name, option: "data")
        if let evalData = args.string("eval-data") { try PathChecks.readableFile(evalData, command: name, option: "eval-data") }
        let shared = try TrainingArguments(args)
        var options = TrainingRun.Options(modelDirectory: URL(fileURLWithPath: model), dataFile: URL(fileURLWithPath: data),
                                          outputDirectory: URL(fileURLWithPath: output))
        options.evalFile = args.string("eval-data").map { URL(fileURLWithPath: $0) }
        options.evalFraction = try args.double("eval-fraction", default: 0, in: 0...0.999_999, expected: "a fraction in [0, 1)")
        options.format = shared.format
        options.precision = shared.precision
        if let adapter = args.string("adapter") {
            let directory = URL(fileURLWithPath: adapter)
            let config: LoRAConfig
            do { config = try PEFTAdapterIO.loadConfig(directory: directory) } catch {
                throw CLIError.failed("qlora train: --adapter \(adapter): \(error)")
            }
            // The adapter decides its shape; a flag that says otherwise is a mistake, not an override.
            let modelConfig = try LlamaConfig.load(directory: URL(fileURLWithPath: model))
            let given: [(String, String, String)] = [
                ("rank", args.string("rank") ?? "", "\(config.r)"), ("alpha", args.string("alpha") ?? "", "\(config.loraAlpha)"),
                ("targets", args.string("targets") ?? "", config.targets(in: modelConfig).joined(separator: ",")),
            ]
            for (option, value, adapterValue) in given where !value.isEmpty {
                let same = option == "targets" ? Set(LoRAConfig(targetModules: value.split(separator: ",").map(String.init)).targets(in: modelConfig)) == Set(config.targets(in: modelConfig))
                    : Double(value) == Double(adapterValue)
                guard same else {
                    throw CLIError.failed("qlora train: --\(option) \(value) conflicts with the adapter's \(adapterValue) (\(adapter)/adapter_config.json); drop --\(option) to continue that adapter.")
                }
            }
            options.initialAdapter = directory
        }
        options.full = args.flag("full")
        if options.full {
            let lora = ["rank", "alpha", "dropout", "targets", "layers", "init", "modules-to-save"].filter { args.string($0) != nil }
                + (args.flag("rslora") ? ["rslora"] : [])
            guard lora.isEmpty else {
                throw CLIError.failed("qlora train: --full trains every weight; the LoRA options \(lora.map { "--" + $0 }.joined(separator: ", ")) do not apply.")
            }
            // Full fine-tuning is fp32 weights and compute unless told otherwise (then TrainingRun explains);
            // --compute-dtype bf16 is mixed precision.
            if args.string("quant") == nil { options.format = .dense32 }
            if args.string("compute-dtype") == nil { options.precision = .fp32 }
        }
        options.lora = shared.lora
        options.batchSize = shared.batch
        options.seqLen = shared.seqLen
        options.gradientCheckpointing = shared.gradientCheckpointing
        options.packing = args.flag("packing", default: true)
        options.resume = args.flag("resume")
        options.seed = UInt64(try args.int("seed", default: 42, in: 0...Int.max, expected: "a non-negative integer"))
        options.epochs = try args.double("epochs", in: 1e-9...1e9, expected: "a positive number of epochs")
        options.tokenCache = args.string("token-cache").map { URL(fileURLWithPath: $0) }
        var trainer = TrainerOptions()
        trainer.maxSteps = try args.int("steps", default: 100, in: 1...ShapeLimits.maxSteps, expected: "a positive number of steps")
        trainer.learningRate = try args.double("lr", default: 2e-4, in: Double.leastNonzeroMagnitude...Double.greatestFiniteMagnitude,
                                               expected: "a positive, finite learning rate such as 2e-4")
        let schedule = try args.choice("schedule", LearningRateSchedule.allCases.map(\.rawValue), default: "linear")
        trainer.schedule = LearningRateSchedule(rawValue: schedule)!
        trainer.warmupSteps = try args.int("warmup", default: 0, in: 0...ShapeLimits.maxSteps, expected: "a non-negative number of steps")
        trainer.gradientAccumulationSteps = try args.int("grad-accum", default: 1, in: 1...ShapeLimits.maxBatch, expected: "an integer from 1 to \(ShapeLimits.maxBatch)")
        let clip = try args.double("max-grad-norm", default: 1.0, in: 0...Double.greatestFiniteMagnitude, expected: "a non-negative number (0 disables clipping)")
        trainer.maxGradNorm = clip > 0 ? clip : nil
        trainer.weightDecay = try args.double("weight-decay", default: 0, in: 0...1e6, expected: "a non-negative number")
        trainer.evalEvery = try args.int("eval-every", in: 1...ShapeLimits.maxSteps, expected: "a positive number of steps")
        trainer.saveEvery = try args.int("save-every", in: 1...ShapeLimits.maxSteps, expected: "a positive number of steps")
        options.trainer = trainer

        let blas = try OpenBLAS.ensureLoaded()
        let launcher = OpenMPI.launcherWorld()
        // Under mpirun every rank trains its share; without MPI, N copies would each write the same output.
        let distributed = args.flag("distributed") || (launcher?.size ?? 1) > 1
        let group = try distributed ? MPIDataParallelGroup() : nil
        // Ranks sharing a machine share its cores: by default each takes its part of them.
        let localRanks = group == nil ? 1 : max(1, launcher?.localSize ?? 1)
        Parallel.threads = try args.int("threads", default: max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks))
        let speaks = (group?.rank ?? 0) == 0
        if speaks {
            print("qlora train — \(blas.summary)")
            if let group {
                func count(_ n: Int, _ noun: String, _ plural: String? = nil) -> String { "\(n) \(n == 1 ? noun : plural ?? noun + "s")" }
                let perRank = options.trainer.gradientAccumulationSteps
                print("distributed: \(count(group.size, "rank")) (Open MPI, \(group.mpi.library)), \(count(Parallel.threads, "thread")) per rank; "
                      + "each step \(count(perRank * group.size, "micro-batch", "micro-batches")), \(perRank) per rank")
            }
        }
        do {
            try train(options, group: group, every: max(1, trainer.maxSteps / 20), speaks: speaks)
        } catch {
            guard let group, group.size > 1 else { throw error }
            // The other ranks wait in a collective: end the whole job, not just this rank.
            FileHandle.standardError.write(Data("error (rank \(group.rank) of \(group.size)): \(error)\n".utf8))
            group.mpi.abort(code: 1)
        }
        group?.mpi.finish()
        return 0
    }

    /// Runs the training and prints its events (rank 0 only in a distributed run).
    static func train(_ options: TrainingRun.Options, group: MPIDataParallelGroup?, every: Int, speaks: Bool) throws {
        try TrainingRun(options: options, group: group).run { event in
            guard speaks else { return }
            switch event {
            case .tokenized(let data, let file, let examples, let tokens, let reused, let seconds):
                print("\(data.lastPathComponent): \(examples) examples, \(tokens) tokens, \(reused ? "mapped from" : String(format: "tokenized in %.1f s into", seconds)) \(file.path)")
            case .loaded(let config, let summary, let train, let eval, let rows, let seconds):
                print("model: \(config.numHiddenLayers) layers, hidden \(config.hiddenSize), vocab \(config.vocabSize); loaded in \(String(format: "%.1f", seconds)) s")
                print("data: \(train) training examples -> \(rows) rows of \(options.seqLen) tokens; \(eval) evaluation examples")
                print(summary)
            case .resumed(let step, let from):
                print("resumed at step \(step) from \(from.path)")
            case .training(.started(let start)):
                print("memory held (from the buffers themselves):\n\(Formatting.memoryTable(start.memory))")
            case .training(.step(let report)):
                Formatting.reportProgress(report, label: "train", every: every)
            case .training(.evaluated(let step, let loss)):
                print(String(format: "eval at step %d: loss %.4f  perplexity %.2f", step, loss, exp(loss)))
            case .training(.checkpointSaved(_, let directory)):
                print("saved \(directory.path)")
            case .training(.finished(let s)):
                print(String(format: "done: %d steps, loss %.4f -> %.4f, %.1f s, %.0f tokens/s, peak RSS %@", s.steps, s.firstLoss,
                             s.lastLoss, s.seconds, s.tokensPerSecond, Formatting.bytes(s.peakResidentBytes)))
            case .saved(let directory):
                print(options.full ? "model written to \(directory.path) (config.json, model.safetensors, tokenizer files)"
                                   : "adapter written to \(directory.path) (adapter_config.json, adapter_model.safetensors)")
            }
        }
    }
}
