import Foundation

/// Tokenizes a JSONL dataset into a `TokenFile` in one streaming pass: one line in memory at a time,
/// ids written out through a fixed buffer, only the 1-bit mask and the per-example index kept until
/// the end. Written to a temporary file beside the target and renamed, so a crash leaves no half file.
public enum TokenFileWriter {
    /// Tokenizes `data` into `url` and returns the opened file. `fingerprint` is stored for the cache.
    @discardableResult
    public static func write(jsonl data: URL, dataset: DatasetTokenizer, fingerprint: UInt64, to url: URL) throws -> TokenFile {
        let idBytes = dataset.vocabSize <= 1 << 16 ? 2 : 4
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        let fd = open(temporary.path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw DataError.tokenCacheUnwritable(path: url.deletingLastPathComponent().path, reason: String(cString: strerror(errno)))
        }
        var closed = false
        defer {
            if !closed { close(fd) }
            unlink(temporary.path)
        }
        let out = BufferedFile(fd: fd, path: temporary.path)
        try out.write(zeros: TokenFile.headerBytes)
        var mask: [UInt8] = []
        var offsets: [UInt64] = [0]
        var lastIDs: [UInt32] = []
        var tokens = 0, records = 0
        try TrainingExample.forEach(jsonl: data) { record, line in
            records += 1
            let example = try dataset.tokenize(record, number: records, file: data)
            // A record that tokenizes to nothing trains nothing and is left out.
            guard !example.inputIDs.isEmpty else { return }
            for (k, (id, label)) in zip(example.inputIDs, example.labels).enumerated()
            where label != TokenizedExample.ignoredLabel && label != id {
                throw DataError.invalidDatasetLine(file: data.lastPathComponent, line: line,
                                                   expected: "labels to be -100 or the id at the same position (position \(k))")
            }
            try out.write(ids: example.inputIDs, width: idBytes)
            for label in example.labels {
                if tokens & 7 == 0 { mask.append(0) }
                if label != TokenizedExample.ignoredLabel { mask[tokens >> 3] |= 1 << UInt8(tokens & 7) }
                tokens += 1
            }
            offsets.append(UInt64(tokens))
            lastIDs.append(UInt32(bitPattern: example.inputIDs.last!))
        }
        guard tokens > 0 else { throw DataError.emptyDataset(file: data.lastPathComponent) }
        let layout = TokenFile.layout(tokens: tokens, examples: lastIDs.count, idBytes: idBytes)
        try out.write(zeros: layout.mask - out.position)
        try mask.withUnsafeBytes { try out.write($0) }
        try out.write(zeros: layout.offsets - out.position)
        for offset in offsets { try out.write(offset) }
        for id in lastIDs { try out.write(id) }
        try out.write(zeros: layout.total - out.position)
        try out.flush()
        let sourceBytes = ((try? FileManager.default.attributesOfItem(atPath: data.path))?[.size] as? Int) ?? 0
        let header = TokenFile.Header(version: TokenFile.version, idBytes: UInt32(idBytes), exampleCount: UInt64(lastIDs.count),
                                      tokenCount: UInt64(tokens), fingerprint: fingerprint, vocabSize: UInt64(dataset.vocabSize),
                                      sourceBytes: UInt64(sourceBytes),
                                      bodyHash: try TokenFileHash.body(fd: fd, path: temporary.path, size: layout.total))
        let headerBytes = header.bytes
        guard headerBytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress!, $0.count, 0) }) == headerBytes.count, fsync(fd) == 0 else {
            throw DataError.tokenCacheUnwritable(path: temporary.path, reason: String(cString: strerror(errno)))
        }
        close(fd)
        closed = true
        guard rename(temporary.path, url.path) == 0 else {
            throw DataError.tokenCacheUnwritable(path: url.path, reason: String(cString: strerror(errno)))
        }
        return try TokenFile(url: url)
    }
}

/// Sequential writes through a 1 MiB buffer; errors name the file.
private final class BufferedFile {
    let fd: Int32
    let path: String
    private var buffer: [UInt8] = []
    private(set) var position = 0

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    func write<T: FixedWidthInteger>(_ value: T) throws {
        withUnsafeBytes(of: value.littleEndian) { buffer += $0 }
        position += MemoryLayout<T>.size
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Token ids as little-endian UInt16 (`width` 2) or UInt32.
    func write(ids: [Int32], width: Int) throws {
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: ids.count * width))
        buffer.withUnsafeMutableBytes { raw in
            for (k, id) in ids.enumerated() {
                if width == 2 {
                    raw.storeBytes(of: UInt16(truncatingIfNeeded: id).littleEndian, toByteOffset: start + 2 * k, as: UInt16.self)
                } else {
                    raw.storeBytes(of: UInt32(bitPattern: id).littleEndian, toByteOffset: start + 4 * k, as: UInt32.self)
                }
            }
        }
        position += ids.count * width
        if buffer.count >= 1 << 20 { try flush() }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try flush()
        try writeAll(bytes)
        position += bytes.count
    }

    func write(zeros count: Int) throws {
        buffer += repeatElement(0, count: count)
        position += count
        if buffer.count >= 1 << 20 { try flush() }
    }

    func flush() throws {
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let count = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            guard count > 0 else { throw DataError.tokenCacheUnwritable(path: path, reason: String(cString: strerror(errno))) }
            done += count
        }
    }
}
