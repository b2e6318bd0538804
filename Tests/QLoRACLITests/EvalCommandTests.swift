import Foundation
import Testing
import QLoRA
@testable import QLoRACLI

/// `qlora eval` end to end on a temp model directory (GenerateMergeCommandTests' random Llama, its
/// SentencePiece tokenizer and a non-zero adapter).
@Suite(.serialized) struct EvalCommandTests {
    static func dataFile(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("valid.jsonl")
        let lines = [#"{"text": "the quick brown fox jumps over the lazy dog"}"#,
                     #"{"prompt": "one two three", "completion": " four five six seven"}"#,
                     #"{"text": "a much longer record, long enough that a short sequence length cuts it somewhere"}"#]
        try Data(lines.joined(separator: "\n").utf8).write(to: url)
        return url
    }

    @Test func evaluatesTheBaseAndEachAdapterAsTheLibraryDoes() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.dataFile(in: dir)
        let options = try EvalCommand.parse(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--adapter", "tuned=\(dir.path)/adapter", "--base",
                                             "--quant", "none", "--base-dtype", "fp32", "--compute-dtype", "fp32", "--seq-len", "64"])
        let rows = try EvalCommand.evaluate(options, status: { _ in })
        #expect(rows.map(\.adapter) == [nil, "tuned"])

        let model = try LlamaLoader.load(directory: dir, format: .dense32, precision: .fp32)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: model.config.vocabSize, purpose: "test")
        let records = try dataset.tokenize(try TrainingExample.load(jsonl: data), file: data)
        let expected = try Evaluation.run(model: model, lora: nil, records: records, options: .init(seqLen: 64),
                                          padTokenID: dataset.padTokenID, separatorTokenID: nil)
        #expect(rows[0].result.lossSum == expected.lossSum && rows[0].result.tokens == expected.tokens && rows[0].result.records == 3)
        // Only the completion of the prompt/completion record trains: fewer tokens than all ids.
        #expect(rows[0].result.tokens < records.map { $0.inputIDs.count - 1 }.reduce(0, +))
        #expect(abs(rows[1].result.loss - rows[0].result.loss) > 1e-4)

        let json = try JSONSerialization.jsonObject(with: Data(EvalCommand.json(rows).utf8)) as! [[String: Any]]
        #expect(json.count == 2 && json[1]["adapter"] as? String == "tuned")
        for key in ["loss", "perplexity", "tokens", "records"] { #expect(json[0][key] != nil, "missing \(key)") }
        #expect(EvalCommand.table(rows).contains("tuned"))
    }

    @Test func packingAndTruncation() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.dataFile(in: dir)
        let short = try EvalCommand.evaluate(try EvalCommand.parse(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--seq-len", "8"]), status: { _ in })
        #expect(short.count == 1 && short[0].result.truncatedRecords >= 1)
        let packed = try EvalCommand.evaluate(try EvalCommand.parse(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--packing", "--batch", "2"]),
                                              status: { _ in })
        #expect(packed[0].result.tokens > 0 && packed[0].result.loss.isFinite)
    }

    @Test func badInputIsNamed() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.dataFile(in: dir)
        func message(_ arguments: [String]) -> String {
            do { _ = try EvalCommand.evaluate(try EvalCommand.parse(arguments), status: { _ in }); return "" } catch { return "\(error)" }
        }
        #expect(message(["--model", dir.path]).contains("--data"))
        #expect(message(["--model", dir.path, "--data", dir.path + "/missing.jsonl"]).contains("missing.jsonl"))
        #expect(message(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--adapter", dir.path]).contains("adapter_config.json"))
        #expect(message(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--seq-len", "1"]).contains("seq-len"))
    }

    @Test func severalAdaptersAreNamedPickedAndCombined() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: dir.appendingPathComponent("adapter"), to: dir.appendingPathComponent("second"))
        let data = try Self.dataFile(in: dir)
        let list = "one=\(dir.path)/adapter,two=\(dir.path)/second"
        let combined = dir.appendingPathComponent("combined")
        let rows = try EvalCommand.evaluate(try EvalCommand.parse(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--adapter", list,
                                                                   "--weights", "one=0.5,two=0.5", "--save-combined", combined.path]),
                                            status: { _ in })
        #expect(rows.map(\.adapter) == ["one", "two", "combined"])
        #expect(rows[0].result.lossSum == rows[1].result.lossSum)   // the same adapter twice
        // PEFT gives the combination the rank of its inputs and lora_alpha = r.
        let saved = try PEFTAdapterIO.loadConfig(directory: combined)
        #expect(saved.r == 4 && saved.loraAlpha == 4)
        let picked = try EvalCommand.evaluate(try EvalCommand.parse(["--model", dir.path, "--data", data.path, "--token-cache", dir.path + "/tokens", "--adapter", list, "--use", "two"]),
                                              status: { _ in })
        #expect(picked.map(\.adapter) == ["two"])

        func message(_ arguments: [String]) -> String {
            do { _ = try GenerateCommand.generate(try GenerateCommand.parse(arguments), output: { _ in }, status: { _ in }); return "" }
            catch { return "\(error)" }
        }
        let generate = ["--model", dir.path, "--prompt", "one two", "--max-new-tokens", "2", "--adapter", list]
        #expect(message(generate).contains("--use NAME"))
        #expect(message(generate + ["--use", "three"]).contains("loaded: one, two"))
        #expect(message(generate + ["--weights", "one=1,zero=2"]).contains("zero"))
        #expect(message(generate + ["--use", "one"]) == "")
        #expect(message(generate + ["--weights", "one=0.5,two=0.5", "--combination", "cat"]) == "")
    }
}
