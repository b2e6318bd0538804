import Foundation
import QLoRAFuzz

/// qlora-fuzz: mutates valid inputs (safetensors, GGUF, config.json, tokenizer.json, adapters, JSONL,
/// token files) and feeds them to every loader; each input must load or throw an error that names the
/// file. By default a supervisor runs the inputs in child processes so a crash or hang is recorded
/// (seed + index, files kept under --findings) and the run goes on.
let usage = """
Usage: qlora-fuzz [--inputs N] [--seed S] [--fixtures DIR] [--targets LIST] [--timeout SEC]
                  [--findings DIR] [--scratch DIR] [--memory-limit GB] [--in-process] [--reproduce I] [--list]

  --inputs N        inputs to run (default 10000); the first ones truncate every seed file at each
                    structural boundary, the rest are random mutations
  --seed S          run seed (default 1); input I of seed S is always the same bytes
  --fixtures DIR    the repository's Fixtures/ (default ./Fixtures)
  --targets LIST    comma-separated subset of the targets (see --list)
  --timeout SEC     an input that runs longer is a hang (default 30)
  --findings DIR    where crashing / hanging inputs are kept (default ./fuzz-findings)
  --scratch DIR     where inputs are written (default /dev/shm, else the temp directory)
  --memory-limit GB address-space limit of the worker (default 8): a runaway allocation is a crash
  --in-process      no child process (a crash ends the run)
  --reproduce I     run input I alone, in process, print what it is and what happened, keep its files
  --list            print the targets and seeds
"""

setvbuf(stdout, nil, _IOLBF, 0)  // progress lines as they happen, also into a log file
var options: [String: String] = [:]
var flags = Set<String>()
var argv = Array(CommandLine.arguments.dropFirst())
while !argv.isEmpty {
    let arg = argv.removeFirst()
    guard arg.hasPrefix("--") else { FileHandle.standardError.write(Data("qlora-fuzz: unexpected '\(arg)'\n\(usage)\n".utf8)); exit(2) }
    let name = String(arg.dropFirst(2))
    if ["in-process", "list", "worker", "help"].contains(name) { flags.insert(name); continue }
    guard !argv.isEmpty else { FileHandle.standardError.write(Data("qlora-fuzz: --\(name) needs a value\n".utf8)); exit(2) }
    options[name] = argv.removeFirst()
}
if flags.contains("help") { print(usage); exit(0) }

func int(_ name: String, _ fallback: Int) -> Int {
    guard let text = options[name] else { return fallback }
    guard let value = Int(text), value >= 0 else { FileHandle.standardError.write(Data("qlora-fuzz: --\(name) \(text) is not a non-negative integer\n".utf8)); exit(2) }
    return value
}

let inputs = int("inputs", 10_000)
let seed = UInt64(int("seed", 1))
let fixtures = URL(fileURLWithPath: options["fixtures"] ?? "Fixtures")
var targets = FuzzTarget.allCases
if let list = options["targets"] {
    targets = list.split(separator: ",").compactMap { FuzzTarget(rawValue: String($0)) }
    guard targets.count == list.split(separator: ",").count else {
        FileHandle.standardError.write(Data("qlora-fuzz: --targets: known targets are \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
}
let scratchRoot = options["scratch"] ?? (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())
let scratch = URL(fileURLWithPath: scratchRoot).appendingPathComponent("qlora-fuzz-\(getpid())")
/// Exits after removing this process' scratch directory (top-level defers do not run on exit()).
func finish(_ code: Int32) -> Never {
    try? FileManager.default.removeItem(at: scratch)
    exit(code)
}

func write(_ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Foundation.write(1, $0.baseAddress! + done, $0.count - done) }
        if n <= 0 { break }
        done += n
    }
}

do {
    if flags.contains("worker") {
        var limit = rlimit(rlim_cur: rlim_t(int("memory-limit", 8)) << 30, rlim_max: rlim_t(int("memory-limit", 8)) << 30)
        setrlimit(Int32(RLIMIT_AS.rawValue), &limit)
        let runner = try FuzzRunner(fixtures: fixtures, seed: seed, scratch: scratch, targets: targets)
        for index in int("from", 0)..<inputs {
            write(">\(index)\n")
            let (_, outcome) = try runner.run(index)
            switch outcome {
            case .loaded: write("=\(index) L\n")
            case .rejected: write("=\(index) R\n")
            case .vague(let message):
                write("=\(index) V \(message.prefix(400).replacingOccurrences(of: "\n", with: " "))\n")
            }
        }
        finish(0)
    }
    let runner = try FuzzRunner(fixtures: fixtures, seed: seed, scratch: scratch, targets: targets)
    if flags.contains("list") {
        print("targets: \(targets.map(\.rawValue).joined(separator: ", "))")
        for s in runner.seeds where targets.contains(s.target) { print("  \(s.target.rawValue): \(s.label) (\(s.files.map(\.name).joined(separator: ", ")))") }
        print("systematic truncations: \(runner.systematicCount)")
        finish(0)
    }
    let findings = URL(fileURLWithPath: options["findings"] ?? "fuzz-findings")
    func keep(_ index: Int, kind: String, detail: String) throws -> URL {
        let input = runner.input(index)
        let directory = findings.appendingPathComponent("seed-\(seed)-input-\(index)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try runner.write(input, to: directory)
        let note = "\(kind): \(detail)\ntarget \(input.target.rawValue), seed file \(input.seedLabel), mutated \(input.mutatedFile): \(input.mutation)\nreproduce: qlora-fuzz --seed \(seed) --reproduce \(index)\n"
        try Data(note.utf8).write(to: findings.appendingPathComponent("seed-\(seed)-input-\(index).txt"))
        return directory
    }
    if let text = options["reproduce"], let index = Int(text) {
        let input = runner.input(index)
        print("input \(index): target \(input.target.rawValue), seed file \(input.seedLabel), mutated \(input.mutatedFile): \(input.mutation)")
        let directory = try keep(index, kind: "reproduced", detail: "by hand")
        print("files in \(directory.path)")
        let (_, outcome) = try runner.run(index)
        switch outcome {
        case .loaded: print("loaded")
        case .rejected, .vague: print("rejected: \(outcome)")
        }
        finish(0)
    }
    let began = Date()
    let command = CommandLine.arguments.joined(separator: " ")
    print("qlora-fuzz: \(inputs) inputs, seed \(seed), \(runner.systematicCount) systematic truncations first; targets \(targets.map(\.rawValue).joined(separator: ","))")
    if flags.contains("in-process") {
        var counts = FuzzCounts()
        var vague: [String] = []
        for index in 0..<inputs {
            let (input, outcome) = try runner.run(index)
            counts.add(outcome)
            if case .vague(let message) = outcome, vague.count < 20 { vague.append("input \(index) (\(input.target.rawValue), \(input.mutation)): \(message)") }
            if (index + 1) % 10_000 == 0 { print("  \(counts.summary)") }
        }
        print(counts.summary)
        for v in vague { print("  vague: \(v)") }
        finish(counts.vague == 0 ? 0 : 1)
    }
    var passOn = ["--seed", String(seed), "--fixtures", fixtures.path, "--scratch", scratchRoot, "--memory-limit", String(int("memory-limit", 8))]
    if let list = options["targets"] { passOn += ["--targets", list] }
    let supervisor = FuzzSupervisor(executable: Bundle.main.executablePath ?? CommandLine.arguments[0], workerArguments: passOn, timeout: Double(int("timeout", 30)),
                                    workerLog: findings.appendingPathComponent("worker-stderr.log"),
                                    scratchRoot: URL(fileURLWithPath: scratchRoot))
    try FileManager.default.createDirectory(at: findings, withIntermediateDirectories: true)
    try supervisor.run(inputs: inputs, progressEvery: max(1000, inputs / 50), progress: { counts in
        print(String(format: "  [%.0f s] ", Date().timeIntervalSince(began)) + counts.summary)
    }, record: { finding in
        let kept = (try? keep(finding.index, kind: finding.kind, detail: finding.detail))?.path ?? "(could not keep the files)"
        print("  \(finding.kind.uppercased()) at input \(finding.index) (seed \(seed)): \(finding.detail); files in \(kept)")
    })
    let counts = supervisor.counts
    print(String(format: "done in %.0f s: ", Date().timeIntervalSince(began)) + counts.summary)
    print("command: \(command)")
    for v in supervisor.vagueExamples { print("  vague: \(v)") }
    finish(counts.crashes == 0 && counts.hangs == 0 && counts.vague == 0 ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    finish(1)
}
