import Foundation
import QLoRA

/// `qlora tokenize`: what `train` and `eval` feed the model — ids, pieces, the rendered chat template and
/// which tokens train — from the model's tokenizer alone (no weights are read).
public enum TokenizeCommand: Command {
    public static let name = "tokenize"
    public static let summary = "Show the token ids, pieces and loss mask train would use for a text or a JSONL file"
    public static let help = """
    Usage: qlora tokenize --model DIR (--text TEXT [--chat | --pair TEXT] | --file FILE.jsonl) [--json]

    Tokenizes exactly as `train` does (BOS as the tokenizer adds it, EOS after each record, the chat
    template for "messages" records, the same masking) and prints, per record, each token's id, its
    piece, and whether it trains (1: the loss predicts it; 0: masked, e.g. a prompt). Only tokenizer.json,
    tokenizer_config.json and the chat template are read.

    Options:
      --model DIR        model directory with tokenizer.json (and config.json for the vocabulary check), or a .gguf
      --text TEXT        one text, as a {"text": ...} record (every token trains)
      --chat             with --text: the text as a user message rendered through the chat template with
                         the generation prompt, as `generate --chat` feeds it (nothing trains)
      --pair TEXT        with --text: the pair as an encoder (BERT, RoBERTa) reads it, transformers'
                         `tokenizer(text, text_pair)`: the post-processor's special tokens
                         ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>) and each token's type id
      --file FILE.jsonl  every record of a training file (text, prompt/completion, messages, input_ids)
      --json             one JSON object per record: {"text", "ids", "tokens", "mask"}; with --pair
                         {"text", "text_pair", "ids", "tokens", "type_ids"}
    """

    struct Record {
        var text: String?
        var ids: [Int32]
        var tokens: [String]
        var mask: [Int]
        /// With --pair: the second text and each token's type id (then `mask` is unused).
        var pair: String? = nil
        var typeIDs: [Int32]? = nil
    }

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name, valueOptions: ["model", "text", "file", "pair"], flagOptions: ["chat", "json"])
        guard let model = args.string("model") else { throw CLIError.failed("qlora tokenize: --model DIR is required. Run `qlora tokenize --help`.") }
        guard (args.string("text") == nil) != (args.string("file") == nil) else {
            throw CLIError.failed("qlora tokenize: give exactly one of --text TEXT or --file FILE.jsonl.")
        }
        if let file = args.string("file") { try PathChecks.readableFile(file, command: name, option: "file") }
        if let pair = args.string("pair") {
            guard let text = args.string("text"), !args.flag("chat") else {
                throw CLIError.failed("qlora tokenize: --pair TEXT goes with --text TEXT (and not with --chat).")
            }
            let record = try tokenizePair(model: URL(fileURLWithPath: model), text: text, pair: pair)
            print(args.flag("json") ? json(record) : listing(record, index: 0))
            return 0
        }
        let records = try tokenize(model: URL(fileURLWithPath: model), text: args.string("text"), chat: args.flag("chat"),
                                   file: args.string("file").map { URL(fileURLWithPath: $0) })
        for (index, record) in records.enumerated() {
            print(args.flag("json") ? json(record) : listing(record, index: index))
        }
        return 0
    }

    static func tokenize(model: URL, text: String?, chat: Bool, file: URL?) throws -> [Record] {
        let vocab = (try? LlamaConfig.load(directory: model).vocabSize) ?? Int(Int32.max)
        let dataset = try DatasetTokenizer(modelDirectory: model, vocabSize: vocab, purpose: "tokenizing")
        let tokenizer = dataset.tokenizer
        func record(_ example: TokenizedExample, text: String?) -> Record {
            // Position t trains when its label counts: the loss at t - 1 predicts it.
            let mask = example.labels.enumerated().map { t, label in t > 0 && label != TokenizedExample.ignoredLabel ? 1 : 0 }
            return Record(text: text, ids: example.inputIDs, tokens: example.inputIDs.map { tokenizer.token($0) ?? "<\($0)>" }, mask: mask)
        }
        if let text {
            if chat {
                let ids = try GenerateCommand.promptIDs(prompt: nil, chat: text, tokenizer: tokenizer, directory: model)
                let rendered = tokenizer.decode(ids)
                return [record(TokenizedExample(inputIDs: ids, labels: ids.map { _ in TokenizedExample.ignoredLabel }), text: rendered)]
            }
            return [record(try dataset.tokenize([.text(text)], file: URL(fileURLWithPath: "--text"))[0], text: text)]
        }
        let examples = try TrainingExample.load(jsonl: file!)
        let tokenized = try dataset.tokenize(examples, file: file!)
        return zip(examples, tokenized).map { example, tokens in
            var shown: String?
            switch example {
            case .text(let t): shown = t
            case .promptCompletion(let p, let c): shown = p + c
            case .chat(let messages): shown = try? dataset.examples.tokenizeChat(messages).text
            case .tokens: shown = nil
            }
            return record(tokens, text: shown)
        }
    }

    /// `tokenizer(text, text_pair)`: ids with the post-processor's special tokens, and type ids.
    static func tokenizePair(model: URL, text: String, pair: String) throws -> Record {
        let tokenizer = try Tokenizer.forModel(model, purpose: "tokenizing")
        let encoded = tokenizer.encodePair(text, pair)
        return Record(text: text, ids: encoded.ids, tokens: encoded.ids.map { tokenizer.token($0) ?? "<\($0)>" },
                      mask: [], pair: pair, typeIDs: encoded.typeIDs)
    }

    static func listing(_ record: Record, index: Int) -> String {
        if let typeIDs = record.typeIDs {
            var lines = ["text pair: \(record.ids.count) tokens", "text: \(record.text?.debugDescription ?? "")",
                         "pair: \(record.pair?.debugDescription ?? "")", "     pos       id  type  piece"]
            for t in record.ids.indices {
                lines.append(String(format: "%8d %8d  %4d  ", t, record.ids[t], typeIDs[t]) + record.tokens[t].debugDescription)
            }
            return lines.joined(separator: "\n")
        }
        var lines = ["record \(index + 1): \(record.ids.count) tokens, \(record.mask.reduce(0, +)) trained"]
        if let text = record.text { lines.append("text: \(text.debugDescription)") }
        lines.append("     pos       id  train  piece")
        for t in record.ids.indices {
            let train = (record.mask[t] == 1 ? "yes" : "-").padding(toLength: 5, withPad: " ", startingAt: 0)
            lines.append(String(format: "%8d %8d  ", t, record.ids[t]) + train + "  " + record.tokens[t].debugDescription)
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ record: Record) -> String {
        var object: [String: Any] = ["ids": record.ids.map(Int.init), "tokens": record.tokens]
        if let typeIDs = record.typeIDs {
            object["type_ids"] = typeIDs.map(Int.init)
            object["text_pair"] = record.pair ?? ""
        } else {
            object["mask"] = record.mask
        }
        object["text"] = record.text ?? NSNull()
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
