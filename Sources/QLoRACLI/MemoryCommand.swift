import Foundation
import QLoRA
import GGUF

/// `qlora memory`: where every byte of a training run goes, from config.json alone.
public enum MemoryCommand: Command {
    public static let name = "memory"
    public static let summary = "Plan the memory of a fine-tuning run per category, from config.json alone"
    public static let help = """
    Usage: qlora memory <model-dir | config.json | model.gguf> [options]

    Plans the memory of a training run from the model's config.json alone (no weights are read; a 70B
    plan takes milliseconds): bytes per category (quantized weights, other frozen weights, trainable
    parameters, gradients, optimizer state, saved activations, workspace, dataset with --data, runtime
    overhead), the total,
    and parameter counts. The figures are those of qlora's own buffers, computed by the same functions
    that size them, so a real run holds exactly these bytes plus the runtime overhead (docs/memory.md).

    Base weights:
      --quant nf4|fp4|none|keep   4-bit base (QLoRA), a dense one, or a GGUF file's own blocks (default:
                               keep for a .gguf, the checkpoint's quantization_config if it has one, else nf4)
      --base-dtype bf16|fp32   dense base precision with --quant none (default bf16)
      --blocksize N            4-bit block size, a power of two 32...4096 (default 64)
      --double-quant / --no-double-quant
                               8-bit quantized block scales (default on)
      --compute-dtype bf16|fp16|fp32
                               precision of the dequantized weight tiles (default bf16)
    Adapters:
      --rank R                 LoRA rank (default 16)
      --alpha A                LoRA alpha (default 2 x rank; does not change memory)
      --targets LIST           comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
                               (Phi-3: qkv_proj,o_proj,gate_up_proj,down_proj) or all-linear (default)
      --dropout P              LoRA dropout; > 0 adds a dropout scratch buffer (default 0)
      --modules-to-save LIST   embed_tokens and/or lm_head trained in full beside the adapters
      --full                   full fine-tuning instead of LoRA, as `train --full`: fp32, or with
                               --compute-dtype bf16 bf16 mixed precision (fp32 masters, bf16 copies)
    Generation (instead of training):
      --adapters N             plan `qlora generate` serving N LoRA adapters (of --rank/--targets) on one
                               base: N adapters' parameters, --batch sequences of --seq-len positions
                               (prompt + new tokens) decoded together, their KV caches and buffers;
                               0 = the base alone
    Run:
      --batch B                sequences per step (default 1)
      --seq-len T              tokens per sequence (default 512)
      --gradient-checkpointing / --no-gradient-checkpointing
                               keep only each layer's input, recompute the rest (default off)
      --optimizer adamw|sgd    AdamW keeps 2 fp32 states per trainable parameter, SGD none (default adamw)
      --grad-accum N           micro-batches per step (per rank), as for train; above 1 the earlier ones'
                               gradient sum is kept beside the gradients (one more gradient section)
      --ranks N                a data-parallel run of N ranks (mpirun -np N qlora train): memory per rank,
                               bytes summed per step and sent per rank (docs/distributed.md)
      --tile-rows N            rows per dequantized weight tile (default: automatic, 256-1024 within 8 MiB)
      --logits-chunk N         rows of logits computed at once (default 64)
      --data FILE.jsonl        count the dataset as `train` holds it (needs the model's tokenizer): the
                               file is tokenized into the token cache (or mapped from it) and its index
                               and batch buffers planned as "dataset"; --token-cache DIR as for train
      --[no-]packing           with --data: rows packed (default) or one record per row
    Output:
      --compare                full fine-tuning fp32, full fine-tuning bf16 mixed precision, LoRA on a
                               bf16 base and QLoRA side by side: a table and a stacked-bar chart
      --ascii                  letters instead of block shades in the chart
      --json                   the same numbers as JSON (exact bytes) instead of tables (with --measure:
                               planned and measured per category, peak RSS, relative error)
      --svg FILE               also write the compare set as a stacked-bar SVG picture
      --measure                build the model and buffers (the real weights if the directory has them,
                               random ones of the same shape otherwise), run a few real training steps,
                               and print plan vs measured per category and peak RSS vs planned total
      --steps N                training steps for --measure (default 3); with --adapters, --measure runs
                               one generation instead
      --probe-runtime          measure this process' runtime overhead (OpenBLAS loaded, one GEMM run)
                               and print it; no model needed (--gemm-size N: the GEMM's size, default 1024)

    Examples:
      qlora memory Fixtures/configs/llama-2-7b.json --seq-len 2048 --gradient-checkpointing
      qlora memory meta-llama/Meta-Llama-3-8B --compare --svg memory.svg
      qlora memory SmolLM2-135M-Instruct --adapters 4 --batch 8 --seq-len 1024 --rank 8
      qlora memory Fixtures/configs/llama-2-7b.json --ranks 4 --grad-accum 2
    """

    static let valueOptions: Set<String> = [
        "quant", "base-dtype", "blocksize", "compute-dtype", "rank", "alpha", "targets", "dropout", "batch", "seq-len", "modules-to-save",
        "optimizer", "tile-rows", "logits-chunk", "svg", "gemm-size", "steps", "adapters", "data", "token-cache",
        "grad-accum", "ranks",
    ]
    static let flagOptions: Set<String> = [
        "double-quant", "full", "gradient-checkpointing", "compare", "ascii", "json", "probe-runtime", "measure", "packing",
    ]

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name, valueOptions: valueOptions, flagOptions: flagOptions)
        if args.flag("probe-runtime") {
            _ = try args.requirePositionals([])
            print(renderProbe(try RuntimeOverhead.probe(gemmSize: try positive(args, "gemm-size", default: 1024))))
            return 0
        }
        let path = try args.requirePositionals(["model-dir | config.json"])[0]
        let config = try loadConfig(path)
        var options = try planOptions(args, config: config)
        let model = modelName(path)
        var datasetLine: String?
        if let data = args.string("data") {
            guard !args.flag("measure"), options.generationAdapters == nil else {
                throw CLIError.failed("qlora memory: --data plans a training run's dataset; it does not apply to --measure (synthetic batches) or --adapters.")
            }
            (options.datasetBytes, datasetLine) = try planDataset(data, model: path, config: config, options: options, args: args)
        }
        if args.flag("measure") {
            return try measure(path: path, config: config, options: options, steps: try positive(args, "steps", default: 3), model: model,
                               json: args.flag("json"))
        }
        let plans: [MemoryPlan]
        do {
            plans = args.flag("compare") ? try MemoryPlan.compareSet(config: config, options: options)
                : [try MemoryPlan(config: config, options: options)]
        } catch let error as MemoryPlanError {
            let text = "\(error)"
            throw CLIError.failed("qlora memory: \(text)\(text.hasSuffix(".") ? "" : ".") Run `qlora memory --help`.")
        } catch let error as LoRAError {
            throw CLIError.failed("qlora memory: \(error) (--rank, --targets, --dropout, --modules-to-save).")
        }
        if let svgPath = args.string("svg") {
            let set = args.flag("compare") ? plans : try MemoryPlan.compareSet(config: config, options: options)
            let title = "\(model): memory per category, batch \(options.batch) × seq \(options.seqLen)"
                + (options.gradientCheckpointing ? ", gradient checkpointing" : "")
            do {
                try AtomicFile.write(Data(MemoryReport.svg(set, title: title).utf8), to: URL(fileURLWithPath: svgPath))
            } catch {
                throw CLIError.failed("qlora memory: --svg: \(error)")
            }
        }
        let ranks = try positive(args, "ranks", default: 1)
        if args.flag("json") {
            print(MemoryReport.json(plans, model: model, ranks: ranks), terminator: "")
            return 0
        }
        print(render(plans, model: model, config: config, ascii: args.flag("ascii")))
        if ranks > 1, plans.count == 1, options.training, options.generationAdapters == nil {
            print("\n" + MemoryReport.dataParallel(plans[0], ranks: ranks))
        }
        if let datasetLine { print("\n" + datasetLine) }
        if let svgPath = args.string("svg") { print("\nwrote \(svgPath)") }
        return 0
    }

    /// The bytes `train` would hold for `data` (its batcher and the token file's index) and a line
    /// describing the token file.
    static func planDataset(_ data: String, model: String, config: LlamaConfig, options: MemoryPlan.Options,
                            args: Arguments) throws -> (Int, String) {
        try PathChecks.readableFile(data, command: name, option: "data")
        let directory = URL(fileURLWithPath: model)
        guard GGUFModelLoader.isGGUF(directory) || FileManager.default.fileExists(atPath: directory.appendingPathComponent("tokenizer.json").path) else {
            throw CLIError.failed("qlora memory: --data needs the model's tokenizer; \(model) has no tokenizer.json (give the model directory, not only its config.json).")
        }
        let dataset = try DatasetTokenizer(modelDirectory: directory, vocabSize: config.vocabSize, purpose: "planning the dataset")
        let cache = TokenFileCache(directory: args.string("token-cache").map { URL(fileURLWithPath: $0) } ?? TokenFileCache.defaultDirectory)
        let entry = try cache.tokenFile(for: URL(fileURLWithPath: data), dataset: dataset)
        let packing = args.flag("packing", default: true)
        let batcher = try Batcher(source: entry.file, options: BatcherOptions(batchSize: options.batch, maxSequenceLength: options.seqLen,
                                                                             mode: packing ? .packing : .padding, shuffleSeed: 1),
                                  padTokenID: dataset.padTokenID, separatorTokenID: packing ? dataset.separatorTokenID : nil)
        let line = "dataset: \(entry.file.exampleCount) records, \(entry.file.tokenCount) tokens -> \(batcher.rowCount) rows; token file "
            + "\(MemoryReport.humanBytes(entry.file.fileBytes)) on disk, mapped (\(entry.reused ? "reused" : "written now"): \(entry.file.url.path))"
        return (batcher.heldBytes + entry.file.indexBytes, line)
    }

    /// The text output: one plan's table, or the compare table and chart.
    static func render(_ plans: [MemoryPlan], model: String, config: LlamaConfig, ascii: Bool) -> String {
        let header = "\(model): \(config.numHiddenLayers) layers, hidden \(config.hiddenSize), vocab \(config.vocabSize), "
            + "\(MemoryReport.withCommas(config.totalParameterCount)) parameters"
        if plans.count == 1 {
            return header + "\n" + MemoryReport.describe(plans[0]) + "\n\n" + MemoryReport.table(plans[0])
        }
        var settings = plans.last.map(MemoryReport.describe) ?? ""
        if let range = settings.range(of: "compute ") { settings = String(settings[range.lowerBound...]) }
        return header + "\n" + settings + "\n\n" + MemoryReport.compareTable(plans) + "\n\n" + MemoryReport.stackedBars(plans, ascii: ascii)
    }

    /// `--measure --json`: planned and measured bytes per category, exact, and the RSS figures.
    static func measurementJSON(_ result: MemoryMeasurement.Result, model: String, weights: String) -> String {
        func categories(_ breakdown: MemoryBreakdown) -> [String: Int] {
            Dictionary(uniqueKeysWithValues: MemoryCategory.allCases.map { ($0.rawValue, breakdown[$0]) })
        }
        let object: [String: Any] = [
            "model": model, "weights": weights, "steps": result.steps, "seconds_per_step": result.secondsPerStep,
            "planned": categories(result.planned), "measured": categories(result.measured),
            "planned_total_bytes": result.planned.total, "measured_total_bytes": result.measured.total,
            "peak_training_rss_bytes": result.peakTrainingRSS, "peak_loading_rss_bytes": result.peakLoadingRSS,
            "baseline_rss_bytes": result.baselineRSS, "relative_error": result.relativeError,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// `--measure`: real buffers and steps, then plan vs measured.
    static func measure(path: String, config: LlamaConfig, options: MemoryPlan.Options, steps: Int, model: String, json: Bool = false) throws -> Int32 {
        let generation = options.generationAdapters != nil
        guard options.training || generation else { throw CLIError.failed("qlora memory: --measure runs training steps; drop --optimizer none") }
        let directory = URL(fileURLWithPath: path)
        let hasWeights = GGUFModelLoader.isGGUF(directory)
            || (try? FileManager.default.contentsOfDirectory(atPath: directory.path))?.contains { $0.hasSuffix(".safetensors") || $0.hasSuffix(".index.json") } ?? false
        let plan = try MemoryPlan(config: config, options: options)
        if !json {
            print("\(model): \(MemoryReport.describe(plan))")
            print("measuring with \(hasWeights ? "the checkpoint's weights" : "random weights of this shape (config.json only)"), "
                  + (generation ? "one generation of \(options.batch) sequence\(options.batch == 1 ? "" : "s")..." : "\(steps) training steps..."))
        }
        let weights = hasWeights ? directory : nil
        let result = generation ? try MemoryMeasurement.runGeneration(config: config, directory: weights, options: options)
            : try MemoryMeasurement.run(config: config, directory: weights, options: options, steps: steps)
        if json {
            print(measurementJSON(result, model: model, weights: hasWeights ? "checkpoint" : "random"))
            return 0
        }
        print("")
        print(MemoryReport.planVersusMeasured(planned: result.planned, measured: result.measured, peakResidentBytes: result.peakTrainingRSS))
        print("process baseline before loading (runtime, libraries): \(MemoryReport.humanBytes(result.baselineRSS)); planned runtime overhead \(MemoryReport.humanBytes(result.planned[.runtimeOverhead]))")
        print("peak RSS while loading: \(MemoryReport.humanBytes(result.peakLoadingRSS)); \(String(format: "%.2f", result.secondsPerStep)) s "
              + (generation ? "for the generation" : "per step"))
        let error = result.relativeError
        print(String(format: "peak %@ RSS is %.1f %% %@ the planned total (target: within 5 %%)", generation ? "decoding" : "training",
                     abs(error) * 100, error >= 0 ? "above" : "below"))
        return 0
    }

    static func renderProbe(_ probe: RuntimeOverhead.Probe) -> String {
        """
        runtime overhead of this qlora process (resident memory, VmRSS):
          at start                 \(MemoryReport.humanBytes(probe.atStart)) (\(MemoryReport.withCommas(probe.atStart)) bytes)
          after loading OpenBLAS   \(MemoryReport.humanBytes(probe.afterLoadingBLAS)) (+\(MemoryReport.humanBytes(probe.loadingBLAS)))
          after one GEMM           \(MemoryReport.humanBytes(probe.afterGEMM)) (\(MemoryReport.withCommas(probe.afterGEMM)) bytes; +\(MemoryReport.humanBytes(probe.blasBuffers)) OpenBLAS buffers, \(probe.blasThreads) threads)
        the memory plan uses \(MemoryReport.humanBytes(RuntimeOverhead.measuredBytes)) (\(MemoryReport.withCommas(RuntimeOverhead.measuredBytes)) bytes)
        """
    }

    static func loadConfig(_ path: String) throws -> LlamaConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError.failed("qlora memory: \(path) does not exist. Give a model directory with a config.json, or a config.json file.")
        }
        return try LlamaConfig.load(directory: URL(fileURLWithPath: path, isDirectory: isDirectory.boolValue))
    }

    /// "Llama-2-7b" from ".../Llama-2-7b" or ".../llama-2-7b.json" (config.json: its directory's name).
    static func modelName(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        if url.lastPathComponent == "config.json" { return url.deletingLastPathComponent().lastPathComponent }
        return url.pathExtension == "json" ? url.deletingPathExtension().lastPathComponent : url.lastPathComponent
    }

    /// The plan options from the command line; defaults for 4-bit settings come from the checkpoint's
    /// quantization_config when it has one. (A `--measure` run builds its executor from the same options.)
    public static func planOptions(_ args: Arguments, config: LlamaConfig) throws -> MemoryPlan.Options {
        let checkpointQuant = config.quantizationConfig?["bnb_4bit_quant_type"]?.stringValue
        let checkpointDoubleQuant = config.quantizationConfig?["bnb_4bit_use_double_quant"]?.boolValue
        let model = args.positionals.first ?? ""
        let gguf = GGUFModelLoader.isGGUF(URL(fileURLWithPath: model))
        let quant = try args.choice("quant", ["nf4", "fp4", "none", "keep"], default: gguf ? "keep" : checkpointQuant ?? "nf4")
        let baseDType = try args.choice("base-dtype", ["bf16", "fp32"], default: "bf16")
        if args.string("base-dtype") != nil && quant != "none" {
            throw CLIError.failed("qlora memory: --base-dtype applies to a dense base only; add --quant none (or drop --base-dtype for a 4-bit base).")
        }
        var options = MemoryPlan.Options()
        if quant == "keep" {
            // A GGUF base as its blocks: the bytes come from the file's tensor infos.
            options.baseFormat = .stored
        } else if quant == "none" {
            options.baseFormat = baseDType == "fp32" ? .dense32 : .denseBF16
        } else {
            let blocksize = try args.int("blocksize", default: 64)
            options.baseFormat = .quantized(QuantizationOptions(quantType: quant == "fp4" ? .fp4 : .nf4, blocksize: blocksize,
                                                                doubleQuant: args.flag("double-quant", default: checkpointDoubleQuant ?? true)))
        }
        // A GGUF base keeps its blocks (`keep`), and its embedding table and output also under nf4 / fp4:
        // the plan counts those bytes from the file's tensor infos.
        if gguf { options.storedWeights = try GGUFModelLoader.storedBytes(try GGUFFile(path: model), config: config) }
        options.computePrecision = ComputePrecision(rawValue: try args.choice("compute-dtype", ["bf16", "fp16", "fp32"], default: "bf16"))!
        let rank = try args.int("rank", default: 16)
        guard rank > 0 else { throw CLIError.badValue(command: name, option: "rank", value: "\(rank)", expected: "a positive integer") }
        let targets = args.list("targets") ?? ["all-linear"]
        let dropout = try args.double("dropout", default: 0)
        options.lora = LoRAConfig(r: rank, loraAlpha: try args.double("alpha", default: Double(2 * rank)), loraDropout: dropout,
                                  targetModules: targets, modulesToSave: args.list("modules-to-save") ?? [])
        if args.flag("full") {
            guard args.string("quant") == nil || quant == "none" else {
                throw CLIError.failed("qlora memory: --full trains every weight, which a 4-bit base cannot hold; drop --quant (or use --quant none).")
            }
            // As `train --full`: fp32 unless --compute-dtype bf16 (or the older --base-dtype bf16) asks for
            // bf16 mixed precision.
            let compute = args.string("compute-dtype") ?? (args.string("base-dtype") == "bf16" ? "bf16" : "fp32")
            guard let precision = ComputePrecision(rawValue: compute).flatMap(FullFineTuning.Precision.init(compute:)) else {
                throw CLIError.failed("qlora memory: --full trains in fp32 or bf16 mixed precision; use --compute-dtype fp32 or bf16.")
            }
            options.baseFormat = precision.planFormat
            options.computePrecision = precision.compute
            options.lora = nil
        }
        options.batch = try positive(args, "batch", default: 1)
        options.seqLen = try positive(args, "seq-len", default: 512)
        options.gradientCheckpointing = args.flag("gradient-checkpointing")
        options.gradientAccumulation = try positive(args, "grad-accum", default: 1)
        options.optimizer = MemoryPlan.Optimizer(rawValue: try args.choice("optimizer", ["adamw", "sgd"], default: "adamw"))!
        options.tileRows = try args.int("tile-rows") ?? 0
        options.logitsChunkRows = try positive(args, "logits-chunk", default: 64)
        if let adapters = try args.int("adapters") {
            guard adapters >= 0 else { throw CLIError.badValue(command: name, option: "adapters", value: "\(adapters)", expected: "0 or more adapters") }
            for option in ["full", "compare", "gradient-checkpointing"] where args.flag(option) {
                throw CLIError.failed("qlora memory: --adapters plans generation; --\(option) is a training setting. Drop one of them.")
            }
            options.generationAdapters = adapters
            options.training = false
        }
        return options
    }

    static func positive(_ args: Arguments, _ option: String, default value: Int) throws -> Int {
        let result = try args.int(option, default: value)
        guard result > 0 else { throw CLIError.badValue(command: name, option: option, value: "\(result)", expected: "a positive integer") }
        return result
    }
}
