import Foundation

/// Where tokenized datasets are kept between runs: one token file per (data file, tokenizer settings),
/// named by the data file and a fingerprint of both, so a second run (or `eval` after `train`) maps the
/// file instead of tokenizing again, and an edited dataset or another tokenizer gets a new file.
public struct TokenFileCache: Sendable {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    /// `$QLORA_CACHE/tokens`, else `$XDG_CACHE_HOME/qlora/tokens`, else `~/.cache/qlora/tokens`.
    public static var defaultDirectory: URL {
        let environment = ProcessInfo.processInfo.environment
        if let root = environment["QLORA_CACHE"], !root.isEmpty { return URL(fileURLWithPath: root).appendingPathComponent("tokens") }
        if let root = environment["XDG_CACHE_HOME"], !root.isEmpty {
            return URL(fileURLWithPath: root).appendingPathComponent("qlora/tokens")
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/qlora/tokens")
    }

    public struct Entry {
        public let file: TokenFile
        /// False when this call tokenized the data (and wrote the file).
        public let reused: Bool
    }

    /// The token file of `data` under `dataset`'s tokenizer: reused when one with the same fingerprint
    /// is there and intact, else written now (older files of the same data path are removed).
    public func tokenFile(for data: URL, dataset: DatasetTokenizer) throws -> Entry {
        let fingerprint = try Self.fingerprint(data: data, settings: dataset.settingsFingerprint())
        let stem = Self.stem(of: data)
        let url = directory.appendingPathComponent("\(stem)-\(Self.hex(fingerprint)).tokens")
        if FileManager.default.fileExists(atPath: url.path),
           let file = try? TokenFile(url: url), file.fingerprint == fingerprint, file.vocabSize == dataset.vocabSize {
            return Entry(file: file, reused: true)
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw DataError.tokenCacheUnwritable(path: directory.path, reason: error.localizedDescription)
        }
        Self.removeStaleTemporaries(in: directory)
        let file = try TokenFileWriter.write(jsonl: data, dataset: dataset, fingerprint: fingerprint, to: url)
        for old in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        where old.hasPrefix(stem + "-") && old.hasSuffix(".tokens") && old != url.lastPathComponent {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(old))
        }
        return Entry(file: file, reused: false)
    }

    /// Removes the temporary files of writers that died mid-tokenization (`.NAME.PID.RANDOM.tmp`,
    /// TokenFileWriter's names, whose pid no longer runs); a live writer's file is left alone.
    static func removeStaleTemporaries(in directory: URL) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            let parts = name.split(separator: ".")
            guard parts.count >= 4, let pid = Int32(parts[parts.count - 3]), pid > 0, !OutputLock.isRunning(pid) else { continue }
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// The data file's name and a hash of its absolute path: files of one path replace each other.
    static func stem(of data: URL) -> String {
        let path = Array(data.standardizedFileURL.path.utf8)
        let name = data.deletingPathExtension().lastPathComponent.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
        return "\(name.prefix(40))-\(hex(path.withUnsafeBytes { TokenFileHash.fnv1a64($0) }).prefix(8))"
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Size, modification time and the first and last 64 KiB of a file: changes when the file is
    /// edited, without reading a large file whole.
    static func identity(of url: URL) -> [UInt8] {
        var bytes: [UInt8] = []
        var info = stat()
        guard stat(url.path, &info) == 0 else { return bytes }
        for value in [UInt64(info.st_size), UInt64(info.st_mtim.tv_sec), UInt64(info.st_mtim.tv_nsec)] {
            withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
        }
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { return bytes }
        defer { close(fd) }
        let size = Int(info.st_size), window = 1 << 16
        for start in Set([0, max(0, size - window)]).sorted() {
            var chunk = [UInt8](repeating: 0, count: min(window, size - start))
            let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(start)) }
            bytes += chunk.prefix(max(0, got))
        }
        return bytes
    }

    static func fingerprint(data: URL, settings: UInt64) throws -> UInt64 {
        guard FileManager.default.isReadableFile(atPath: data.path) else {
            throw DataError.fileUnreadable(path: data.path, reason: "no such readable file")
        }
        var hash = identity(of: data).withUnsafeBytes { TokenFileHash.fnv1a64($0) }
        hash = withUnsafeBytes(of: settings.littleEndian) { TokenFileHash.fnv1a64($0, seed: hash) }
        return hash
    }
}
