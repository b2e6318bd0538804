import Foundation
import QLoRA
import Testing

/// A full disk while `quantize`, `merge` and `train`'s checkpoints write: a clear error naming the file,
/// no partial temp file left, nothing half-written under the real name. The disk is made "full" with
/// RLIMIT_FSIZE (`ulimit -f`, SIGXFSZ ignored): a write past the limit fails with EFBIG as a write on a
/// full disk fails with ENOSPC, through the same code paths, and it needs neither root nor a mount.
/// (A small tmpfs gives the same results with ENOSPC; see docs/reliability.md.)
@Suite(.serialized) struct FullDiskTests {
    /// Runs `qlora <arguments>` with writes limited to `kilobytes`; returns (status, stderr).
    static func runLimited(kilobytes: Int, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        let quoted = ([KillResumeTests.binary!.path] + arguments).map { "'\($0)'" }.joined(separator: " ")
        // POSIX sh counts ulimit -f in 512-byte blocks.
        process.arguments = ["-c", "trap '' XFSZ; ulimit -f \(kilobytes * 2); exec \(quoted)"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    static func tempFiles(_ directory: URL) -> [String] {
        let all = (FileManager.default.enumerator(atPath: directory.path)?.allObjects as? [String]) ?? []
        return all.filter { ($0 as NSString).lastPathComponent.hasPrefix(".") || $0.contains(".tmp") || $0.contains(".partial") }
    }

    @Test func quantizeMergeAndCheckpointsOnAFullDisk() throws {
        guard KillResumeTests.binary != nil else {
            Issue.record("the qlora executable is not built next to the tests; run `swift build` first")
            return
        }
        let root = HardeningCommandTests.root
        let work = try HardeningCommandTests.temporary("full")
        defer { try? FileManager.default.removeItem(at: work) }
        let base = root.appendingPathComponent("Fixtures/tiny-llama/untied-fp32").path

        // quantize: the 4-bit model.safetensors (~0.4 MB) does not fit in 64 KB.
        let quantized = work.appendingPathComponent("quantized")
        let (qStatus, qError) = try Self.runLimited(kilobytes: 64, ["quantize", base, "--output", quantized.path])
        #expect(qStatus != 0)
        #expect(qError.contains(quantized.path) && (qError.contains("File too large") || qError.contains("No space")), "\(qError)")
        #expect(!FileManager.default.fileExists(atPath: quantized.appendingPathComponent("model.safetensors").path))
        #expect(Self.tempFiles(quantized).isEmpty, "\(Self.tempFiles(quantized))")

        // merge: the merged fp32 checkpoint (~1.6 MB) does not fit in 256 KB.
        let merged = work.appendingPathComponent("merged")
        let adapter = root.appendingPathComponent("Fixtures/tiny-llama-cases/untied_fp32/adapter_step1").path
        let (mStatus, mError) = try Self.runLimited(kilobytes: 256, ["merge", "--model", base, "--adapter", adapter, "--output", merged.path, "--dtype", "fp32"])
        #expect(mStatus != 0)
        #expect(mError.contains(merged.path) && (mError.contains("File too large") || mError.contains("No space")), "\(mError)")
        #expect(!FileManager.default.fileExists(atPath: merged.appendingPathComponent("model.safetensors").path))
        #expect(Self.tempFiles(merged).isEmpty, "\(Self.tempFiles(merged))")

        // train: the token file fits, a checkpoint's optimizer state does not.
        let (model, data) = try HardeningCommandTests.modelAndData()
        defer { try? FileManager.default.removeItem(at: model) }
        let output = work.appendingPathComponent("train")
        let (tStatus, tError) = try Self.runLimited(kilobytes: 48, ["train", "--model", model.path, "--data", data.path, "--output", output.path,
                                                                    "--steps", "3", "--save-every", "1", "--seq-len", "32", "--rank", "8",
                                                                    "--token-cache", work.appendingPathComponent("cache").path])
        #expect(tStatus != 0)
        #expect(tError.contains(output.appendingPathComponent("checkpoint-1").path) && (tError.contains("File too large") || tError.contains("No space")), "\(tError)")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("checkpoint-1").path))
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter_model.safetensors").path))
        #expect(Self.tempFiles(output).filter { $0 != OutputLock.fileName }.isEmpty, "\(Self.tempFiles(output))")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent(OutputLock.fileName).path))
    }

    /// Runs a command, returning its status.
    static func shell(_ command: String) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// A real full disk: a 512 KB tmpfs, when this process may mount one (root with CAP_SYS_ADMIN).
    static let tmpfs: URL? = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-tmpfs-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return shell("mount -t tmpfs -o size=512k tmpfs '\(url.path)'") == 0 ? url : nil
    }()

    @Test(.enabled(if: tmpfs != nil, "needs permission to mount a tmpfs"))
    func realENOSPCOnASmallTmpfs() throws {
        let disk = Self.tmpfs!
        defer { _ = Self.shell("umount '\(disk.path)'") }
        let root = HardeningCommandTests.root
        let base = root.appendingPathComponent("Fixtures/tiny-llama/untied-fp32").path
        let adapter = root.appendingPathComponent("Fixtures/tiny-llama-cases/untied_fp32/adapter_step1").path
        let (model, data) = try HardeningCommandTests.modelAndData()
        let cache = try HardeningCommandTests.temporary("cache")
        defer { try? FileManager.default.removeItem(at: model); try? FileManager.default.removeItem(at: cache) }
        let runs: [(String, [String])] = [
            ("quantized", ["quantize", base, "--output", disk.appendingPathComponent("quantized").path]),
            ("merged", ["merge", "--model", base, "--adapter", adapter, "--output", disk.appendingPathComponent("merged").path, "--dtype", "fp32"]),
            ("train", ["train", "--model", model.path, "--data", data.path, "--output", disk.appendingPathComponent("train").path, "--steps", "3",
                       "--save-every", "1", "--seq-len", "32", "--rank", "64", "--token-cache", cache.path]),
        ]
        for (name, arguments) in runs {
            let (status, errors) = try Self.runLimited(kilobytes: 1 << 30, arguments)
            let output = disk.appendingPathComponent(name)
            #expect(status != 0 && errors.contains(output.path) && errors.contains("No space left on device"), "\(name): \(errors)")
            #expect(Self.tempFiles(output).isEmpty, "\(name): \(Self.tempFiles(output))")
            #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("model.safetensors").path))
            try? FileManager.default.removeItem(at: output)
        }
    }
}
