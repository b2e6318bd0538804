import Foundation

/// Keeps two `train` runs out of one output directory: `.qlora-train.lock` holds the owner's pid. A
/// lock whose pid is no longer running (a run killed with -9, a crash) is stale and taken over, and the
/// temporary files such a run left behind are removed, since no live run can be writing them.
public final class OutputLock {
    public static let fileName = ".qlora-train.lock"

    public let url: URL
    private var held = true

    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        url = directory.appendingPathComponent(Self.fileName)
        for attempt in 0..<2 {
            let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 {
                let text = Array("\(getpid())\n".utf8)
                let written = text.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                let synced = fsync(fd) == 0
                close(fd)
                guard written == text.count, synced else {
                    unlink(url.path)
                    throw RuntimeError.writeFailed(path: url.path, reason: String(cString: strerror(errno)))
                }
                Self.removeLeftovers(in: directory)
                return
            }
            guard errno == EEXIST else { throw RuntimeError.writeFailed(path: url.path, reason: String(cString: strerror(errno))) }
            let owner = (try? String(contentsOf: url, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if let owner, owner > 0, Self.isRunning(owner) {
                throw RuntimeError.outputInUse(path: directory.path, pid: owner, lock: url.path)
            }
            // Stale (dead pid, or unreadable: a run killed while writing the lock): take it over once; a
            // second EEXIST means another run took it first.
            if attempt == 0 { unlink(url.path) }
        }
        throw RuntimeError.outputInUse(path: directory.path, pid: nil, lock: url.path)
    }

    deinit { release() }

    /// Removes the lock (only while it still holds this process' pid).
    public func release() {
        guard held else { return }
        held = false
        if let text = try? String(contentsOf: url, encoding: .utf8), Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) == getpid() {
            unlink(url.path)
        }
    }

    static func isRunning(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno == EPERM }

    /// Temp files and directories of earlier runs: `.<name>.tmp-<pid>...` (AtomicFile, SafeTensorsWriter,
    /// TrainingCheckpoint). Only called while holding the lock.
    static func removeLeftovers(in directory: URL) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        where name.hasPrefix(".") && (name.contains(".tmp-") || name.contains(".old-")) {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }
}
