import Foundation
import QLoRA
import SafeTensors
import Testing
@testable import QLoRACLI

/// docs/reliability.md: bad numeric flags are refused up front by name, a diverging run stops without
/// writing a NaN adapter, and one output directory takes one run at a time.
@Suite(.serialized) struct HardeningCommandTests {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { url.deleteLastPathComponent() }
        return url
    }()

    static func temporary(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-hard-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A random Llama (vocab 2000) with the SentencePiece-style tokenizer, and a small dataset.
    static func modelAndData() throws -> (model: URL, data: URL) {
        let dir = try temporary("model")
        var config = LlamaConfig(vocabSize: 2000, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 256)
        config.bosTokenID = 1
        config.eosTokenIDs = [2]
        try LlamaWriter.save(try LlamaLoader.random(config: config, format: .dense32, precision: .fp32, seed: 3, std: 0.05), to: dir)
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: root.appendingPathComponent("Fixtures/tokenizer-sp/metaspace/\(file)"), to: dir.appendingPathComponent(file))
        }
        let data = dir.appendingPathComponent("train.jsonl")
        try (0..<16).map { #"{"text": "The quick brown fox jumps over the lazy dog number \#($0)."}"# }.joined(separator: "\n")
            .write(to: data, atomically: true, encoding: .utf8)
        return (dir, data)
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return String(describing: error) }
    }

    @Test func badNumericFlagsAreRefusedByName() throws {
        let model = Self.root.appendingPathComponent("Fixtures/tiny-llama/untied-fp32").path
        let flags = try Self.temporary("flags")
        defer { try? FileManager.default.removeItem(at: flags) }
        let data = flags.appendingPathComponent("d.jsonl")
        try #"{"text": "x"}"#.write(to: data, atomically: true, encoding: .utf8)
        let cases: [(String, String)] = [
            ("lr", "nan"), ("lr", "-1e-4"), ("lr", "0"), ("lr", "inf"), ("rank", "0"), ("rank", "-4"), ("rank", "1000000"),
            ("alpha", "nan"), ("alpha", "1e300"), ("alpha", "0"), ("steps", "0"), ("steps", "-5"), ("batch", "0"),
            ("seq-len", "1"), ("seq-len", "1000000000000000"), ("grad-accum", "0"), ("save-every", "0"), ("eval-every", "-1"),
            ("seed", "-1"), ("max-grad-norm", "nan"), ("warmup", "-1"), ("dropout", "1.5"), ("eval-fraction", "2"),
            ("weight-decay", "-0.1"), ("epochs", "0"),
        ]
        for (flag, value) in cases {
            let output = flags.appendingPathComponent("out-\(flag)-\(value)")
            try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
            let m = Self.message { _ = try TrainCommand.run(["--model", model, "--data", data.path, "--output", output.path, "--\(flag)", value]) }
            #expect(m.contains("--\(flag) '\(value)'"), "--\(flag) \(value): \(m)")
            // Refused before anything was written.
            #expect((try FileManager.default.contentsOfDirectory(atPath: output.path)).isEmpty)
        }
        // Tokens per micro-batch beyond what the memory arithmetic holds.
        let m = Self.message { _ = try TrainCommand.run(["--model", model, "--data", data.path, "--output", "/nonexistent", "--batch", "65536", "--seq-len", "16777216"]) }
        #expect(m.contains("--batch") && m.contains("tokens per micro-batch"), "\(m)")
    }

    @Test func memoryWithAbsurdSizesReportsTheFlag() throws {
        let config = Self.root.appendingPathComponent("Fixtures/configs/llama-3-70b.json").path
        for (flag, value) in [("seq-len", "1000000000000000"), ("seq-len", "10^15"), ("batch", "99999999999")] {
            let m = Self.message { _ = try MemoryCommand.run([config, "--\(flag)", value]) }
            #expect(m.contains(flag) && m.contains(value), "\(m)")
        }
        // The largest accepted shape still plans without overflow.
        _ = try MemoryCommand.run([config, "--seq-len", "16777216", "--batch", "1"])
    }

    /// --lr 1e30 makes step 1's update ~1e30 per weight: a later step's loss is not finite. The run stops
    /// at that step, names the last checkpoint, and the output holds no adapter; checkpoints stay finite.
    @Test func divergingRunStopsNamingTheStepAndCheckpoint() throws {
        let (model, data) = try Self.modelAndData()
        let output = try Self.temporary("diverge")
        defer { try? FileManager.default.removeItem(at: model); try? FileManager.default.removeItem(at: output) }
        let m = Self.message {
            _ = try TrainCommand.run(["--model", model.path, "--data", data.path, "--output", output.path, "--lr", "1e30", "--steps", "8",
                                      "--save-every", "1", "--seq-len", "32", "--rank", "4", "--quant", "none", "--base-dtype", "fp32",
                                      "--max-grad-norm", "0", "--token-cache", output.appendingPathComponent("cache").path])
        }
        #expect(m.contains("training diverged at step"), "\(m)")
        let step = Int(m.split(separator: " ").drop { $0 != "step" }.dropFirst().first?.dropLast() ?? "") ?? -1
        #expect(step >= 2, "\(m)")
        #expect(m.contains(output.appendingPathComponent("checkpoint-\(step - 1)").path), "\(m)")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter_model.safetensors").path))
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("checkpoint-\(step)").path))
        let saved = try SafeTensorsFile(path: output.appendingPathComponent("checkpoint-\(step - 1)/adapter_model.safetensors").path)
        for name in saved.names { #expect(try saved.floats(name).allSatisfy(\.isFinite)) }
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent(OutputLock.fileName).path))
    }

    @Test func nonFiniteAdapterIsNeverWritten() throws {
        let config = LlamaConfig(vocabSize: 32, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, numKeyValueHeads: 2)
        let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 2, loraAlpha: 4))
        let output = try Self.temporary("nan")
        defer { try? FileManager.default.removeItem(at: output) }
        try PEFTAdapterIO.save(adapters, to: output)
        let before = try Data(contentsOf: output.appendingPathComponent("adapter_model.safetensors"))
        let entry = adapters.parameters.entries[0]
        var values = adapters.parameters.values(entry)
        values[1] = .nan
        adapters.parameters.setValues(entry, values)
        let m = Self.message { try PEFTAdapterIO.save(adapters, to: output) }
        #expect(m.contains("non-finite") && m.contains(entry.key))
        #expect(try Data(contentsOf: output.appendingPathComponent("adapter_model.safetensors")) == before)
    }

    @Test func secondRunIntoAnOutputInUseIsRefusedAndStaleLocksAreTakenOver() throws {
        let (model, data) = try Self.modelAndData()
        let output = try Self.temporary("lock")
        defer { try? FileManager.default.removeItem(at: model); try? FileManager.default.removeItem(at: output) }
        let lock = output.appendingPathComponent(OutputLock.fileName)
        let arguments = ["--model", model.path, "--data", data.path, "--output", output.path, "--steps", "2", "--seq-len", "32", "--rank", "4",
                         "--token-cache", output.appendingPathComponent("cache").path]
        // A live owner: a sleeping process' pid.
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        defer { kill(sleeper.processIdentifier, SIGKILL) }
        try "\(sleeper.processIdentifier)\n".write(to: lock, atomically: true, encoding: .utf8)
        let m = Self.message { _ = try TrainCommand.run(arguments) }
        #expect(m.contains("in use by another qlora train run (pid \(sleeper.processIdentifier))") && m.contains(lock.path), "\(m)")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter_model.safetensors").path))
        // A dead owner (the sleeper, killed) and a temp file a killed run left: taken over and removed.
        kill(sleeper.processIdentifier, SIGKILL)
        sleeper.waitUntilExit()
        let leftover = output.appendingPathComponent(".adapter_model.safetensors.tmp-99999-1")
        try Data([1, 2, 3]).write(to: leftover)
        _ = try TrainCommand.run(arguments)
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter_model.safetensors").path))
        #expect(!FileManager.default.fileExists(atPath: leftover.path))
        #expect(!FileManager.default.fileExists(atPath: lock.path))
    }
}
