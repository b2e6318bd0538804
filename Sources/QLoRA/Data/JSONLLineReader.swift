import Foundation

/// Reads a file one line at a time through a fixed-size buffer (read(2), never the whole file), so a
/// dataset of any size is parsed in the memory of its longest line. Lines are split on "\n"; a
/// trailing "\r" stays in the line (the JSON parser treats it as whitespace).
final class JSONLLineReader {
    let path: String
    private let fd: Int32
    private var buffer: [UInt8]
    /// Bytes of `buffer` that hold data, and where the next line starts.
    private var filled = 0
    private var start = 0
    private var atEnd = false
    /// 1-based number of the line last returned.
    private(set) var lineNumber = 0

    init(url: URL, chunkBytes: Int = 1 << 20) throws {
        path = url.path
        fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw DataError.fileUnreadable(path: url.path, reason: String(cString: strerror(errno))) }
        buffer = [UInt8](repeating: 0, count: max(16, chunkBytes))
    }

    deinit { close(fd) }

    /// Calls `body` with each line's bytes (valid only during the call) and its 1-based number.
    func forEachLine(_ body: (UnsafeBufferPointer<UInt8>, Int) throws -> Void) throws {
        while true {
            let newline: Int? = buffer.withUnsafeBufferPointer { bytes in
                guard filled > start, let found = memchr(bytes.baseAddress! + start, 0x0A, filled - start) else { return nil }
                return UnsafeRawPointer(found) - UnsafeRawPointer(bytes.baseAddress!)
            }
            if let newline {
                lineNumber += 1
                try buffer.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[start..<newline]), lineNumber) }
                start = newline + 1
                continue
            }
            if atEnd {
                if filled > start {
                    lineNumber += 1
                    try buffer.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[start..<filled]), lineNumber) }
                }
                return
            }
            try refill()
        }
    }

    /// Moves the partial line to the front, grows the buffer when one line fills it, and reads more.
    private func refill() throws {
        if start > 0 {
            buffer.withUnsafeMutableBufferPointer { bytes in
                _ = memmove(bytes.baseAddress!, bytes.baseAddress! + start, filled - start)
            }
            filled -= start
            start = 0
        }
        if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
        let count = buffer.withUnsafeMutableBufferPointer { bytes in
            read(fd, bytes.baseAddress! + filled, bytes.count - filled)
        }
        guard count >= 0 else { throw DataError.fileUnreadable(path: path, reason: String(cString: strerror(errno))) }
        if count == 0 { atEnd = true }
        filled += count
    }
}
