import Foundation

/// A tokenized dataset on disk, memory-mapped: what `train` and `eval` batch from, written once by a
/// streaming pass over the JSONL (`TokenFileWriter`) and reused by later runs (`TokenFileCache`).
///
/// Layout (little-endian), every section 8-byte aligned:
///
///     header   128 B   magic "QLTOKENS", version, id width, counts, fingerprint, hashes (see `Header`)
///     ids      N * W   token ids of every example, concatenated (W = 2 when the vocabulary fits 16 bits, else 4)
///     mask     N / 8   1 bit per token, LSB first: 1 = trained (label = id), 0 = label -100
///     offsets  (E+1)*8 UInt64 start of each example in tokens; offsets[E] = N
///     last ids E * 4   each example's final id (packing checks it against the separator without touching `ids`)
///
/// Labels are always either -100 or the id at the same position (the JSONL reader enforces it for
/// "input_ids" records), so one bit holds them. Opening checks the header and the body hash and refuses
/// any count or offset that does not fit the file. Training reads a batch's rows out of the map and
/// then drops those pages from the process (`madvise(MADV_DONTNEED)`), so resident memory stays at the
/// in-memory index (`indexBytes`) however large the file is.
public final class TokenFile: TokenizedExampleSource {
    public static let magic: [UInt8] = Array("QLTOKENS".utf8)
    public static let version: UInt32 = 1
    public static let headerBytes = 128

    public let url: URL
    public let exampleCount: Int
    public let tokenCount: Int
    /// 2 or 4.
    public let idBytes: Int
    /// What the file was made from (data file and tokenizer settings, `TokenFileCache.fingerprint`).
    public let fingerprint: UInt64
    public let vocabSize: Int
    public let fileBytes: Int

    private let base: UnsafeMutableRawPointer
    private let idsOffset: Int, maskOffset: Int
    /// (E + 1) token offsets, copied out of the map.
    private let offsets: [Int]
    private let lastIDs: [Int32]
    private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Section sizes for `tokens` tokens of `examples` examples with `idBytes`-wide ids.
    static func layout(tokens: Int, examples: Int, idBytes: Int) -> (ids: Int, mask: Int, offsets: Int, lastIDs: Int, total: Int) {
        func aligned(_ n: Int) -> Int { (n + 7) & ~7 }
        let ids = headerBytes
        let mask = ids + aligned(tokens * idBytes)
        let offsets = mask + aligned((tokens + 7) / 8)
        let lastIDs = offsets + (examples + 1) * 8
        return (ids, mask, offsets, lastIDs, lastIDs + aligned(examples * 4))
    }

    /// Opens and validates `url`; every failure names the file and says what to do.
    public init(url: URL) throws {
        self.url = url
        func corrupt(_ detail: String) -> DataError {
            .invalidTokenFile(path: url.path, detail: detail)
        }
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw DataError.fileUnreadable(path: url.path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw DataError.fileUnreadable(path: url.path, reason: String(cString: strerror(errno))) }
        let size = Int(info.st_size)
        guard size >= Self.headerBytes else { throw corrupt("\(size) bytes, shorter than the \(Self.headerBytes)-byte header") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw DataError.fileUnreadable(path: url.path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        var ok = false
        defer { if !ok { munmap(mapped, size) } }
        let header = Header(UnsafeRawBufferPointer(start: mapped, count: Self.headerBytes))
        guard header.magic == Self.magic else { throw corrupt("not a qlora token file (bad magic)") }
        guard header.version == Self.version else { throw corrupt("format version \(header.version), this build reads \(Self.version)") }
        guard header.storedHeaderHash == header.computedHash else { throw corrupt("header checksum mismatch") }
        guard header.idBytes == 2 || header.idBytes == 4 else { throw corrupt("id width \(header.idBytes) (expected 2 or 4)") }
        // Counts beyond the file size cannot be real; checked before any multiplication can overflow.
        guard header.tokenCount <= UInt64(size), header.exampleCount <= UInt64(size) else {
            throw corrupt("counts (\(header.tokenCount) tokens, \(header.exampleCount) examples) exceed the file size")
        }
        let tokens = Int(header.tokenCount), examples = Int(header.exampleCount), width = Int(header.idBytes)
        let layout = Self.layout(tokens: tokens, examples: examples, idBytes: width)
        guard layout.total == size else { throw corrupt("\(size) bytes, but its counts need \(layout.total) (truncated or padded)") }
        guard try TokenFileHash.body(fd: fd, path: url.path, size: size) == header.bodyHash else { throw corrupt("body checksum mismatch") }
        var offsets = [Int](repeating: 0, count: examples + 1)
        var previous = 0
        for i in 0...examples {
            let value = Int(truncatingIfNeeded: (mapped + layout.offsets + 8 * i).loadUnaligned(as: UInt64.self).littleEndian)
            guard value >= previous, value <= tokens, i > 0 || value == 0 else { throw corrupt("example offsets are not increasing within 0...\(tokens) at \(i)") }
            offsets[i] = value
            previous = value
        }
        guard offsets[examples] == tokens else { throw corrupt("offsets end at \(offsets[examples]), not at the \(tokens) tokens") }
        lastIDs = (0..<examples).map { Int32(bitPattern: (mapped + layout.lastIDs + 4 * $0).loadUnaligned(as: UInt32.self).littleEndian) }
        self.offsets = offsets
        exampleCount = examples
        tokenCount = tokens
        idBytes = width
        fingerprint = header.fingerprint
        vocabSize = Int(truncatingIfNeeded: header.vocabSize)
        fileBytes = size
        base = mapped
        idsOffset = layout.ids
        maskOffset = layout.mask
        // The index is in memory now; the pages read to build it leave the process.
        madvise(mapped, size, MADV_DONTNEED)
        ok = true
    }

    deinit { munmap(base, fileBytes) }

    public func length(ofExample index: Int) -> Int { offsets[index + 1] - offsets[index] }
    public func lastID(ofExample index: Int) -> Int32 { lastIDs[index] }

    public func copy(example index: Int, range: Range<Int>, ids: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>) {
        let first = offsets[index] + range.lowerBound
        let mask = (base + maskOffset).assumingMemoryBound(to: UInt8.self)
        for k in 0..<range.count {
            let t = first + k
            let id = idBytes == 2 ? Int32((base + idsOffset + 2 * t).loadUnaligned(as: UInt16.self).littleEndian)
                                  : Int32(bitPattern: (base + idsOffset + 4 * t).loadUnaligned(as: UInt32.self).littleEndian)
            ids[k] = id
            labels[k] = (mask[t >> 3] >> UInt8(t & 7)) & 1 == 1 ? id : TokenizedExample.ignoredLabel
        }
    }

    /// Drops the mapped pages a batch touched from the process (they stay in the page cache).
    public func releaseResidentPages() { madvise(base, fileBytes, MADV_DONTNEED) }

    /// Offsets and last ids held in memory.
    public var indexBytes: Int { offsets.count * 8 + lastIDs.count * 4 }

    /// The 128-byte header: magic (8), version u32, id width u32, examples u64, tokens u64, fingerprint
    /// u64, vocabulary u64, source bytes u64, body hash u64, zeros to 120, header hash u64 (of bytes 0..<120).
    struct Header {
        var magic: [UInt8]
        var version: UInt32
        var idBytes: UInt32
        var exampleCount: UInt64
        var tokenCount: UInt64
        var fingerprint: UInt64
        var vocabSize: UInt64
        var sourceBytes: UInt64
        var bodyHash: UInt64
        var storedHeaderHash: UInt64 = 0

        init(version: UInt32, idBytes: UInt32, exampleCount: UInt64, tokenCount: UInt64, fingerprint: UInt64,
             vocabSize: UInt64, sourceBytes: UInt64, bodyHash: UInt64) {
            magic = TokenFile.magic
            self.version = version
            self.idBytes = idBytes
            self.exampleCount = exampleCount
            self.tokenCount = tokenCount
            self.fingerprint = fingerprint
            self.vocabSize = vocabSize
            self.sourceBytes = sourceBytes
            self.bodyHash = bodyHash
        }

        init(_ bytes: UnsafeRawBufferPointer) {
            func u64(_ at: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }
            func u32(_ at: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian }
            magic = Array(bytes[0..<8])
            version = u32(8)
            idBytes = u32(12)
            exampleCount = u64(16)
            tokenCount = u64(24)
            fingerprint = u64(32)
            vocabSize = u64(40)
            sourceBytes = u64(48)
            bodyHash = u64(56)
            storedHeaderHash = u64(120)
        }

        /// The first 120 bytes as stored.
        var prefix: [UInt8] {
            var out = magic
            func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
            put(version); put(idBytes); put(exampleCount); put(tokenCount); put(fingerprint); put(vocabSize)
            put(sourceBytes); put(bodyHash)
            out += [UInt8](repeating: 0, count: 120 - out.count)
            return out
        }

        var computedHash: UInt64 { prefix.withUnsafeBytes { TokenFileHash.fnv1a64($0) } }

        /// All 128 bytes, with the header hash.
        var bytes: [UInt8] {
            var out = prefix
            withUnsafeBytes(of: computedHash.littleEndian) { out += $0 }
            return out
        }
    }
}

/// FNV-1a 64 over little-endian 64-bit words (then the tail bytes one by one): a checksum that runs
/// at memory speed, for detecting a damaged or half-written token file, not an adversary.
enum TokenFileHash {
    static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    static let prime: UInt64 = 0x0000_0100_0000_01b3

    static func fnv1a64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = offsetBasis) -> UInt64 {
        var hash = seed
        let words = bytes.count / 8
        for i in 0..<words { hash = (hash ^ bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian) &* prime }
        for i in (8 * words)..<bytes.count { hash = (hash ^ UInt64(bytes[i])) &* prime }
        return hash
    }

    /// The hash of a token file's body (bytes 128..<size), read through a small buffer with pread, so
    /// checking a large file does not bring it into the process.
    static func body(fd: Int32, path: String, size: Int) throws -> UInt64 {
        var hash = offsetBasis
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var position = TokenFile.headerBytes
        while position < size {
            let want = min(buffer.count, size - position)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, want, off_t(position)) }
            guard got == want else {
                throw DataError.fileUnreadable(path: path, reason: got < 0 ? String(cString: strerror(errno)) : "short read at byte \(position)")
            }
            // Chunks are multiples of 8 bytes except the last, so the word hash chains across them.
            hash = buffer.withUnsafeBytes { fnv1a64(UnsafeRawBufferPointer(rebasing: $0[0..<want]), seed: hash) }
            position += want
        }
        return hash
    }
}
