import Foundation
import QLoRA
import SafeTensors

/// `qlora merge`: folds a PEFT LoRA adapter into its base model and writes a plain Hugging Face model.
public enum MergeCommand: Command {
    public static let name = "merge"
    public static let summary = "Fold a LoRA adapter into its base model and write a standalone Hugging Face model"
    public static let help = """
    Usage: qlora merge --model DIR --adapter DIR --output DIR [--dtype bf16|fp32]

    Computes W' = W + (B A) * scaling for every adapted linear, in fp32 and in PEFT's rounding order
    (bit-exact with PEFT's merge_and_unload), and writes a dense Hugging Face model directory that
    transformers and `qlora generate --quant none` load without the adapter: model.safetensors,
    config.json (without quantization_config), and the tokenizer files and generation_config.json
    copied from --model.

    A bitsandbytes 4-bit base is dequantized to fp32 first (as PEFT does on a 4-bit model): the merged
    weights carry the 4-bit rounding of the base, and the output is dense, so larger than the input.

    Options:
      --model DIR              the base model the adapter was trained on (dense or bitsandbytes 4-bit)
      --adapter DIR            PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
      --output DIR             where the merged model goes (must not be --model or --adapter)
      --dtype bf16|fp32        dtype of the written weights (default: bf16 when the base config says
                               bfloat16 or float16, else fp32)
    """

    struct Options {
        var model: URL
        var adapter: URL
        var output: URL
        var dtype: DType?
    }

    static func parse(_ arguments: [String]) throws -> Options {
        let args = try Arguments(arguments, command: name, valueOptions: ["model", "adapter", "output", "dtype"], flagOptions: [])
        guard let model = args.string("model"), let adapter = args.string("adapter"), let output = args.string("output") else {
            throw CLIError.failed("qlora merge: --model, --adapter and --output are required. Run `qlora merge --help`.")
        }
        var dtype: DType?
        if args.string("dtype") != nil {
            dtype = try args.choice("dtype", ["bf16", "fp32"], default: "fp32") == "bf16" ? .BF16 : .F32
        }
        return Options(model: URL(fileURLWithPath: model), adapter: URL(fileURLWithPath: adapter), output: URL(fileURLWithPath: output),
                       dtype: dtype)
    }

    public static func run(_ arguments: [String]) throws -> Int32 {
        let options = try parse(arguments)
        try merge(options) { print($0) }
        return 0
    }

    static func merge(_ options: Options, status: (String) -> Void) throws {
        let output = options.output.standardizedFileURL.resolvingSymlinksInPath()
        for (label, input) in [("--model", options.model), ("--adapter", options.adapter)]
        where input.standardizedFileURL.resolvingSymlinksInPath().path == output.path {
            throw CLIError.failed("qlora merge: --output \(options.output.path) is the \(label) directory; the merge never overwrites its input. Choose a new directory.")
        }
        let sourceConfig = try? Data(contentsOf: options.model.appendingPathComponent("config.json"))
        let model = try LlamaLoader.load(directory: options.model, format: .dense32, precision: .fp32)
        let config = model.config
        let adapters: LoRAAdapters
        do {
            adapters = try PEFTAdapterIO.load(directory: options.adapter, modelConfig: config)
        } catch let error as LoRAError {
            throw CLIError.failed("qlora merge: the adapter \(options.adapter.path) does not fit the model \(options.model.path) (\(config.numHiddenLayers) layers, hidden \(config.hiddenSize)): \(error)")
        }
        if model.layers.contains(where: { $0.linears.contains { $0.weight.isQuantized } }) {
            status("the base is 4-bit: dequantizing it to fp32 before merging (the output is a dense model)")
        }
        let dtype = options.dtype ?? defaultDType(sourceConfig)
        let merged = try LoRAMerge.merge(model: model, adapters: adapters)
        try LlamaWriter.save(merged, to: options.output, dtype: dtype, sourceConfig: sourceConfig)
        let copied = try LlamaWriter.copyCompanionFiles(from: options.model, to: options.output)
        let adapted = adapters.adapters.joined().compactMap { $0 }.count
        status("merged \(adapted) adapted linears (r=\(adapters.config.r), scaling \(adapters.config.scaling)) into \(options.output.path)")
        status("wrote model.safetensors (\(dtype == .BF16 ? "bf16" : "fp32")), config.json\(copied.isEmpty ? "" : ", " + copied.joined(separator: ", "))")
        if !copied.contains("tokenizer.json") {
            status("note: \(options.model.path) has no tokenizer.json; copy the tokenizer files before using the merged model")
        }
    }

    /// bf16 when the base was saved in a 16-bit dtype, else fp32.
    static func defaultDType(_ config: Data?) -> DType {
        guard let config, let json = (try? JSONSerialization.jsonObject(with: config)) as? [String: Any] else { return .F32 }
        let name = (json["dtype"] ?? json["torch_dtype"]) as? String
        return name == "bfloat16" || name == "float16" ? .BF16 : .F32
    }
}
