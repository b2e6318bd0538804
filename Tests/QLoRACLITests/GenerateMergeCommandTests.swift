import Foundation
import Testing
import SafeTensors
import QLoRA
@testable import QLoRACLI

/// Fixtures/<relative>, found by walking up from this file to the package root.
private func fixture(_ relative: String) -> URL {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            return url.appendingPathComponent("Fixtures/" + relative)
        }
        url.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: "Fixtures/" + relative)
}

/// `qlora generate` and `qlora merge` end to end on temp model directories: a random Llama (vocab 2000)
/// written by LlamaWriter, with the SentencePiece-style tokenizer from Fixtures/tokenizer-sp/metaspace.
@Suite(.serialized) struct GenerateMergeCommandTests {
    static let config: LlamaConfig = {
        var config = LlamaConfig(vocabSize: 2000, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 160)
        config.bosTokenID = 1
        config.eosTokenIDs = [2]
        return config
    }()

    /// A temp model directory (+ tokenizer files, a ChatML template); `adapter` also writes a random
    /// non-zero LoRA adapter to `<dir>/adapter`.
    static func makeModelDirectory(chatTemplate: Bool = true) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-gen-\(UUID().uuidString)")
        let model = try LlamaLoader.random(config: config, format: .dense32, precision: .fp32, seed: 3, std: 0.05)
        try LlamaWriter.save(model, to: dir)
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: fixture("tokenizer-sp/metaspace/\(file)"), to: dir.appendingPathComponent(file))
        }
        if chatTemplate {
            try FileManager.default.copyItem(at: fixture("tokenizer/chat_template.jinja"), to: dir.appendingPathComponent("chat_template.jinja"))
        }
        try Data(#"{"bos_token_id": 1, "eos_token_id": [2, 3]}"#.utf8).write(to: dir.appendingPathComponent("generation_config.json"))
        let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]))
        adapters.initialize(seed: 9)
        // B = 0 after PEFT's init: give it values so the adapter changes the outputs.
        var generator = QLoRA.SeededGenerator(seed: 10)
        for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
            adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.05 })
        }
        try PEFTAdapterIO.save(adapters, to: dir.appendingPathComponent("adapter"))
        return dir
    }

    static func options(_ model: URL, _ extra: [String]) throws -> GenerateCommand.Options {
        try GenerateCommand.parse(["--model", model.path] + extra)
    }

    @Test func generateStreamsWhatTheLibraryGenerates() throws {
        let dir = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var pieces: [String] = []
        var status: [String] = []
        let options = try Self.options(dir, ["--adapter", dir.appendingPathComponent("adapter").path, "--prompt", "The quick brown fox",
                                              "--max-new-tokens", "12", "--quant", "none", "--base-dtype", "fp32", "--compute-dtype", "fp32"])
        let tokens = try GenerateCommand.generate(options, output: { pieces.append($0) }, status: { status.append($0) })

        // Same tokens as the library on the same model + adapter, and the streamed text is their decoding.
        let model = try LlamaLoader.load(directory: dir, format: .dense32, precision: .fp32)
        let lora = try PEFTAdapterIO.load(directory: dir.appendingPathComponent("adapter"), modelConfig: model.config)
        let tokenizer = try Tokenizer(directory: dir)
        let prompt = tokenizer.encode("The quick brown fox", addSpecialTokens: true)
        #expect(prompt.first == 1)
        let expected = try Generator(model: model, lora: lora, maxSeqLen: prompt.count + 12)
            .generate(prompt: prompt, maxNewTokens: 12, stopTokens: [2, 3])
        #expect(tokens == expected)
        #expect(pieces.joined() == tokenizer.decode(tokens, skipSpecialTokens: true) + "\n")
        #expect(status.last?.contains("time to first token") == true, "\(status)")
        #expect(status.contains { $0.contains("KV cache") })
    }

    @Test func chatUsesTheTemplateAndSamplingIsSeeded() throws {
        let dir = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["--chat", "Hello there", "--max-new-tokens", "6", "--temperature", "1.2", "--top-k", "40", "--top-p", "0.9", "--seed", "5"]
        let a = try GenerateCommand.generate(try Self.options(dir, args), output: { _ in }, status: { _ in })
        let b = try GenerateCommand.generate(try Self.options(dir, args), output: { _ in }, status: { _ in })
        #expect(a == b && !a.isEmpty)
        // The prompt the command builds is the rendered template, tokenized without extra special tokens.
        let tokenizer = try Tokenizer(directory: dir)
        let rendered = try ChatTemplate(tokenizer.chatTemplateSource!).render(
            messages: [ChatMessage(role: "user", content: "Hello there")], addGenerationPrompt: true, tokenizer: tokenizer)
        #expect(rendered.contains("Hello there") && rendered.hasSuffix("assistant\n"))
        let prompt = tokenizer.encode(rendered, addSpecialTokens: false)
        let model = try LlamaLoader.load(directory: dir, format: .quantized(QuantizationOptions()), precision: .bf16)
        let expected = try Generator(model: model, lora: nil, maxSeqLen: prompt.count + 6).generate(
            prompt: prompt, maxNewTokens: 6, stopTokens: [2, 3],
            sampling: .init(temperature: 1.2, topK: 40, topP: 0.9, seed: 5))
        #expect(a == expected)
    }

    @Test func streamingHoldsBackIncompleteCharacters() throws {
        let tokenizer = try Tokenizer(directory: fixture("tokenizer-sp/metaspace"))
        let text = "price: 5€ — naïve 日本"
        let ids = tokenizer.encode(text)
        var stream = TextStream(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(stream.append(id)) }
        pieces.append(stream.finish())
        #expect(pieces.joined() == tokenizer.decode(ids, skipSpecialTokens: true))
        #expect(!pieces.contains { $0.contains("\u{FFFD}") }, "\(pieces)")
        // Byte-fallback tokens are really in play (a multi-byte character spans several tokens).
        #expect(ids.count > text.split(separator: " ").count + 6)
    }

    @Test func generateErrorsAreClear() throws {
        let dir = try Self.makeModelDirectory(chatTemplate: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        func message(_ extra: [String], model: URL? = nil) -> String {
            do {
                _ = try GenerateCommand.generate(try Self.options(model ?? dir, extra + ["--quant", "none"]), output: { _ in }, status: { _ in })
                return "no error"
            } catch { return "\(error)" }
        }
        let long = String(repeating: "word ", count: 200)
        #expect(message(["--prompt", long]).contains("max_position_embeddings"))
        #expect(message(["--chat", "hi"]).contains("no chat template"))
        // An adapter trained for another shape of model.
        var other = Self.config
        other.hiddenSize = 32
        let wrong = try LoRAAdapters(modelConfig: other, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["q_proj"]))
        try PEFTAdapterIO.save(wrong, to: dir.appendingPathComponent("wrong-adapter"))
        let adapterMessage = message(["--prompt", "hi", "--adapter", dir.appendingPathComponent("wrong-adapter").path])
        #expect(adapterMessage.contains("does not fit the model"), "\(adapterMessage)")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer.json"))
        #expect(message(["--prompt", "hi"]).contains("no tokenizer.json"))
        #expect(throws: CLIError.self) { try GenerateCommand.parse(["--model", dir.path]) }
        #expect(throws: CLIError.self) { try GenerateCommand.parse(["--model", dir.path, "--prompt", "a", "--chat", "b"]) }
        #expect(throws: CLIError.self) { try GenerateCommand.parse(["--model", dir.path, "--prompt", "a", "--top-p", "0"]) }
    }

    /// Merged model reloads as a plain dense model whose logits equal the base + adapter's.
    @Test(arguments: ["fp32", "nf4"])
    func mergeMatchesBasePlusAdapter(base: String) throws {
        let dir = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var modelDir = dir
        if base == "nf4" {
            // A bitsandbytes-format 4-bit base, from qlora quantize's writer.
            modelDir = dir.appendingPathComponent("nf4")
            try CheckpointQuantizer.quantize(input: dir.path, output: modelDir.path)
        }
        let output = dir.appendingPathComponent("merged")
        var status: [String] = []
        try MergeCommand.merge(try MergeCommand.parse(["--model", modelDir.path, "--adapter", dir.appendingPathComponent("adapter").path,
                                                       "--output", output.path]), status: { status.append($0) })
        #expect(status.contains { $0.contains("dequantizing") } == (base == "nf4"), "\(status)")
        for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "config.json"] {
            #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent(file).path), "\(file) missing")
        }
        let configText = try String(contentsOf: output.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(!configText.contains("quantization_config"))

        let tokens: [Int32] = [1, 17, 400, 23, 1999, 5, 88, 2]
        func logits(_ model: LlamaModel, _ lora: LoRAAdapters?) throws -> [Float] {
            let executor = LlamaExecutor(model: model, lora: lora, shape: .init(batch: 1, seqLen: tokens.count, training: false))
            try executor.forward(inputIDs: tokens, batch: 1, seqLen: tokens.count)
            var out = [Float](repeating: 0, count: tokens.count * model.config.vocabSize)
            out.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
            return out
        }
        let baseModel = try LlamaLoader.load(directory: modelDir, format: .dense32, precision: .fp32)
        let lora = try PEFTAdapterIO.load(directory: dir.appendingPathComponent("adapter"), modelConfig: baseModel.config)
        let merged = try LlamaLoader.load(directory: output, format: .dense32, precision: .fp32)
        #expect(!merged.layers[0].linears.contains { $0.weight is QuantizedWeight })
        let expected = try logits(baseModel, lora)
        let actual = try logits(merged, nil)
        var maxDiff: Float = 0
        for i in expected.indices { maxDiff = max(maxDiff, abs(expected[i] - actual[i])) }
        #expect(maxDiff <= 1e-4, "max abs diff \(maxDiff)")
        // And the merge really changed the model (the adapter is not a no-op).
        let plain = try logits(baseModel, nil)
        #expect(zip(plain, actual).contains { abs($0 - $1) > 1e-3 })
    }

    @Test func mergeRefusesToOverwriteItsInput() throws {
        let dir = try Self.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let before = try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))
        for output in [dir.path, dir.path + "/", dir.appendingPathComponent("adapter").path] {
            let options = try MergeCommand.parse(["--model", dir.path, "--adapter", dir.appendingPathComponent("adapter").path, "--output", output])
            #expect(throws: CLIError.self) { try MergeCommand.merge(options, status: { _ in }) }
        }
        #expect(try Data(contentsOf: dir.appendingPathComponent("model.safetensors")) == before)
        // bf16 output by request; the full help names every option.
        let output = dir.appendingPathComponent("merged-bf16")
        try MergeCommand.merge(try MergeCommand.parse(["--model", dir.path, "--adapter", dir.appendingPathComponent("adapter").path,
                                                       "--output", output.path, "--dtype", "bf16"]), status: { _ in })
        let file = try SafeTensorsFile(path: output.appendingPathComponent("model.safetensors").path)
        #expect(try file.info("model.layers.0.self_attn.q_proj.weight").dtype == .BF16)
        for option in ["--model", "--adapter", "--output", "--dtype"] { #expect(MergeCommand.help.contains(option)) }
        for option in ["--prompt", "--chat", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--quant", "--compute-dtype"] {
            #expect(GenerateCommand.help.contains(option))
        }
    }
}
