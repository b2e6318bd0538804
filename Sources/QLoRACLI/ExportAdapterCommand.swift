import Foundation
import GGUF
import QLoRA

/// `qlora export-adapter`: a PEFT LoRA adapter written as a llama.cpp LoRA GGUF.
public enum ExportAdapterCommand: Command {
    public static let name = "export-adapter"
    public static let summary = "Write a PEFT LoRA adapter as a GGUF adapter for llama.cpp (--lora)"
    public static let help = """
    Usage: qlora export-adapter --model MODEL --adapter DIR --output FILE.gguf

    Writes the adapter the way llama.cpp's convert_lora_to_gguf.py does, so that
    `llama-cli -m base.gguf --lora FILE.gguf` (and llama-completion, llama-perplexity, llama-server)
    apply it: general.type = adapter, adapter.type = lora, adapter.lora.alpha (written as
    scaling x r, so llama.cpp's alpha / r is the adapter's scaling, rsLoRA included), and for every
    adapted linear blk.N.<proj>.weight.lora_a (r x in) and .lora_b (out x r) in F32, with the rows
    of lora_b for q_proj and k_proj permuted as llama.cpp's converter permutes the base (llama
    architecture). Adapters trained on a GGUF base and on the Hugging Face original are the same
    adapter: either can be exported.

    Options:
      --model MODEL     the base: a .gguf file or a Hugging Face model directory (its architecture
                        and head counts decide the permutation)
      --adapter DIR     PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
      --output FILE     the .gguf to write (written to a temporary file, then renamed)

    Example:
      qlora export-adapter --model SmolLM2-135M-Instruct.Q4_1.gguf --adapter my-adapter --output my-adapter.gguf
      llama-completion -m SmolLM2-135M-Instruct.Q4_1.gguf --lora my-adapter.gguf -p "..."
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name, valueOptions: ["model", "adapter", "output"], flagOptions: [])
        guard let model = args.string("model"), let adapter = args.string("adapter"), let output = args.string("output") else {
            throw CLIError.failed("qlora export-adapter: --model, --adapter and --output are required. Run `qlora export-adapter --help`.")
        }
        try PathChecks.modelDirectory(model, command: name)
        try PathChecks.readableFile((adapter as NSString).appendingPathComponent("adapter_config.json"), command: name, option: "adapter")
        let modelURL = URL(fileURLWithPath: model)
        let config = try LlamaConfig.load(directory: modelURL)
        let architecture = GGUFModelLoader.isGGUF(modelURL) ? config.modelType : (["qwen2", "qwen3", "phi3"].contains(config.modelType) ? config.modelType : "llama")
        let adapters = try PEFTAdapterIO.load(directory: URL(fileURLWithPath: adapter), modelConfig: config)
        let writer = try GGUFAdapterExport.writer(adapters, architecture: architecture)
        try writer.write(to: output)
        let count = writer.tensors.count / 2
        FileHandle.standardError.write(Data("wrote \(output): \(count) adapted linears, r=\(adapters.config.r), scaling \(adapters.config.scaling) (adapter.lora.alpha \(adapters.config.scaling * Float(adapters.config.r))), architecture \(architecture)\n".utf8))
        return 0
    }
}
