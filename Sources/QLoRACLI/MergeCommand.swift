import Foundation
import GGUF
import QLoRA
import SafeTensors

/// `qlora merge`: folds a PEFT LoRA adapter into its base model and writes a plain Hugging Face model.
public enum MergeCommand: Command {
    public static let name = "merge"
    public static let summary = "Fold a LoRA adapter into its base model and write a standalone Hugging Face model"
    public static let help = """
    Usage: qlora merge --model DIR --adapter DIR --output DIR [--dtype bf16|fp32]
           qlora merge --model BASE.gguf --adapter DIR --output OUT.gguf [--dtype f16|bf16|q8_0|q4_0]

    Computes W' = W + (B A) * scaling for every adapted linear, in fp32 and in PEFT's rounding order
    (bit-exact with PEFT's merge_and_unload), and writes a dense Hugging Face model directory that
    transformers and `qlora generate --quant none` load without the adapter: model.safetensors,
    config.json (without quantization_config), and the tokenizer files and generation_config.json
    copied from --model.

    A bitsandbytes 4-bit base is dequantized to fp32 first (as PEFT does on a 4-bit model): the merged
    weights carry the 4-bit rounding of the base, and the output is dense, so larger than the input.

    With a .gguf base and an --output ending in .gguf (or --format gguf), the merged model is written as
    a GGUF file llama.cpp runs: the base file's metadata (tokenizer, chat template) and every tensor in
    --dtype (default f16; q8_0 and q4_0 keep the embedding table and output in Q8_0, norms stay F32),
    q/k rows permuted back into llama.cpp's layout. A GGUF base can also be merged into a Hugging Face
    directory (the default when --output does not end in .gguf).

    Options:
      --model DIR              the base model the adapter was trained on (dense, bitsandbytes 4-bit, or .gguf)
      --adapter DIR            PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
      --output DIR             where the merged model goes (must not be --model or --adapter)
      --dtype bf16|fp32        dtype of the written weights (default: bf16 when the base config says
                               bfloat16 or float16, else fp32); for GGUF output f16|bf16|q8_0|q4_0 (default f16)
      --format safetensors|gguf   what to write (default: gguf when --output ends in .gguf)
    """

    struct Options {
        var model: URL
        var adapter: URL
        var output: URL
        var dtype: DType?
        /// Set when the output is a GGUF file: the type of its weights.
        var ggufType: GGMLType?
    }

    static func parse(_ arguments: [String]) throws -> Options {
        let args = try Arguments(arguments, command: name, valueOptions: ["model", "adapter", "output", "dtype", "format"], flagOptions: [])
        guard let model = args.string("model"), let adapter = args.string("adapter"), let output = args.string("output") else {
            throw CLIError.failed("qlora merge: --model, --adapter and --output are required. Run `qlora merge --help`.")
        }
        let format = try args.choice("format", ["safetensors", "gguf"], default: output.lowercased().hasSuffix(".gguf") ? "gguf" : "safetensors")
        var dtype: DType?, ggufType: GGMLType?
        if format == "gguf" {
            guard model.lowercased().hasSuffix(".gguf") else {
                throw CLIError.failed("qlora merge: --format gguf takes its metadata (tokenizer, chat template) from a .gguf base; give --model as the .gguf the adapter was trained on, or write a Hugging Face directory.")
            }
            let names: [String: GGMLType] = ["f16": .f16, "bf16": .bf16, "q8_0": .q8_0, "q4_0": .q4_0]
            ggufType = names[try args.choice("dtype", ["f16", "bf16", "q8_0", "q4_0"], default: "f16")]
        } else if args.string("dtype") != nil {
            dtype = try args.choice("dtype", ["bf16", "fp32"], default: "fp32") == "bf16" ? .BF16 : .F32
        }
        return Options(model: URL(fileURLWithPath: model), adapter: URL(fileURLWithPath: adapter), output: URL(fileURLWithPath: output),
                       dtype: dtype, ggufType: ggufType)
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
        let merged = try LoRAMerge.merge(model: model, adapters: adapters)
        let adapted = adapters.adapters.joined().compactMap { $0 }.count
        if let type = options.ggufType {
            try GGUFModelWriter.write(merged, base: try GGUFFile(path: options.model.path), type: type, to: options.output.path)
            status("merged \(adapted) adapted linears (r=\(adapters.config.r), scaling \(adapters.config.scaling)) into \(options.output.path) (GGUF, \(type))")
            return
        }
        let dtype = options.dtype ?? defaultDType(sourceConfig)
        try LlamaWriter.save(merged, to: options.output, dtype: dtype, sourceConfig: sourceConfig)
        let copied: [String]
        if GGUFModelLoader.isGGUF(options.model) {
            // A GGUF base carries its tokenizer as metadata: rebuilt as tokenizer.json + tokenizer_config.json.
            let files = try Tokenizer.huggingFaceFiles(gguf: try GGUFFile(path: options.model.path))
            try AtomicFile.write(files.tokenizerJSON, to: options.output.appendingPathComponent("tokenizer.json"))
            try AtomicFile.write(files.tokenizerConfig, to: options.output.appendingPathComponent("tokenizer_config.json"))
            copied = ["tokenizer.json", "tokenizer_config.json"]
        } else {
            copied = try LlamaWriter.copyCompanionFiles(from: options.model, to: options.output)
        }
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
