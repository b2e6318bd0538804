import Foundation
import QLoRA
import SafeTensors

/// `qlora quantize <hf-dir> --output <dir>`: a Hugging Face checkpoint to bitsandbytes 4-bit.
public enum QuantizeCommand: Command {
    public static let name = "quantize"
    public static let summary = "Quantize a Hugging Face checkpoint to 4-bit NF4/FP4 (bitsandbytes format)"
    public static let help = """
    Usage: qlora quantize <hf-dir | model.gguf> --output <dir> [options]

    Quantizes the decoder Linear weights (every 2-D `model.layers.*_proj.weight`: q/k/v/o/gate/up/down_proj)
    to 4 bits exactly as bitsandbytes 0.50 does on CPU, and writes a checkpoint that transformers +
    bitsandbytes load directly: model.safetensors (keys <m>.weight, .absmax, .quant_map, .nested_absmax,
    .nested_quant_map, .quant_state.bitsandbytes__<type>), config.json with quantization_config, and the
    tokenizer / generation files. Embeddings, lm_head and norms are copied unchanged.

    A .gguf file (llama.cpp's format) is read instead of a directory: every tensor is dequantized from
    its blocks, the linears quantized as above, the rest written in fp32, and tokenizer.json and
    tokenizer_config.json (with the chat template) rebuilt from the file's metadata.

    Options:
      --output <dir>             output directory (created; must differ from <hf-dir>)
      --quant nf4|fp4            4-bit data type (default nf4; the same option as train, memory, eval;
                                 --quant-type is the old spelling, still accepted)
      --blocksize N              elements per absmax block, a power of two 32..4096 (default 64;
                                 transformers always uses 64)
      --double-quant / --no-double-quant
                                 8-bit quantize the absmax values (default on: 4.127 bits/param at block 64)
      --compute-dtype bf16|fp16|fp32
                                 compute dtype recorded in quantization_config (default bf16)
      --skip-modules a,b         keep modules whose name contains any entry (default lm_head)
      --threads N                quantization threads (default 2)
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name,
                                 valueOptions: ["output", "quant", "quant-type", "blocksize", "compute-dtype", "skip-modules", "threads"],
                                 flagOptions: ["double-quant"])
        let input = try args.requirePositionals(["hf-dir"])[0]
        guard let output = args.string("output") else { throw CLIError.missingValue(command: name, option: "output") }
        var options = QuantizeOptions()
        if args.string("quant-type") != nil {
            guard args.string("quant") == nil else { throw CLIError.failed("qlora quantize: give --quant, not both --quant and --quant-type.") }
            FileHandle.standardError.write(Data("qlora quantize: --quant-type is deprecated; use --quant (the spelling of every command).\n".utf8))
        }
        let quantOption = args.string("quant-type") != nil ? "quant-type" : "quant"
        options.quantType = QuantType(rawValue: try args.choice(quantOption, ["nf4", "fp4"], default: "nf4"))!
        options.blocksize = try args.int("blocksize", default: 64)
        options.doubleQuant = args.flag("double-quant", default: true)
        options.computeDType = ["bf16": DType.BF16, "fp16": .F16, "fp32": .F32][try args.choice("compute-dtype", ["bf16", "fp16", "fp32"], default: "bf16")]!
        options.skipModules = args.list("skip-modules") ?? ["lm_head"]
        options.threads = max(1, try args.int("threads", default: 2))
        do {
            try BlockwiseQuantizer.validate(blocksize: options.blocksize)
        } catch {
            throw CLIError.badValue(command: name, option: "blocksize", value: String(options.blocksize), expected: "a power of two from 32 to 4096")
        }
        let renderer = QuantizeProgressRenderer(isTerminal: isatty(STDERR_FILENO) == 1)
        let summary = input.lowercased().hasSuffix(".gguf")
            ? try GGUFCheckpointQuantizer.quantize(input: input, output: output, options: options, progress: renderer.render)
            : try CheckpointQuantizer.quantize(input: input, output: output, options: options, progress: renderer.render)
        print(QuantizeProgressRenderer.summaryText(summary))
        return 0
    }
}

/// Progress on stderr: a redrawn bar on a terminal, one line per tensor otherwise.
final class QuantizeProgressRenderer {
    let isTerminal: Bool
    init(isTerminal: Bool) { self.isTerminal = isTerminal }

    func render(_ event: QuantizeEvent) {
        switch event {
        case .started(let tensors, let toQuantize, let parameters):
            emit("quantizing \(toQuantize) of \(tensors) tensors (\(Self.count(parameters)) parameters)\n")
        case .quantized(let name, let index, let total, _):
            if isTerminal {
                let width = 30, filled = width * index / max(total, 1)
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                emit("\r[\(bar)] \(index)/\(total) \(name.suffix(48))\u{1B}[K" + (index == total ? "\n" : ""))
            } else {
                emit("[\(index)/\(total)] \(name)\n")
            }
        case .writing(let path):
            emit("writing \(path)\n")
        case .finished:
            break
        }
    }

    private func emit(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }

    static func count(_ n: Int) -> String {
        n >= 1_000_000 ? String(format: "%.1f M", Double(n) / 1e6) : n >= 1000 ? String(format: "%.1f k", Double(n) / 1e3) : "\(n)"
    }

    static func bytes(_ n: Int) -> String {
        n >= 1 << 30 ? String(format: "%.2f GiB", Double(n) / Double(1 << 30))
            : n >= 1 << 20 ? String(format: "%.1f MiB", Double(n) / Double(1 << 20)) : String(format: "%.1f KiB", Double(n) / 1024)
    }

    static func summaryText(_ s: QuantizeSummary) -> String {
        """
        quantized \(s.tensorsQuantized) tensors (\(count(s.parametersQuantized)) parameters), kept \(s.tensorsKept) (\(count(s.parametersKept)))
        bytes: \(bytes(s.bytesBefore)) -> \(bytes(s.bytesAfter)); \(String(format: "%.3f", s.bitsPerParameter)) bits per quantized parameter
        time: \(String(format: "%.2f", s.seconds)) s; peak RSS \(bytes(s.peakRSSBytes)) (largest input tensor \(bytes(s.largestTensorBytes)))
        output: \(s.outputDirectory)
        """
    }
}
