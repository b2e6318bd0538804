import Foundation
import QLoRA

/// `qlora generate --batch-file`: many requests, each with its own adapter, decoded together.
extension GenerateCommand {
    struct BatchRequest {
        var prompt: String?
        var chat: String?
        var adapter: String?
    }

    static func readRequests(_ file: URL) throws -> [BatchRequest] {
        let text: String
        do { text = try String(contentsOf: file, encoding: .utf8) } catch {
            throw CLIError.failed("qlora generate: cannot read \(file.path): \(error.localizedDescription)")
        }
        var requests: [BatchRequest] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { continue }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) as? [String: Any] else {
                throw CLIError.failed("qlora generate: \(file.path) line \(index + 1) is not a JSON object.")
            }
            let request = BatchRequest(prompt: object["prompt"] as? String, chat: object["chat"] as? String, adapter: object["adapter"] as? String)
            guard (request.prompt == nil) != (request.chat == nil) else {
                throw CLIError.failed("qlora generate: \(file.path) line \(index + 1) needs exactly one of \"prompt\" or \"chat\" (a string).")
            }
            requests.append(request)
        }
        guard !requests.isEmpty else { throw CLIError.failed("qlora generate: \(file.path) has no requests.") }
        return requests
    }

    /// Loads the model and every adapter once, decodes all requests together, prints one JSON line per
    /// request ({"index", "adapter", "completion", "tokens"}). Returns the generated ids per request.
    static func generateBatch(_ options: Options, output: (String) -> Void, status: (String) -> Void) throws -> [[Int32]] {
        let directory = options.model
        let requests = try readRequests(options.batchFile!)
        let tokenizer = try Tokenizer.forModel(directory, purpose: "generation")
        let started = Date()
        let model = try LlamaLoader.load(directory: directory, format: options.format, precision: options.precision)
        let config = model.config
        var loaded: [String: LoRAAdapters] = [:]
        let names = options.adapters.named.map(\.name)
        for (index, request) in requests.enumerated() {
            guard let name = request.adapter, loaded[name] == nil else { continue }
            guard let entry = options.adapters.named.first(where: { $0.name == name }) else {
                throw CLIError.failed("qlora generate: request \(index + 1) asks for adapter \(name), which is not loaded; loaded: \(names.isEmpty ? "none" : names.joined(separator: ", ")).")
            }
            loaded[name] = try AdapterSelection.load(entry.directory, model: directory, config: config, command: Self.name)
        }
        let prompts = try requests.map { try promptIDs(prompt: $0.prompt, chat: $0.chat, tokenizer: tokenizer, directory: directory) }
        for (index, prompt) in prompts.enumerated() where prompt.count >= config.maxPositionEmbeddings {
            throw CLIError.failed("qlora generate: request \(index + 1) is \(prompt.count) tokens, more than the model's \(config.maxPositionEmbeddings) positions leave room for.")
        }
        status(String(format: "loaded in %.1f s: %d requests over %d adapters (and the base)", Date().timeIntervalSince(started),
                      requests.count, loaded.count))
        let start = Date()
        let outputs = try Generator.generateBatch(model: model, requests: zip(prompts, requests).map { ($0, $1.adapter.flatMap { loaded[$0] }) },
                                                  maxNewTokens: options.maxNewTokens,
                                                  stopTokens: endOfSequenceTokens(directory: directory, config: config, tokenizer: tokenizer),
                                                  sampling: options.sampling)
        let seconds = Date().timeIntervalSince(start)
        for (index, tokens) in outputs.enumerated() {
            let object: [String: Any] = ["index": index, "adapter": requests[index].adapter ?? NSNull(),
                                         "completion": tokenizer.decode(tokens, skipSpecialTokens: true), "tokens": tokens.count]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            output(String(decoding: data, as: UTF8.self) + "\n")
        }
        let total = outputs.map(\.count).reduce(0, +)
        status(String(format: "%d tokens in %.2f s (prompts included): %.1f tokens/s over %d sequences", total, seconds,
                      Double(total) / max(seconds, 1e-9), outputs.count))
        return outputs
    }
}
