import Foundation
import Testing
@testable import QLoRA

@Suite struct DataDatasetTests {
    static func smolTokenizer() throws -> ExampleTokenizer {
        let tokenizer = DataFixtures.smolLM2
        return ExampleTokenizer(tokenizer: tokenizer, chatTemplate: try ChatTemplate(try #require(tokenizer.chatTemplateSource)),
                                addBOS: false, addEOS: false)
    }

    @Test(arguments: 0..<3)
    func chatAssistantSpansMaskAndLabelsMatchTheReference(_ index: Int) throws {
        let cases = try #require(try DataFixtures.json("tokenizer/tokenizer_cases.json")["chat"] as? [[String: Any]])
        let entry = cases[index]
        guard entry["add_generation_prompt"] as? Bool == false else {
            // A generation-prompt case has no assistant turn; the dataset path renders without the prompt.
            #expect((entry["assistant_spans"] as? [Any])?.isEmpty == true)
            return
        }
        let chat = try Self.smolTokenizer().tokenizeChat(ChatTemplateTests.messages(entry))
        #expect(chat.text == entry["text"] as? String)
        #expect(chat.inputIDs == int32s(entry["ids"]))
        let spans = try #require(entry["assistant_spans"] as? [[String: Int]])
        #expect(chat.assistantSpans.count == spans.count)
        for (span, reference) in zip(chat.assistantSpans, spans) {
            #expect(span.messageIndex == reference["message_index"])
            #expect(span.characterRange == reference["char_start"]!..<reference["char_end"]!)
            #expect(span.tokenRange == reference["token_start"]!..<reference["token_end"]!)
        }
        #expect(chat.assistantMask == int32s(entry["assistant_mask"]))
        #expect(chat.labels == int32s(entry["sft_labels"]))
        let example = try Self.smolTokenizer().tokenize(.chat(ChatTemplateTests.messages(entry)))
        #expect(example.labels == int32s(entry["sft_labels"]))
    }

    @Test func parsesTheThreeLineKinds() throws {
        let jsonl = """
        {"text": "hello"}

        {"prompt": "Q: 2+2?", "completion": " 4"}
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
        """
        let examples = try TrainingExample.parse(jsonl: Data(jsonl.utf8), fileName: "d.jsonl")
        #expect(examples == [.text("hello"), .promptCompletion(prompt: "Q: 2+2?", completion: " 4"),
                             .chat([ChatMessage(role: "user", content: "hi"), ChatMessage(role: "assistant", content: "yo")])])
    }

    @Test func promptCompletionTrainsOnlyTheCompletion() throws {
        var tokenizer = try Self.smolTokenizer()
        tokenizer.addEOS = true
        let prompt = "Question: what is two plus two?", completion = " Four."
        let example = try tokenizer.tokenize(.promptCompletion(prompt: prompt, completion: completion))
        let promptIDs = DataFixtures.smolLM2.encode(prompt)
        let completionIDs = DataFixtures.smolLM2.encode(completion)
        #expect(example.inputIDs == promptIDs + completionIDs + [2])
        #expect(example.labels == [Int32](repeating: -100, count: promptIDs.count) + completionIDs + [2])
        let text = try tokenizer.tokenize(.text("plain text"))
        #expect(text.labels == text.inputIDs && text.inputIDs.last == 2)
    }

    @Test func badLinesNameFileLineAndExpectation() throws {
        func failure(_ jsonl: String) -> DataError? {
            do { _ = try TrainingExample.parse(jsonl: Data(jsonl.utf8), fileName: "train.jsonl"); return nil } catch { return error as? DataError }
        }
        #expect(failure("{\"text\": \"a\"}\n[1, 2]") == .invalidDatasetLine(file: "train.jsonl", line: 2,
                expected: TrainingExample.expectedLine + " (this line is not a JSON object)"))
        #expect(failure("{\"text\": 3}") == .invalidDatasetLine(file: "train.jsonl", line: 1, expected: #""text" to be a string"#))
        #expect(failure("{\"prompt\": \"p\"}") == .invalidDatasetLine(file: "train.jsonl", line: 1, expected: #""completion" to be a string"#))
        #expect(failure("\n{\"messages\": [{\"role\": \"user\"}]}") == .invalidDatasetLine(file: "train.jsonl", line: 2, expected: "messages[0].content to be a string"))
        #expect(failure("{\"other\": 1}") == .invalidDatasetLine(file: "train.jsonl", line: 1, expected: TrainingExample.expectedLine))
        #expect(failure("\n  \n") == .emptyDataset(file: "train.jsonl"))
        #expect(throws: DataError.self) { try TrainingExample.load(jsonl: URL(fileURLWithPath: "/nonexistent/x.jsonl")) }
    }

    @Test func chatWithoutTemplateThrows() {
        let tokenizer = ExampleTokenizer(tokenizer: DataFixtures.smolLM2, chatTemplate: nil, addBOS: false, addEOS: false)
        #expect(throws: DataError.chatTemplateMissing(directory: "(no template given)")) {
            try tokenizer.tokenize(.chat([ChatMessage(role: "user", content: "x")]))
        }
    }

    /// Through a model directory without a chat template: the error names the data file, the record and
    /// the directory that lacks the template.
    @Test func chatWithoutTemplateNamesTheFileAndDirectory() throws {
        let directory = DataFixtures.root.appendingPathComponent("tokenizer-sp/legacy")
        let dataset = try DatasetTokenizer(modelDirectory: directory, vocabSize: 1 << 20, purpose: "test")
        let data = URL(fileURLWithPath: "/data/train.jsonl")
        #expect { try dataset.tokenize(.chat([ChatMessage(role: "user", content: "x")]), number: 3, file: data) } throws: { error in
            let text = "\(error)"
            return text.contains("/data/train.jsonl: example 3") && text.contains(directory.path) && text.contains("no chat template")
        }
    }

    @Test func llamaStyleSpansAreFoundByRendering() throws {
        let source = try String(contentsOf: ChatTemplateTests.llamaTemplates.appendingPathComponent("llama3.jinja"), encoding: .utf8)
        // The SP fixture tokenizer stands in for a Llama tokenizer: only the span logic is under test.
        let tokenizer = ExampleTokenizer(tokenizer: DataFixtures.metaspace, chatTemplate: try ChatTemplate(source), addBOS: false, addEOS: false)
        let messages = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello there")]
        let chat = try tokenizer.tokenizeChat(messages)
        let span = try #require(chat.assistantSpans.first)
        let scalars = Array(chat.text.unicodeScalars)
        #expect(String(String.UnicodeScalarView(scalars[span.characterRange])) == "Hello there<|eot_id|>")
        #expect(chat.assistantMask.reduce(0, +) == Int32(span.tokenRange.count))
        #expect(DataFixtures.metaspace.decode(Array(chat.inputIDs[span.tokenRange])).hasSuffix("there<|eot_id|>"))
    }

    @Test func splitIsDeterministicAndDisjoint() throws {
        let items = Array(0..<100)
        let first = try TrainingExample.split(items, evalFraction: 0.1, seed: 7)
        let second = try TrainingExample.split(items, evalFraction: 0.1, seed: 7)
        let other = try TrainingExample.split(items, evalFraction: 0.1, seed: 8)
        #expect(first.eval.count == 10 && first.train.count == 90)
        #expect(first.eval == second.eval && first.train == second.train)
        #expect(first.eval != other.eval)
        #expect(Set(first.eval).isDisjoint(with: first.train) && Set(first.eval + first.train) == Set(items))
        #expect(throws: DataError.invalidBatcherOptions(detail: "eval fraction 1.0 must be in [0, 1)")) {
            try TrainingExample.split(items, evalFraction: 1, seed: 0)
        }
    }
}

/// Pre-tokenized records: `{"input_ids": [...], "labels": [...]}` as Hugging Face writes them.
@Suite struct PreTokenizedDataTests {
    static let tokenizerDirectory = FixturePaths.url("tokenizer-sp/metaspace")

    @Test func aPreTokenizedRecordEqualsTheTextItCameFrom() throws {
        let dataset = try DatasetTokenizer(modelDirectory: Self.tokenizerDirectory, vocabSize: 2000, purpose: "test")
        let text = try dataset.tokenize([.promptCompletion(prompt: "one two", completion: " three four")], file: URL(fileURLWithPath: "x"))[0]
        let line = #"{"input_ids": \#(text.inputIDs), "labels": \#(text.labels)}"#
        let parsed = try TrainingExample.parse(jsonl: Data(line.utf8), fileName: "pre.jsonl")
        let again = try dataset.tokenize(parsed, file: URL(fileURLWithPath: "pre.jsonl"))[0]
        #expect(again == text)
        // Without labels every token trains.
        let plain = try TrainingExample.parse(jsonl: Data(#"{"input_ids": [5, 6, 7]}"#.utf8), fileName: "pre.jsonl")
        #expect(try dataset.tokenize(plain, file: URL(fileURLWithPath: "pre.jsonl"))[0] == TokenizedExample(inputIDs: [5, 6, 7], labels: [5, 6, 7]))
    }

    @Test func badRecordsNameTheLine() throws {
        func message(_ jsonl: String) -> String {
            do {
                let dataset = try DatasetTokenizer(modelDirectory: Self.tokenizerDirectory, vocabSize: 2000, purpose: "test")
                _ = try dataset.tokenize(try TrainingExample.parse(jsonl: Data(jsonl.utf8), fileName: "pre.jsonl"), file: URL(fileURLWithPath: "/d/pre.jsonl"))
                return ""
            } catch { return "\(error)" }
        }
        #expect(message("{\"text\": \"a\"}\n{\"input_ids\": [1, 2], \"labels\": [1]}").contains("pre.jsonl:2"))
        #expect(message(#"{"input_ids": [1, 2], "labels": [1, 3]}"#).contains("-100 or the id"))
        #expect(message(#"{"input_ids": [1, "x"]}"#).contains("array of integers"))
        let outside = message("{\"text\": \"a\"}\n\n{\"input_ids\": [1, 2500]}")
        #expect(outside.contains("pre.jsonl:3") && outside.contains("2500") && outside.contains("2000"), "\(outside)")
    }
}
