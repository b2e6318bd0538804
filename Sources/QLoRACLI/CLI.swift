import Foundation
import QLoRA

/// The `qlora` entry point: dispatches to a subcommand and turns errors into one clear line.
public enum CLI {
    public static func main(_ argv: [String]) -> Int32 {
        let args = Array(argv.dropFirst())
        guard let first = args.first, first != "--help", first != "-h", first != "help" else {
            print(usage)
            return args.isEmpty ? 2 : 0
        }
        let name = first == "--version" ? "version" : first
        guard let command = CommandList.all.first(where: { $0.name == name }) else {
            FileHandle.standardError.write(Data("qlora: \(CLIError.unknownCommand(name))\n".utf8))
            return 2
        }
        let rest = Array(args.dropFirst())
        if rest.contains("--help") || rest.contains("-h") {
            print(command.help)
            return 0
        }
        do {
            try GemmKernel.applyEnvironment()
            return try command.run(rest)
        } catch let error as CLIError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            return 2
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            return 1
        }
    }

    static var usage: String {
        let width = CommandList.all.map { $0.name.count }.max() ?? 8
        let lines = CommandList.all.map { "  \($0.name.padding(toLength: width + 2, withPad: " ", startingAt: 0))\($0.summary)" }
        return """
        qlora — quantize Hugging Face checkpoints to 4-bit NF4 and fine-tune them with LoRA on a CPU,
        with an exact account of where the memory goes.

        Usage: qlora <command> [options]     (qlora <command> --help for each)

        Models: Llama-family decoders, Hugging Face directories or GGUF files whose model_type is
        \(LlamaConfig.modelTypes.joined(separator: ", ")) (Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2, Qwen3, Gemma 3, SmolLM3, Phi-3 / Phi-4-mini).

        Commands:
        \(lines.joined(separator: "\n"))
        """
    }
}
