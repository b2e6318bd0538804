import Foundation

/// One line of a JSONL training file.
public enum TrainingExample: Sendable, Equatable {
    /// `{"text": ...}`: plain language modelling, every token trained.
    case text(String)
    /// `{"prompt": ..., "completion": ...}`: loss on the completion only.
    case promptCompletion(prompt: String, completion: String)
    /// `{"messages": [{"role": ..., "content": ...}, ...]}`: rendered with the chat template, loss on assistant turns.
    case chat([ChatMessage])
    /// `{"input_ids": [...], "labels": [...]}`: already tokenized, used as is (no BOS/EOS added); labels
    /// are Hugging Face's, unshifted, -100 = no loss; without "labels" every token trains. `line`: where
    /// it was read, for errors about its ids.
    case tokens(inputIDs: [Int32], labels: [Int32], line: Int)

    static let expectedLine = #"a JSON object with "text" (string), "prompt" and "completion" (strings), "messages" (array of {"role", "content"} strings), or "input_ids" (array of integers, optional "labels")"#

    /// Reads a `.jsonl` file: one example per non-blank line.
    public static func load(jsonl url: URL) throws -> [TrainingExample] {
        var examples: [TrainingExample] = []
        try forEach(jsonl: url) { example, _ in examples.append(example) }
        guard !examples.isEmpty else { throw DataError.emptyDataset(file: url.lastPathComponent) }
        return examples
    }

    /// Streams a `.jsonl` file: `body` gets each example and its 1-based line, one line in memory at a time.
    public static func forEach(jsonl url: URL, _ body: (TrainingExample, Int) throws -> Void) throws {
        let reader = try JSONLLineReader(url: url)
        let fileName = url.lastPathComponent
        try reader.forEachLine { line, number in
            if let example = try parse(line: line, lineNumber: number, fileName: fileName) { try body(example, number) }
        }
    }

    /// Parses JSONL content; errors name `fileName` and the 1-based line.
    public static func parse(jsonl data: Data, fileName: String) throws -> [TrainingExample] {
        var examples: [TrainingExample] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let example = try Data(line).withUnsafeBytes { raw in
                try parse(line: raw.bindMemory(to: UInt8.self), lineNumber: lineNumber, fileName: fileName)
            }
            if let example { examples.append(example) }
        }
        guard !examples.isEmpty else { throw DataError.emptyDataset(file: fileName) }
        return examples
    }

    /// One JSONL line as an example; nil for a blank line.
    static func parse(line: UnsafeBufferPointer<UInt8>, lineNumber: Int, fileName: String) throws -> TrainingExample? {
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return nil }
        func bad(_ expected: String) -> DataError { .invalidDatasetLine(file: fileName, line: lineNumber, expected: expected) }
        let bytes = line.baseAddress.map { Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: line.count, deallocator: .none) } ?? Data()
        guard let object = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any] else {
            throw bad(expectedLine + " (this line is not a JSON object)")
        }
        if let ids = object["input_ids"] {
            guard let list = ids as? [NSNumber], !list.isEmpty, list.allSatisfy({ $0.doubleValue == $0.doubleValue.rounded() }) else {
                throw bad(#""input_ids" to be a non-empty array of integers"#)
            }
            let inputIDs = list.map { Int32(clamping: $0.int64Value) }
            var labels = inputIDs
            if let given = object["labels"] {
                guard let values = given as? [NSNumber], values.count == list.count else {
                    throw bad(#""labels" to be an array of integers as long as "input_ids" (\#(list.count))"#)
                }
                labels = values.map { Int32(clamping: $0.int64Value) }
                if let k = labels.indices.first(where: { labels[$0] != TokenizedExample.ignoredLabel && labels[$0] != inputIDs[$0] }) {
                    throw bad(#""labels" to be -100 or the id at the same position (unshifted, as Hugging Face); position \#(k) has \#(labels[k]) for id \#(inputIDs[k])"#)
                }
            }
            return .tokens(inputIDs: inputIDs, labels: labels, line: lineNumber)
        } else if let messages = object["messages"] {
            guard let list = messages as? [Any], !list.isEmpty else { throw bad(#""messages" to be a non-empty array"#) }
            var chat: [ChatMessage] = []
            for (index, item) in list.enumerated() {
                guard let message = item as? [String: Any] else { throw bad("messages[\(index)] to be an object") }
                guard let role = message["role"] as? String else { throw bad("messages[\(index)].role to be a string") }
                guard let content = message["content"] as? String else { throw bad("messages[\(index)].content to be a string") }
                chat.append(ChatMessage(role: role, content: content))
            }
            return .chat(chat)
        } else if object["prompt"] != nil || object["completion"] != nil {
            guard let prompt = object["prompt"] as? String else { throw bad(#""prompt" to be a string"#) }
            guard let completion = object["completion"] as? String else { throw bad(#""completion" to be a string"#) }
            return .promptCompletion(prompt: prompt, completion: completion)
        } else if let text = object["text"] {
            guard let string = text as? String else { throw bad(#""text" to be a string"#) }
            return .text(string)
        }
        throw bad(expectedLine)
    }

    /// Deterministic train / eval split: a seeded shuffle, then the first `evalFraction` (rounded) is eval.
    public static func split<T>(_ items: [T], evalFraction: Double, seed: UInt64) throws -> (train: [T], eval: [T]) {
        guard evalFraction >= 0, evalFraction < 1 else {
            throw DataError.invalidBatcherOptions(detail: "eval fraction \(evalFraction) must be in [0, 1)")
        }
        var order = Array(0..<items.count)
        var generator = SeededGenerator(seed: seed)
        generator.shuffle(&order)
        let evalCount = Int((Double(items.count) * evalFraction).rounded())
        return (order[evalCount...].map { items[$0] }, order[..<evalCount].map { items[$0] })
    }
}

/// Token ids and UNSHIFTED labels of one example (HF convention: the model shifts; -100 = no loss).
public struct TokenizedExample: Sendable, Equatable {
    public var inputIDs: [Int32]
    public var labels: [Int32]
    public init(inputIDs: [Int32], labels: [Int32]) {
        self.inputIDs = inputIDs
        self.labels = labels
    }
    public static let ignoredLabel: Int32 = -100
}

/// Where one assistant message sits in a rendered conversation.
public struct AssistantSpan: Sendable, Equatable {
    public var messageIndex: Int
    /// Unicode scalar offsets into the rendered text (end exclusive).
    public var characterRange: Range<Int>
    /// Token indices (end exclusive).
    public var tokenRange: Range<Int>
}

/// A rendered, tokenized conversation with its assistant turns.
public struct ChatTokenization: Sendable, Equatable {
    public var text: String
    public var inputIDs: [Int32]
    public var assistantSpans: [AssistantSpan]
    /// 1 for tokens inside an assistant span, else 0.
    public var assistantMask: [Int32]
    /// ids inside assistant spans, else -100.
    public var labels: [Int32]
}

/// Turns training examples into token ids and labels.
public struct ExampleTokenizer: @unchecked Sendable {
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    /// Prepend BOS (label -100) unless the example already starts with it.
    public var addBOS: Bool
    /// Append EOS (trained) unless the example already ends with it.
    public var addEOS: Bool

    public init(tokenizer: Tokenizer, chatTemplate: ChatTemplate?, addBOS: Bool, addEOS: Bool) {
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.addBOS = addBOS
        self.addEOS = addEOS
    }

    public func tokenize(_ example: TrainingExample) throws -> TokenizedExample {
        var ids: [Int32], labels: [Int32]
        switch example {
        case .text(let text):
            ids = tokenizer.encode(text)
            labels = ids
        case .promptCompletion(let prompt, let completion):
            // Tokenized together (as the model will read it); a token overlapping the completion is trained.
            let promptBytes = prompt.utf8.count
            let (encoded, offsets) = tokenizer.encodeWithOffsets(prompt + completion)
            ids = encoded
            labels = zip(encoded, offsets).map { $1.upperBound > promptBytes ? $0 : TokenizedExample.ignoredLabel }
        case .chat(let messages):
            let chat = try tokenizeChat(messages)
            ids = chat.inputIDs
            labels = chat.labels
        case .tokens(let inputIDs, let given, _):
            return TokenizedExample(inputIDs: inputIDs, labels: given)
        }
        if addBOS, let bos = tokenizer.bosTokenID, ids.first != bos {
            ids.insert(bos, at: 0)
            labels.insert(TokenizedExample.ignoredLabel, at: 0)
        }
        if addEOS, let eos = tokenizer.eosTokenID, ids.last != eos {
            ids.append(eos)
            labels.append(eos)
        }
        return TokenizedExample(inputIDs: ids, labels: labels)
    }

    /// Renders `messages` and finds each assistant turn by rendering: the turn starts where the
    /// conversation before it plus the generation prompt ends, and ends where the conversation up to
    /// and including it ends, less trailing whitespace (for ChatML: content + `<|im_end|>`).
    public func tokenizeChat(_ messages: [ChatMessage]) throws -> ChatTokenization {
        guard let template = chatTemplate else { throw DataError.chatTemplateMissing(directory: "(no template given)") }
        let text = try template.render(messages: messages, addGenerationPrompt: false, tokenizer: tokenizer)
        let scalars = Array(text.unicodeScalars)
        // UTF-8 offset of every scalar boundary.
        var byteOffsets = [0]
        byteOffsets.reserveCapacity(scalars.count + 1)
        for scalar in scalars { byteOffsets.append(byteOffsets.last! + UTF8.width(scalar)) }

        var characterSpans: [(Int, Range<Int>)] = []
        for (index, message) in messages.enumerated() where message.role == "assistant" {
            let before = try template.render(messages: Array(messages[..<index]), addGenerationPrompt: true, tokenizer: tokenizer)
            let through = try template.render(messages: Array(messages[...index]), addGenerationPrompt: false, tokenizer: tokenizer)
            let beforeScalars = Array(before.unicodeScalars), throughScalars = Array(through.unicodeScalars)
            guard scalars.starts(with: beforeScalars) else {
                throw DataError.assistantSpanNotFound(messageIndex: index, detail: "the conversation before it, with the generation prompt, is not a prefix of the whole")
            }
            guard scalars.starts(with: throughScalars) else {
                throw DataError.assistantSpanNotFound(messageIndex: index, detail: "the conversation up to it is not a prefix of the whole")
            }
            var end = throughScalars.count
            while end > beforeScalars.count && scalars[end - 1].properties.isWhitespace { end -= 1 }
            guard end > beforeScalars.count else {
                throw DataError.assistantSpanNotFound(messageIndex: index, detail: "it renders to nothing")
            }
            characterSpans.append((index, beforeScalars.count..<end))
        }

        let (ids, offsets) = tokenizer.encodeWithOffsets(text)
        var mask = [Int32](repeating: 0, count: ids.count)
        var spans: [AssistantSpan] = []
        for (index, range) in characterSpans {
            let byteStart = byteOffsets[range.lowerBound], byteEnd = byteOffsets[range.upperBound]
            // The token holding the first byte through the token holding the last byte.
            guard let first = offsets.firstIndex(where: { $0.upperBound > byteStart }),
                  let last = offsets.lastIndex(where: { $0.lowerBound < byteEnd }), first <= last else {
                throw DataError.assistantSpanNotFound(messageIndex: index, detail: "no token covers its text")
            }
            for k in first...last { mask[k] = 1 }
            spans.append(AssistantSpan(messageIndex: index, characterRange: range, tokenRange: first..<(last + 1)))
        }
        let labels = zip(ids, mask).map { $1 == 1 ? $0 : TokenizedExample.ignoredLabel }
        return ChatTokenization(text: text, inputIDs: ids, assistantSpans: spans, assistantMask: mask, labels: labels)
    }
}

extension SeededGenerator {
    /// Fisher-Yates with an explicit, platform-independent bounded draw (the stdlib's `shuffle(using:)`
    /// does not promise the same order across Swift versions).
    mutating func shuffle<T>(_ items: inout [T]) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, to: 0, by: -1) {
            let j = Int(next() % UInt64(i + 1))
            items.swapAt(i, j)
        }
    }
}
