import Foundation
import Testing
@testable import QLoRACLI

/// Wrong paths are the first error (before OpenBLAS or any weight is loaded), naming the option and path.
@Suite struct PathCheckTests {
    static func message(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "" } catch { return "\(error)" }
    }

    @Test func aMissingModelOrDataFileIsNamed() throws {
        let train = Self.message { try TrainCommand.run(["--model", "/nonexistent/model", "--data", "/nonexistent/d.jsonl", "--output", "/tmp/x"]) }
        #expect(train.contains("--model /nonexistent/model") && train.contains("no such directory"), "\(train)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-paths-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let noConfig = Self.message { try GenerateCommand.parse(["--model", dir.path, "--prompt", "x"]) }
        #expect(noConfig.contains("has no config.json"), "\(noConfig)")
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        let noData = Self.message { try TrainCommand.run(["--model", dir.path, "--data", dir.path + "/missing.jsonl", "--output", "/tmp/x"]) }
        #expect(noData.contains("--data") && noData.contains("missing.jsonl"), "\(noData)")
        let evalData = Self.message { try EvalCommand.parse(["--model", dir.path, "--data", dir.path]) }
        #expect(evalData.contains("no such readable file"), "\(evalData)")
    }

    @Test func anAdapterFlagConflictNamesBothValues() throws {
        let dir = try GenerateMergeCommandTests.makeModelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("d.jsonl")
        try Data(#"{"text": "one two three"}"#.utf8).write(to: data)
        let conflict = Self.message {
            try TrainCommand.run(["--model", dir.path, "--data", data.path, "--output", dir.appendingPathComponent("o").path,
                                  "--adapter", dir.appendingPathComponent("adapter").path, "--rank", "32"])
        }
        #expect(conflict.contains("--rank 32") && conflict.contains("adapter's 4"), "\(conflict)")
    }
}
