import Foundation
@testable import QLoRAFuzz
import Testing

/// The short form of `qlora-fuzz` (docs/reliability.md): a slice of the boundary truncations and a few
/// thousand random mutations of every seed, in process; each must load or be refused with a message
/// that names the file. The long run (>= 1M inputs, release) is the same code.
@Suite struct FuzzHarnessTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    @Test func shortRunLoadsOrRefusesEveryInputByName() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-fuzz-test-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let runner = try FuzzRunner(fixtures: Self.fixtures, seed: 7, scratch: scratch)
        var counts = FuzzCounts()
        var vague: [String] = []
        var targets = Set<FuzzTarget>()
        let indexes = Array(stride(from: 0, to: runner.systematicCount, by: 17)) + Array(runner.systematicCount..<(runner.systematicCount + 2000))
        for index in indexes {
            let (input, outcome) = try runner.run(index)
            counts.add(outcome)
            targets.insert(input.target)
            if case .vague(let message) = outcome { vague.append("input \(index) \(input.target.rawValue) \(input.mutation): \(message)") }
        }
        #expect(vague.isEmpty, "\(vague.prefix(5))")
        #expect(counts.rejected > counts.inputs / 2 && counts.loaded > 0, "\(counts.summary)")
        #expect(targets == Set(FuzzTarget.allCases.filter { $0 != .tokenizerGGUF }) || targets == Set(FuzzTarget.allCases), "\(targets)")
    }

    @Test func inputsAreAFunctionOfSeedAndIndex() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-fuzz-test-\(getpid())-b")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let a = try FuzzRunner(fixtures: Self.fixtures, seed: 3, scratch: scratch.appendingPathComponent("a"))
        let b = try FuzzRunner(fixtures: Self.fixtures, seed: 3, scratch: scratch.appendingPathComponent("b"))
        for index in [0, 17, a.systematicCount, a.systematicCount + 12345] {
            let x = a.input(index), y = b.input(index)
            #expect(x.files.map(\.bytes) == y.files.map(\.bytes) && x.mutation == y.mutation)
        }
        #expect(a.input(a.systematicCount + 1).files.map(\.bytes) != a.input(a.systematicCount + 2).files.map(\.bytes))
    }

    /// The supervisor survives a worker that crashes or hangs: it records the input, starts a new worker
    /// after it and finishes the count. The worker here is a shell script speaking the worker protocol.
    @Test func supervisorRecordsCrashAndHangAndGoesOn() throws {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("fake-worker-\(getpid()).sh")
        defer { try? FileManager.default.removeItem(at: script) }
        try """
        #!/bin/sh
        while [ "$1" != "--from" ]; do shift; done
        i=$2; n=$4
        while [ $i -lt $n ]; do
          echo ">$i"
          [ $i -eq 3 ] && kill -SEGV $$
          [ $i -eq 6 ] && sleep 30
          echo "=$i R"
          i=$((i + 1))
        done
        """.write(to: script, atomically: true, encoding: .utf8)
        chmod(script.path, 0o755)
        let supervisor = FuzzSupervisor(executable: script.path, workerArguments: ["--seed", "1"], timeout: 1)
        var found: [FuzzSupervisor.Finding] = []
        try supervisor.run(inputs: 10, progressEvery: 1000, progress: { _ in }, record: { found.append($0) })
        #expect(found.map(\.index) == [3, 6] && found.map(\.kind) == ["crash", "hang"])
        #expect(supervisor.counts.inputs == 10 && supervisor.counts.rejected == 8 && supervisor.counts.crashes == 1 && supervisor.counts.hangs == 1)
    }

    /// A header rewrite aimed at one tensor must be refused naming it (any tensor, where the fault can
    /// surface at a neighbour); stacked mutations and other targets are judged by the file name only.
    @Test func headerRewritesExpectTheirTensorNamed() {
        func input(_ mutation: String, _ target: FuzzTarget = .safetensorsFile) -> FuzzInput {
            FuzzInput(index: 0, target: target, seedLabel: "", files: [], mutatedFile: "input.safetensors", mutation: mutation)
        }
        #expect(FuzzRunner.faultyTensor(input("header: 'a.weight' reversed offsets"))! == ("a.weight", true))
        #expect(FuzzRunner.faultyTensor(input("header: 'a.weight' offsets one past"))! == ("a.weight", false))
        #expect(FuzzRunner.faultyTensor(input("header: 'a.weight' metadata changed")) == nil)
        #expect(FuzzRunner.faultyTensor(input("header: 'a.weight' reversed offsets + flip 2 bits")) == nil)
        #expect(FuzzRunner.faultyTensor(input("header: 'a.weight' reversed offsets", .adapter)) == nil)
    }
}
