import Foundation
import QLoRA

/// `qlora eval`: loss and perplexity of a model, or of the model with each of several adapters, on a
/// held-out JSONL file, forward only.
public enum EvalCommand: Command {
    public static let name = "eval"
    public static let summary = "Loss and perplexity of a model (and adapters) on a JSONL file, forward only"
    public static let help = """
    Usage: qlora eval --model DIR --data FILE.jsonl [--adapter [NAME=]DIR[,...]] [options]

    Reads the records of FILE.jsonl in the formats `train` takes ({"text": ...}, {"prompt": ...,
    "completion": ...}, {"messages": [...]}), tokenizes and masks them exactly as `train` does, and
    runs the model forward only (no gradients, no saved activations): the mean loss per trained token,
    its perplexity, and the counts of trained tokens and records. Records are not packed together unless
    --packing is given; a record longer than --seq-len is cut there and only its first --seq-len tokens
    count (the command says how many were cut). With several adapters the base is loaded once and each
    adapter is evaluated in turn (only the --use one if given; with --weights, their combination as one
    more row); --base adds a row for the base without adapter.

    Options:
      --model DIR              Hugging Face model directory (config.json, *.safetensors, tokenizer.json),
                               or a .gguf file (tokenizer and chat template from its metadata)
      --data FILE.jsonl        the records to evaluate
    \(AdapterSelection.helpText)
      --base                   also evaluate the base model alone (the default when no adapter is given)
      --seq-len T              tokens per sequence (default 2048, at most max_position_embeddings)
      --batch B                sequences per forward pass (default 1)
      --packing                pack records into full rows, separated by EOS (as train does by default)
      --token-cache DIR        where the tokenized records are kept and reused, as for train
      --json                   print JSON: {"loss", "perplexity", "tokens", "records", ...} for one
                               result, an array of them (with "adapter") for several
      Base model:
        --quant nf4|fp4|none     quantize a dense checkpoint on load (default nf4) or keep it dense
        --base-dtype bf16|fp32   storage of a dense base with --quant none (default bf16)
        --compute-dtype bf16|fp16|fp32   precision of the frozen-weight GEMMs (default bf16)
        --blocksize N            4-bit block size (default 64)
        --[no-]double-quant      quantize the absmax values too (default on)

    Examples:
      qlora eval --model ./SmolLM2-135M-Instruct --data valid.jsonl
      qlora eval --model ./SmolLM2-135M-Instruct --data valid.jsonl --adapter run1=./out1,run2=./out2 --base
      qlora eval --model ./SmolLM2-135M-Instruct --quant none --base-dtype fp32 --data valid.jsonl --json
    """

    struct Options {
        var model: URL
        var data: URL
        var adapters: AdapterSelection
        var includeBase = false
        var evaluation = Evaluation.Options(seqLen: 2048)
        var json = false
        var format: BaseWeightFormat = .quantized(QuantizationOptions())
        var precision: ComputePrecision = .bf16
        var tokenCache: URL?
    }

    /// One row of the result: which adapter (nil = the base alone) and its evaluation.
    struct Row {
        var adapter: String?
        var result: Evaluation.Result
    }

    static func parse(_ arguments: [String]) throws -> Options {
        let args = try Arguments(arguments, command: name,
                                 valueOptions: AdapterSelection.valueOptions.union(["model", "data", "seq-len", "batch", "quant", "base-dtype",
                                                                                     "compute-dtype", "blocksize", "token-cache"]),
                                 flagOptions: ["double-quant", "packing", "json", "base"])
        guard let model = args.string("model"), let data = args.string("data") else {
            throw CLIError.failed("qlora eval: --model DIR and --data FILE.jsonl are required. Run `qlora eval --help`.")
        }
        var options = Options(model: URL(fileURLWithPath: model), data: URL(fileURLWithPath: data), adapters: try AdapterSelection(args))
        try PathChecks.modelDirectory(model, command: name)
        try PathChecks.readableFile(data, command: name, option: "data")
        options.includeBase = options.adapters.named.isEmpty || args.flag("base")
        let base = try TrainingArguments(args)
        options.format = base.format
        options.precision = base.precision
        options.evaluation = Evaluation.Options(batchSize: base.batch, seqLen: try args.int("seq-len", default: 2048),
                                                packing: args.flag("packing"))
        guard options.evaluation.seqLen > 1 else {
            throw CLIError.badValue(command: name, option: "seq-len", value: "\(options.evaluation.seqLen)", expected: "an integer >= 2")
        }
        options.json = args.flag("json")
        options.tokenCache = args.string("token-cache").map { URL(fileURLWithPath: $0) }
        return options
    }

    public static func run(_ arguments: [String]) throws -> Int32 {
        let options = try parse(arguments)
        let blas = try OpenBLAS.ensureLoaded()
        let status = { (line: String) in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        status("qlora eval — \(blas.summary)")
        let rows = try evaluate(options, status: status)
        print(options.json ? json(rows) : table(rows))
        return 0
    }

    /// Loads the model once, then evaluates the base and/or each adapter.
    static func evaluate(_ options: Options, status: (String) -> Void) throws -> [Row] {
        let model = try LlamaLoader.load(directory: options.model, format: options.format, precision: options.precision)
        let config = model.config
        var evaluation = options.evaluation
        if evaluation.seqLen > config.maxPositionEmbeddings {
            status("--seq-len \(evaluation.seqLen) is beyond the model's max_position_embeddings; using \(config.maxPositionEmbeddings)")
            evaluation.seqLen = config.maxPositionEmbeddings
        }
        let dataset = try DatasetTokenizer(modelDirectory: options.model, vocabSize: config.vocabSize, purpose: "evaluation")
        let entry = try TokenFileCache(directory: options.tokenCache ?? TokenFileCache.defaultDirectory).tokenFile(for: options.data, dataset: dataset)
        let records = entry.file
        status("\(options.data.lastPathComponent): \(records.exampleCount) records, \(records.tokenCount) tokens, \(entry.reused ? "mapped from" : "tokenized into") \(records.url.path)")
        guard Evaluation.hasScoredToken(records) else {
            throw CLIError.failed("qlora eval: no record of \(options.data.path) has a trained token (every label is masked).")
        }
        var rows: [Row] = []
        var runs: [(String?, () throws -> LoRAAdapters?)] = options.includeBase ? [(nil, { nil })] : []
        let selection = options.adapters
        for entry in selection.named where selection.use == nil || selection.use == entry.name {
            runs.append((entry.name, { try AdapterSelection.load(entry.directory, model: options.model, config: config, command: name) }))
        }
        if !selection.weights.isEmpty {
            runs.append(("combined", { try selection.combined(model: options.model, config: config, command: name) }))
        }
        for (label, load) in runs {
            let lora = try load()
            let title = label ?? "base"
            let result = try Evaluation.run(model: model, lora: lora, source: records, options: evaluation,
                                            padTokenID: dataset.padTokenID, separatorTokenID: dataset.separatorTokenID) { done, total in
                if isatty(STDERR_FILENO) != 0 {
                    FileHandle.standardError.write(Data("\r\(title): batch \(done)/\(total)\(done == total ? "\n" : "")".utf8))
                }
            }
            rows.append(Row(adapter: label, result: result))
        }
        if let cut = rows.first?.result.truncatedRecords, cut > 0 {
            status("\(cut) of \(records.exampleCount) records are longer than --seq-len \(evaluation.seqLen): only their first \(evaluation.seqLen) tokens count")
        }
        return rows
    }

    static func table(_ rows: [Row]) -> String {
        var lines = ["model            loss  perplexity      tokens  records  tokens/s"]
        for row in rows {
            let r = row.result
            let name = (row.adapter ?? "base").padding(toLength: 12, withPad: " ", startingAt: 0)
            lines.append(String(format: "%@ %9.4f %11.3f %11d %8d %9.0f", name as NSString, r.loss, r.perplexity, r.tokens, r.records,
                                Double(r.tokens) / max(r.seconds, 1e-9)))
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ rows: [Row]) -> String {
        let objects: [[String: Any]] = rows.map { row in
            var object: [String: Any] = ["loss": row.result.loss, "perplexity": row.result.perplexity, "tokens": row.result.tokens,
                                         "records": row.result.records, "truncated_records": row.result.truncatedRecords,
                                         "seconds": row.result.seconds]
            object["adapter"] = row.adapter ?? NSNull()
            return object
        }
        let value: Any = objects.count == 1 ? objects[0] : objects
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
