import Foundation
import Testing
import QLoRA
@testable import QLoRACLI

/// `qlora generate --batch-file`: each request decoded in the mixed batch gives the tokens it gets alone.
@Suite(.serialized) struct GenerateBatchTests {
    @Test func eachRequestEqualsItsOwnRun() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("requests.jsonl")
        try Data([#"{"prompt": "one two three", "adapter": "tuned"}"#, #"{"prompt": "four five"}"#,
                  #"{"chat": "hello there", "adapter": "tuned"}"#, ""].joined(separator: "\n").utf8).write(to: file)
        let common = ["--model", dir.path, "--adapter", "tuned=\(dir.path)/adapter", "--max-new-tokens", "6"]
        var lines: [String] = []
        let batched = try GenerateCommand.generateBatch(try GenerateCommand.parse(common + ["--batch-file", file.path]),
                                                        output: { lines.append($0) }, status: { _ in })
        let alone: [[String]] = [["--prompt", "one two three", "--use", "tuned"], ["--prompt", "four five"],
                                 ["--chat", "hello there", "--use", "tuned"]]
        for (index, extra) in alone.enumerated() {
            let arguments = extra.contains("--use") ? common + extra : ["--model", dir.path, "--max-new-tokens", "6"] + extra
            let tokens = try GenerateCommand.generate(try GenerateCommand.parse(arguments), output: { _ in }, status: { _ in })
            #expect(batched[index] == tokens, "request \(index): \(batched[index]) vs \(tokens)")
        }
        #expect(lines.count == 3)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        #expect(first["adapter"] as? String == "tuned" && first["completion"] is String)

        try Data(#"{"prompt": "x", "adapter": "missing"}"#.utf8).write(to: file)
        #expect(throws: CLIError.self) {
            _ = try GenerateCommand.generateBatch(try GenerateCommand.parse(common + ["--batch-file", file.path]), output: { _ in }, status: { _ in })
        }
    }
}
