import Foundation
import QLoRA
import SafeTensors
import Testing

/// `kill -9` at random moments of `qlora train` (the built binary, as a subprocess), then `--resume`
/// until it finishes: the losses and the final adapter equal an uninterrupted run's bit for bit, and
/// after every kill each file in the output is complete (docs/reliability.md).
@Suite(.serialized) struct KillResumeTests {
    static var binary: URL? {
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("qlora"),
                          HardeningCommandTests.root.appendingPathComponent(".build/debug/qlora")]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static func start(_ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = binary!
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// (step, loss, grad_norm) of each step line, as written (the text is the bits: shortest round-trip).
    static func stepLines(_ output: URL) throws -> [String] {
        let text = try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").compactMap { line in
            let value = try JSONValue.parse(data: Data(line.utf8))
            guard let step = value["step"]?.intValue, let loss = value["loss"] else { return nil }
            return "\(step) \(loss) \(value["grad_norm"].map { "\($0)" } ?? "-")"
        }
    }

    /// The newest step in metrics.jsonl (0 when none), ignoring a line being written.
    static func lastLoggedStep(_ output: URL) -> Int {
        guard let text = try? String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").compactMap { try? JSONValue.parse(data: Data($0.utf8))["step"]?.intValue }.max() ?? 0
    }

    /// Every kept file is whole: checkpoints load, the adapter opens, metrics lines parse.
    static func checkComplete(_ output: URL) throws {
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: output.path) {
            let url = output.appendingPathComponent(name)
            if name.hasPrefix("checkpoint-") {
                for file in ["adapter_config.json", "adapter_model.safetensors", TrainingCheckpoint.optimizerFile, TrainingCheckpoint.stateFile] {
                    #expect(fm.fileExists(atPath: url.appendingPathComponent(file).path), "\(name)/\(file) missing")
                }
                _ = try SafeTensorsFile(path: url.appendingPathComponent("adapter_model.safetensors").path)
                _ = try SafeTensorsFile(path: url.appendingPathComponent(TrainingCheckpoint.optimizerFile).path)
                _ = try JSONValue.parse(data: try Data(contentsOf: url.appendingPathComponent(TrainingCheckpoint.stateFile)))
            } else if name == "adapter_model.safetensors" {
                _ = try SafeTensorsFile(path: url.path)
            } else if name == "adapter_config.json" {
                _ = try JSONValue.parse(data: try Data(contentsOf: url))
            } else if name == "metrics.jsonl" {
                let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                // Each line is written whole by one write(2); only a run cut mid-line could leave a tail, which --resume drops.
                for line in lines.dropLast() { _ = try JSONValue.parse(data: Data(line.utf8)) }
            }
        }
    }

    @Test func killedAndResumedRunEqualsAnUninterruptedOne() throws {
        guard Self.binary != nil else {
            Issue.record("the qlora executable is not built next to the tests; run `swift build` first")
            return
        }
        let (model, data) = try HardeningCommandTests.modelAndData()
        let work = try HardeningCommandTests.temporary("kill")
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: model) }
        func arguments(_ output: URL, resume: Bool) -> [String] {
            ["train", "--model", model.path, "--data", data.path, "--output", output.path, "--steps", "24", "--save-every", "1",
             "--seq-len", "32", "--rank", "4", "--lr", "3e-3", "--token-cache", work.appendingPathComponent("cache").path] + (resume ? ["--resume"] : [])
        }
        let reference = work.appendingPathComponent("reference")
        let uninterrupted = try Self.start(arguments(reference, resume: false))
        let began = Date()
        uninterrupted.waitUntilExit()
        let runSeconds = Date().timeIntervalSince(began)
        #expect(uninterrupted.terminationStatus == 0)

        let output = work.appendingPathComponent("killed")
        var generator = SeededGenerator(seed: 20261208)
        // Kill points by progress, not by clock (the machine may be busy): once while loading, then
        // just after each of these steps is logged (often while its checkpoint is being written).
        let targets = Array(Set((0..<6).map { _ in Int.random(in: 1...23, using: &generator) })).sorted()
        var kills = 0
        for (attempt, target) in ([0] + targets).enumerated() {
            let process = try Self.start(arguments(output, resume: attempt > 0))
            let deadline = Date().addingTimeInterval(max(30, 10 * runSeconds))
            while target > 0, process.isRunning, Date() < deadline, Self.lastLoggedStep(output) < target {
                usleep(2_000)
            }
            usleep(UInt32.random(in: 0...(target == 0 ? 60_000 : 15_000), using: &generator))
            guard process.isRunning else { process.waitUntilExit(); continue }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            kills += 1
            try Self.checkComplete(output)
        }
        print("kill-resume: \(kills) kills (while loading, then after steps \(targets))")
        let last = try Self.start(arguments(output, resume: true))
        last.waitUntilExit()
        #expect(last.terminationStatus == 0)
        #expect(kills >= 3, "only \(kills) kills landed; the run is too short to interrupt")
        try Self.checkComplete(output)
        #expect(try Self.stepLines(output) == (try Self.stepLines(reference)))
        #expect(try Self.stepLines(output).count == 24)
        for file in ["adapter_model.safetensors", "adapter_config.json"] {
            #expect(try Data(contentsOf: output.appendingPathComponent(file)) == (try Data(contentsOf: reference.appendingPathComponent(file))), "\(file)")
        }
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent(OutputLock.fileName).path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}
