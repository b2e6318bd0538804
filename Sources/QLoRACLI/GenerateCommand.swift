import Foundation
import QLoRA

/// `qlora generate`: text generation with a model (4-bit or dense) and an optional PEFT adapter,
/// streamed to stdout, on the KV-cache decoder.
public enum GenerateCommand: Command {
    public static let name = "generate"
    public static let summary = "Generate text with a model and an optional LoRA adapter (streamed, KV cache)"
    public static let help = """
    Usage: qlora generate --model DIR [--adapter [NAME=]DIR[,...]] (--prompt TEXT | --chat TEXT | --batch-file F.jsonl) [options]

    Loads the model (dense safetensors are quantized on load unless --quant none; bitsandbytes 4-bit
    checkpoints are used as they are), the optional PEFT adapter and the model's tokenizer.json, then
    continues the prompt token by token with a KV cache (the prompt runs once, each new token is one
    row through the layers). The text is streamed to stdout as it is generated; time to first token and
    tokens/s go to stderr. Generation stops at an end-of-sequence token (eos_token_id of config.json and
    generation_config.json, and the tokenizer's eos_token), after --max-new-tokens, or at the model's
    max_position_embeddings.

    Options:
      --model DIR              Hugging Face model directory (config.json, *.safetensors, tokenizer.json),
                               or a .gguf file (tokenizer and chat template from its metadata)
    \(AdapterSelection.helpText)
      --prompt TEXT            raw text to continue (BOS added as the tokenizer does)
      --chat TEXT              a user message, rendered through the model's chat template with the
                               generation prompt (needs chat_template.jinja or tokenizer_config.json's chat_template)
      --batch-file F.jsonl     one request per line, {"prompt": ...} or {"chat": ...}, optionally
                               "adapter": NAME (one of --adapter; none = the base): all decoded together,
                               one pass over the base weights per step; prints one JSON line per request
      --max-new-tokens N       most tokens to generate (default 128)
      --temperature T          0 = greedy (default); > 0 samples from softmax(logits / T)
      --top-k K                sample from the K most likely tokens only (default 0 = off)
      --top-p P                nucleus sampling: the smallest set with probability >= P (default 1 = off)
      --repetition-penalty X   Hugging Face's penalty on tokens already seen, prompt included (default 1 = off)
      --seed S                 sampling seed (default 0): same seed, same output
      Base model:
        --quant nf4|fp4|none     quantize a dense checkpoint on load (default nf4) or keep it dense
        --base-dtype bf16|fp32   storage of a dense base with --quant none (default bf16)
        --compute-dtype bf16|fp16|fp32   precision of the dequantized weight tiles (default bf16)
        --blocksize N            4-bit block size (default 64)
        --[no-]double-quant      quantize the absmax values too (default on)

    Examples:
      qlora generate --model ./TinyLlama --adapter ./out --chat "Write a haiku about autumn."
      qlora generate --model ./TinyLlama --quant none --prompt "Once upon a time" --temperature 0.8 --top-p 0.95
    """

    struct Options {
        var model: URL
        var adapters: AdapterSelection
        var batchFile: URL?
        var prompt: String?
        var chat: String?
        var maxNewTokens = 128
        var sampling = Generator.Sampling()
        var format: BaseWeightFormat = .quantized(QuantizationOptions())
        var precision: ComputePrecision = .bf16
    }

    static func parse(_ arguments: [String]) throws -> Options {
        let args = try Arguments(arguments, command: name,
                                 valueOptions: AdapterSelection.valueOptions.union(["model", "prompt", "chat", "batch-file", "max-new-tokens", "temperature", "top-k", "top-p",
                                                "repetition-penalty", "seed", "quant", "base-dtype", "compute-dtype", "blocksize"]),
                                 flagOptions: ["double-quant"])
        guard let model = args.string("model") else {
            throw CLIError.failed("qlora generate: --model is required. Run `qlora generate --help`.")
        }
        guard [args.string("prompt"), args.string("chat"), args.string("batch-file")].compactMap({ $0 }).count == 1 else {
            throw CLIError.failed("qlora generate: give exactly one of --prompt TEXT, --chat TEXT or --batch-file FILE.jsonl.")
        }
        try PathChecks.modelDirectory(model, command: name)
        if let file = args.string("batch-file") { try PathChecks.readableFile(file, command: name, option: "batch-file") }
        let base = try TrainingArguments(args)
        var options = Options(model: URL(fileURLWithPath: model), adapters: try AdapterSelection(args))
        options.batchFile = args.string("batch-file").map { URL(fileURLWithPath: $0) }
        options.prompt = args.string("prompt")
        options.chat = args.string("chat")
        options.format = base.format
        options.precision = base.precision
        options.maxNewTokens = try args.int("max-new-tokens", default: 128)
        guard options.maxNewTokens > 0 else {
            throw CLIError.badValue(command: name, option: "max-new-tokens", value: "\(options.maxNewTokens)", expected: "a positive integer")
        }
        let temperature = try args.double("temperature", default: 0)
        let topK = try args.int("top-k", default: 0)
        let topP = try args.double("top-p", default: 1)
        let penalty = try args.double("repetition-penalty", default: 1)
        guard temperature >= 0 else { throw CLIError.badValue(command: name, option: "temperature", value: "\(temperature)", expected: "a number >= 0") }
        guard topK >= 0 else { throw CLIError.badValue(command: name, option: "top-k", value: "\(topK)", expected: "an integer >= 0") }
        guard topP > 0, topP <= 1 else { throw CLIError.badValue(command: name, option: "top-p", value: "\(topP)", expected: "a number in (0, 1]") }
        guard penalty > 0 else { throw CLIError.badValue(command: name, option: "repetition-penalty", value: "\(penalty)", expected: "a number > 0") }
        options.sampling = Generator.Sampling(temperature: Float(temperature), topK: topK, topP: Float(topP),
                                              repetitionPenalty: Float(penalty), seed: UInt64(try args.int("seed", default: 0)))
        return options
    }

    public static func run(_ arguments: [String]) throws -> Int32 {
        let options = try parse(arguments)
        let blas = try OpenBLAS.ensureLoaded()
        let status = { (line: String) in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        status("qlora generate — \(blas.summary)")
        let write = { (text: String) in FileHandle.standardOutput.write(Data(text.utf8)) }
        if options.batchFile != nil {
            _ = try generateBatch(options, output: write, status: status)
        } else {
            _ = try generate(options, output: write, status: status)
        }
        return 0
    }

    /// Loads everything, generates, streams text pieces to `output` and status lines to `status`.
    /// Returns the generated token ids.
    static func generate(_ options: Options, output: (String) -> Void, status: (String) -> Void) throws -> [Int32] {
        let directory = options.model
        let tokenizer = try Tokenizer.forModel(directory, purpose: "generation")
        let started = Date()
        let model = try LlamaLoader.load(directory: directory, format: options.format, precision: options.precision)
        let config = model.config
        let lora = try options.adapters.single(model: directory, config: config, command: name)
        let prompt = try promptIDs(prompt: options.prompt, chat: options.chat, tokenizer: tokenizer, directory: directory)
        let maxPositions = config.maxPositionEmbeddings
        guard prompt.count < maxPositions else {
            throw CLIError.failed("qlora generate: the prompt is \(prompt.count) tokens, but the model takes at most \(maxPositions) positions (max_position_embeddings), which leaves no room to generate. Shorten the prompt.")
        }
        let stopTokens = endOfSequenceTokens(directory: directory, config: config, tokenizer: tokenizer)
        let generator = Generator(model: model, lora: lora, maxSeqLen: min(maxPositions, prompt.count + options.maxNewTokens))
        status(String(format: "loaded in %.1f s: %d layers, hidden %d, vocab %d%@; KV cache %@; prompt %d tokens",
                      Date().timeIntervalSince(started), config.numHiddenLayers, config.hiddenSize, config.vocabSize,
                      lora.map { ", adapter r=\($0.config.r)" } ?? "", Formatting.bytes(generator.decoder.cache.bytes), prompt.count))

        var stream = TextStream(tokenizer: tokenizer)
        let start = Date()
        var firstTokenTime: Date?
        let tokens = try generator.generate(prompt: prompt, maxNewTokens: options.maxNewTokens, stopTokens: stopTokens,
                                            sampling: options.sampling) { token, _ in
            if firstTokenTime == nil { firstTokenTime = Date() }
            let piece = stream.append(token)
            if !piece.isEmpty { output(piece) }
        }
        let end = Date()
        let rest = stream.finish()
        if !rest.isEmpty { output(rest) }
        output("\n")
        let ttft = (firstTokenTime ?? end).timeIntervalSince(start)
        let decodeSeconds = end.timeIntervalSince(firstTokenTime ?? end)
        let rate = tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
        let stopped = tokens.last.map { stopTokens.contains($0) } ?? false
        status(String(format: "%d tokens%@; time to first token %.3f s (prompt %d tokens, %.0f tokens/s); %.1f tokens/s after it",
                      tokens.count, stopped ? " (stopped at end of sequence)" : "", ttft, prompt.count,
                      ttft > 0 ? Double(prompt.count) / ttft : 0, rate))
        return tokens
    }

    /// The ids of a raw prompt (BOS as the tokenizer adds it) or of a user message through the chat
    /// template with the generation prompt (the rendering carries its own special tokens, as transformers'
    /// apply_chat_template).
    static func promptIDs(prompt: String?, chat: String?, tokenizer: Tokenizer, directory: URL) throws -> [Int32] {
        let text: String
        if let chat {
            guard let source = tokenizer.chatTemplateSource else { throw DataError.chatTemplateMissing(directory: directory.path) }
            text = try ChatTemplate(source).render(messages: [ChatMessage(role: "user", content: chat)], addGenerationPrompt: true,
                                                   tokenizer: tokenizer)
        } else {
            text = prompt ?? ""
        }
        let ids = tokenizer.encode(text, addSpecialTokens: chat == nil)
        guard !ids.isEmpty else { throw CLIError.failed("qlora generate: the prompt is empty after tokenization.") }
        return ids
    }

    /// EOS ids: config.json's eos_token_id, generation_config.json's (which transformers prefers), the tokenizer's.
    static func endOfSequenceTokens(directory: URL, config: LlamaConfig, tokenizer: Tokenizer) -> Set<Int32> {
        var ids = Set(config.eosTokenIDs.map(Int32.init))
        if let data = try? Data(contentsOf: directory.appendingPathComponent("generation_config.json")),
           let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
            if let eos = json["eos_token_id"] as? NSNumber { ids.insert(eos.int32Value) }
            if let list = json["eos_token_id"] as? [NSNumber] { ids.formUnion(list.map(\.int32Value)) }
        }
        if let eos = tokenizer.eosTokenID { ids.insert(eos) }
        return ids
    }
}

/// Turns a growing token list into text pieces: decodes the whole output each time and hands out the
/// new suffix, holding back a trailing U+FFFD (an incomplete multi-byte character from byte-fallback
/// tokens) until the next token completes it.
struct TextStream {
    let tokenizer: Tokenizer
    private(set) var tokens: [Int32] = []
    private(set) var emitted = ""

    init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    mutating func append(_ token: Int32) -> String {
        tokens.append(token)
        var text = tokenizer.decode(tokens, skipSpecialTokens: true)
        while text.hasSuffix("\u{FFFD}") { text.removeLast() }
        return take(text)
    }

    /// What is left at the end (including any incomplete character, as the decoder renders it).
    mutating func finish() -> String { take(tokenizer.decode(tokens, skipSpecialTokens: true)) }

    private mutating func take(_ text: String) -> String {
        // A decoder may rewrite earlier text (e.g. strip a leading space); only a pure extension is streamed.
        guard text.hasPrefix(emitted), text.count > emitted.count else { return "" }
        let piece = String(text.dropFirst(emitted.count))
        emitted = text
        return piece
    }
}
