import Foundation

/// Runs the inputs in a child process (the same executable with `--worker`) so that a crash or a hang
/// costs one input, not the run: the child announces each input before it runs it, the parent records
/// the seed and index of one that never finished, keeps its files under `findings`, and starts a new
/// child after it.
public final class FuzzSupervisor {
    public struct Finding {
        public var index: Int
        public var kind: String  // "crash" or "hang"
        public var detail: String
    }

    public let executable: String
    public let workerArguments: [String]
    public let timeout: Double
    public private(set) var counts = FuzzCounts()
    public private(set) var findings: [Finding] = []
    public private(set) var vagueExamples: [String] = []

    private let lock = NSLock()
    private var started = -1, finished = -1
    private var startedAt = DispatchTime.now()
    private var pending = Data()

    /// Where the workers' stderr goes (crash backtraces), appended.
    public let workerLog: URL?

    /// Where workers make their scratch directory (`qlora-fuzz-<pid>`); a dead worker's is removed.
    public let scratchRoot: URL?

    public init(executable: String, workerArguments: [String], timeout: Double, workerLog: URL? = nil, scratchRoot: URL? = nil) {
        self.executable = executable
        self.workerLog = workerLog
        self.scratchRoot = scratchRoot
        self.workerArguments = workerArguments
        self.timeout = timeout
    }

    /// Runs inputs `0..<inputs`; `record(finding)` is called as each crash or hang is found.
    public func run(inputs: Int, progressEvery: Int, progress: (FuzzCounts) -> Void, record: (Finding) -> Void) throws {
        var next = 0
        var lastReport = 0
        while next < inputs {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = workerArguments + ["--worker", "--from", String(next), "--inputs", String(inputs)]
            let pipe = Pipe()
            process.standardOutput = pipe
            if let workerLog {
                if !FileManager.default.fileExists(atPath: workerLog.path) { FileManager.default.createFile(atPath: workerLog.path, contents: nil) }
                if let handle = try? FileHandle(forWritingTo: workerLog) {
                    _ = try? handle.seekToEnd()
                    process.standardError = handle
                }
            }
            lock.withLock { started = next - 1; finished = next - 1; pending = Data() }
            try process.run()
            let reader = Thread { [self] in
                let fd = pipe.fileHandleForReading.fileDescriptor
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    if n <= 0 { break }
                    consume(buffer[0..<n])
                }
            }
            reader.start()
            var hung = false
            while process.isRunning {
                usleep(100_000)
                let (s, f, at) = lock.withLock { (started, finished, startedAt) }
                if s > f, Double(DispatchTime.now().uptimeNanoseconds - at.uptimeNanoseconds) / 1e9 > timeout {
                    hung = true
                    kill(process.processIdentifier, SIGKILL)
                }
                if counts.inputs - lastReport >= progressEvery {
                    lastReport = counts.inputs
                    progress(counts)
                }
            }
            process.waitUntilExit()
            while !reader.isFinished { usleep(10_000) }
            if let scratchRoot { try? FileManager.default.removeItem(at: scratchRoot.appendingPathComponent("qlora-fuzz-\(process.processIdentifier)")) }
            let (s, f) = lock.withLock { (started, finished) }
            if process.terminationReason == .exit, process.terminationStatus == 0, f == inputs - 1 { break }
            guard s > f else {
                throw FuzzSupervisorError.workerFailed(status: process.terminationStatus, after: f)
            }
            let finding = Finding(index: s, kind: hung ? "hang" : "crash",
                                  detail: hung ? "no result after \(timeout) s" : "worker ended by \(process.terminationReason == .uncaughtSignal ? "signal" : "exit status") \(process.terminationStatus)")
            lock.withLock {
                counts.inputs += 1
                if hung { counts.hangs += 1 } else { counts.crashes += 1 }
            }
            findings.append(finding)
            record(finding)
            next = s + 1
        }
        progress(counts)
    }

    /// Worker lines: ">I" before input I, "=I L|R|V[ message]" after it.
    private func consume(_ bytes: ArraySlice<UInt8>) {
        lock.withLock {
            pending.append(contentsOf: bytes)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                guard let first = line.first else { continue }
                let rest = line.dropFirst()
                if first == ">" {
                    started = Int(rest) ?? started
                    startedAt = DispatchTime.now()
                } else if first == "=" {
                    let parts = rest.split(separator: " ", maxSplits: 2)
                    guard parts.count >= 2, let index = Int(parts[0]) else { continue }
                    finished = index
                    switch parts[1] {
                    case "L": counts.add(.loaded)
                    case "R": counts.add(.rejected)
                    default:
                        counts.add(.vague(""))
                        if vagueExamples.count < 20 { vagueExamples.append("input \(index): " + (parts.count > 2 ? String(parts[2]) : "")) }
                    }
                }
            }
        }
    }
}

public enum FuzzSupervisorError: Error, CustomStringConvertible {
    case workerFailed(status: Int32, after: Int)
    public var description: String {
        switch self {
        case .workerFailed(let status, let after):
            return "qlora-fuzz: the worker stopped (status \(status)) between inputs, after input \(after); run it with --in-process to see why"
        }
    }
}
