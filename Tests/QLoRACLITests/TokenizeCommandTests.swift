import Foundation
import Testing
import QLoRA
@testable import QLoRACLI

/// `qlora tokenize` shows exactly what train feeds: the library's own tokenization and labels.
@Suite struct TokenizeCommandTests {
    static var tokenizerDirectory: URL {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Fixtures/tokenizer")
    }

    @Test func recordsAreWhatTrainFeeds() throws {
        let dir = Self.tokenizerDirectory
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-tok-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data([#"{"text": "Hello world, again."}"#, #"{"prompt": "Q: 2+2?", "completion": " 4"}"#,
                  #"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
                  #"{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}"#].joined(separator: "\n").utf8).write(to: file)
        let records = try TokenizeCommand.tokenize(model: dir, text: nil, chat: false, file: file)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: Int(Int32.max), purpose: "test")
        let expected = try dataset.tokenize(try TrainingExample.load(jsonl: file), file: file)
        #expect(records.count == 4)
        for (record, example) in zip(records, expected) {
            #expect(record.ids == example.inputIDs)
            #expect(record.mask == example.labels.enumerated().map { $0 > 0 && $1 != -100 ? 1 : 0 })
            #expect(record.tokens.count == record.ids.count)
        }
        #expect(records[1].mask.first == 0 && records[1].mask.last == 1, "the prompt is masked, the completion trains")
        #expect(records[2].text?.contains("hello") == true && records[2].mask.contains(0) && records[2].mask.contains(1))
        #expect(records[3].mask == [0, 1, 1])
        let json = try JSONSerialization.jsonObject(with: Data(TokenizeCommand.json(records[0]).utf8)) as! [String: Any]
        #expect((json["ids"] as? [Int])?.map(Int32.init) == records[0].ids && json["mask"] != nil && json["tokens"] != nil)

        let text = try TokenizeCommand.tokenize(model: dir, text: "Hello world", chat: false, file: nil)[0]
        let tokenizer = try Tokenizer(directory: dir)
        #expect(Array(text.ids.prefix(tokenizer.encode("Hello world").count)) == tokenizer.encode("Hello world"))
        let chat = try TokenizeCommand.tokenize(model: dir, text: "hi", chat: true, file: nil)[0]
        #expect(chat.mask.allSatisfy { $0 == 0 } && chat.text?.contains("hi") == true)
    }

    @Test func pairIsWhatAnEncoderReads() throws {
        let dir = Self.tokenizerDirectory.deletingLastPathComponent().appendingPathComponent("tokenizer-encoder/uncased")
        let record = try TokenizeCommand.tokenizePair(model: dir, text: "How old are you?", pair: "I am 6.")
        // [CLS] how old are you ? [SEP] i am 6 . [SEP], as tokenizers 0.23.3 encodes the pair.
        #expect(record.ids == [101, 2129, 2214, 2024, 2017, 1029, 102, 1045, 2572, 1020, 1012, 102])
        #expect(record.typeIDs == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
        #expect(record.tokens.first == "[CLS]" && record.tokens.last == "[SEP]")
        let json = try JSONSerialization.jsonObject(with: Data(TokenizeCommand.json(record).utf8)) as! [String: Any]
        #expect((json["type_ids"] as? [Int]) == record.typeIDs?.map(Int.init) && json["text_pair"] as? String == "I am 6." && json["mask"] == nil)
        #expect(TokenizeCommand.listing(record, index: 0).contains("type"))
        do {
            _ = try TokenizeCommand.run(["--model", dir.path, "--text", "a", "--chat", "--pair", "b"])
            Issue.record("--pair with --chat must be refused")
        } catch {
            #expect("\(error)".contains("--pair TEXT goes with --text TEXT"))
        }
    }
}
