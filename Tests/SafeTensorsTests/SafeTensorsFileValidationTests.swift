import Foundation
import Testing
@testable import SafeTensors

/// Every way a file can be broken, each asserting its specific error. The reference library
/// (safetensors 0.8, tensor.rs `read_metadata` / `validate`) refuses: files under 8 bytes, headers
/// over 100 MB or past the end, non-UTF-8 or non-JSON headers, unknown dtypes, non-usize shapes
/// and offsets, offsets that (sorted) do not start at 0 and follow each other exactly, byte
/// counts != elements x size, and offsets that do not end exactly at the end of the file. This
/// reader refuses the same set (with one error case per cause) and also duplicate header keys.
@Suite("SafeTensorsFile validation")
struct SafeTensorsFileValidationTests {
    /// Writes `bytes` to a temp file and opens it, expecting `matches` of the error.
    func expectRejected(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation, _ matches: (SafeTensorsError) -> Bool) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.safetensors")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        expectSafeTensorsError({ _ = try SafeTensorsFile(path: path) }, sourceLocation: sourceLocation, matches)
    }

    func open(_ bytes: [UInt8]) throws -> (SafeTensorsFile, TemporaryDirectory) {
        let directory = try TemporaryDirectory()
        let path = directory.file("ok.safetensors")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (try SafeTensorsFile(path: path), directory)
    }

    static func entry(name: String = "t", dtype: String = "F32", shape: String = "[2]", offsets: String = "[0,8]") -> String {
        #""\#(name)":{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":\#(offsets)}"#
    }

    @Test(arguments: [0, 1, 7])
    func truncatedBelowEightBytes(_ size: Int) throws {
        try expectRejected([UInt8](repeating: 0x20, count: size)) { $0 == .truncated(path: $0.pathForTest, size: size) }
    }

    @Test func headerLengthPastEndOfFile() throws {
        var bytes = rawFile(header: "{}      ")
        bytes[0] = 200
        try expectRejected(bytes) { if case .headerBeyondFile(_, 200, 16) = $0 { return true } else { return false } }
    }

    @Test func headerOver100MB() throws {
        var bytes = rawFile(header: "{}      ")
        withUnsafeBytes(of: UInt64(100_000_001).littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
        try expectRejected(bytes) { if case .headerTooLarge(_, 100_000_001) = $0 { return true } else { return false } }
        withUnsafeBytes(of: UInt64.max.littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
        try expectRejected(bytes) { if case .headerTooLarge = $0 { return true } else { return false } }
    }

    @Test(arguments: [
        "{not json}", "{\"t\":{\"dtype\":\"F32\"", "", "{}{}", "{\"a\":1,}", "{'a':1}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
    ])
    func invalidJSON(_ header: String) throws {
        try expectRejected(rawFile(header: header)) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("not valid JSON") } else { return false }
        }
    }

    @Test func invalidUTF8() throws {
        try expectRejected(rawFile(header: "{\"\u{1}\":1}").map { $0 == 1 ? 0xff : $0 }) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
    }

    @Test(arguments: ["[]", "3", "\"header\"", "null", "true"])
    func headerNotAnObject(_ header: String) throws {
        try expectRejected(rawFile(header: header)) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("not a JSON object") } else { return false }
        }
    }

    @Test func unknownDType() throws {
        try expectRejected(rawFile(header: "{\(Self.entry(dtype: "F128"))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .unknownDType(_, "t", "F128") = $0 { return true } else { return false }
        }
    }

    @Test func offsetsPastDataSection() throws {
        try expectRejected(rawFile(header: "{\(Self.entry(offsets: "[0,8]"))}", data: [UInt8](repeating: 0, count: 4))) {
            if case .badOffsets(_, "t", let reason) = $0 { return reason.contains("past") } else { return false }
        }
    }

    @Test func beginAfterEnd() throws {
        try expectRejected(rawFile(header: "{\(Self.entry(shape: "[0]", offsets: "[8,0]"))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .badOffsets(_, "t", let reason) = $0 { return reason.contains("begin 8 > end 0") } else { return false }
        }
    }

    @Test(arguments: ["[0]", "[0,8,9]", "[-1,8]", "[0,8.0]", "[true,8]", "[\"0\",8]", "null"])
    func malformedOffsets(_ offsets: String) throws {
        try expectRejected(rawFile(header: "{\(Self.entry(offsets: offsets))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .badOffsets(_, "t", _) = $0 { return true } else { return false }
        }
    }

    @Test func overlappingTensors() throws {
        let header = "{\(Self.entry(name: "a", offsets: "[0,8]")),\(Self.entry(name: "b", offsets: "[4,12]"))}"
        try expectRejected(rawFile(header: header, data: [UInt8](repeating: 0, count: 12))) {
            if case .overlapping(_, "b", "a") = $0 { return true } else { return false }
        }
    }

    /// A gap between tensors: the reference refuses it (InvalidOffset), and so do we.
    @Test func gapBetweenTensors() throws {
        let header = "{\(Self.entry(name: "a", offsets: "[0,8]")),\(Self.entry(name: "b", offsets: "[12,20]"))}"
        try expectRejected(rawFile(header: header, data: [UInt8](repeating: 0, count: 20))) {
            if case .badOffsets(_, "b", let reason) = $0 { return reason.contains("gap") } else { return false }
        }
        // ... also a first tensor not starting at 0.
        try expectRejected(rawFile(header: "{\(Self.entry(offsets: "[4,12]"))}", data: [UInt8](repeating: 0, count: 12))) {
            if case .badOffsets(_, "t", _) = $0 { return true } else { return false }
        }
    }

    /// Bytes after the last tensor: the reference's MetadataIncompleteBuffer.
    @Test func trailingBytesAfterData() throws {
        try expectRejected(rawFile(header: "{\(Self.entry())}", data: [UInt8](repeating: 0, count: 9))) {
            $0 == .incompleteData(path: $0.pathForTest, dataSize: 9, covered: 8)
        }
        try expectRejected(rawFile(header: "{}", data: [1])) {
            $0 == .incompleteData(path: $0.pathForTest, dataSize: 1, covered: 0)
        }
    }

    @Test func shapeSizeMismatch() throws {
        try expectRejected(rawFile(header: "{\(Self.entry(shape: "[3]", offsets: "[0,8]"))}", data: [UInt8](repeating: 0, count: 8))) {
            $0 == .sizeMismatch(path: $0.pathForTest, tensor: "t", expected: 12, actual: 8)
        }
    }

    /// JSONSerialization would turn `true` into 1 and 2.0 into 2; the strict parser refuses both.
    @Test(arguments: ["[-2]", "[2.0]", "[2.5]", "[true]", "[false,2]", "[\"2\"]", "[null]", "[2e0]", "2", "{}", "[[2]]"])
    func badShape(_ shape: String) throws {
        try expectRejected(rawFile(header: "{\(Self.entry(shape: shape))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("'t'") } else { return false }
        }
    }

    @Test func shapeOverflow() throws {
        try expectRejected(rawFile(header: "{\(Self.entry(shape: "[4294967296,4294967296]"))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("too large") } else { return false }
        }
        try expectRejected(rawFile(header: "{\(Self.entry(shape: "[18446744073709551616]"))}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
    }

    @Test(arguments: [#""__metadata__":{"a":1}"#, #""__metadata__":[]"#, #""__metadata__":{"a":null}"#])
    func badMetadata(_ member: String) throws {
        try expectRejected(rawFile(header: "{\(member),\(Self.entry())}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("__metadata__") } else { return false }
        }
    }

    @Test(arguments: [#""t":3"#, #""t":{"shape":[2],"data_offsets":[0,8]}"#, #""t":{"dtype":"F32","data_offsets":[0,8]}"#])
    func malformedEntry(_ member: String) throws {
        try expectRejected(rawFile(header: "{\(member)}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
    }

    @Test func duplicateKeys() throws {
        try expectRejected(rawFile(header: "{\(Self.entry()),\(Self.entry())}", data: [UInt8](repeating: 0, count: 8))) {
            if case .invalidHeader(_, let reason) = $0 { return reason.contains("duplicate") } else { return false }
        }
    }

    @Test func directoryAndMissingPath() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        expectSafeTensorsError({ _ = try SafeTensorsFile(path: directory.path) }) {
            if case .cannotOpen(_, let reason) = $0 { return reason.contains("directory") } else { return false }
        }
        expectSafeTensorsError({ _ = try SafeTensorsFile(path: directory.file("none")) }) {
            if case .cannotOpen = $0 { return true } else { return false }
        }
    }

    // MARK: - Accepted edge cases

    /// Scalars, zero-size tensors, null metadata, whitespace around the JSON, escapes in names.
    @Test func acceptsReferenceValidEdgeCases() throws {
        let header = "\n {\"__metadata__\":null,\(Self.entry(name: "s\\u00e9", dtype: "I32", shape: "[]", offsets: "[0,4]")),\(Self.entry(name: "z", shape: "[0,3]", offsets: "[4,4]"))}   "
        let (file, directory) = try open(rawFile(header: header, data: [5, 0, 0, 0]))
        defer { directory.remove() }
        #expect(file.names == ["sé", "z"])
        #expect(file.metadata.isEmpty)
        #expect(try file.integers("sé") == [5])
        #expect(try file.floats("z") == [])
    }

    @Test func wrongDTypeAndMisalignedViews() throws {
        let header = "{\(Self.entry(name: "b", dtype: "U8", shape: "[1]", offsets: "[0,1]")),\(Self.entry(name: "f", dtype: "F32", shape: "[1]", offsets: "[1,5]"))}"
        var header8 = header
        while (header8.utf8.count) % 8 != 0 { header8 += " " }
        let (file, directory) = try open(rawFile(header: header8, data: [7, 0, 0, 0x80, 0x3f]))
        defer { directory.remove() }
        #expect(try file.floats("f") == [1])  // unaligned loads are fine for copies
        expectSafeTensorsError({ _ = try file.view("f", as: Float.self, dtype: .F32) }) { $0 == .misaligned(path: file.path, tensor: "f") }
        expectSafeTensorsError({ _ = try file.view("b", as: Float.self, dtype: .F32) }) { $0 == .wrongDType(path: file.path, tensor: "b", expected: "F32", actual: .U8) }
        expectSafeTensorsError({ _ = try file.floats("b") }) { if case .wrongDType(_, "b", _, .U8) = $0 { return true } else { return false } }
        expectSafeTensorsError({ _ = try file.integers("f") }) { if case .wrongDType(_, "f", _, .F32) = $0 { return true } else { return false } }
        expectSafeTensorsError({ _ = try file.rawBytes("x") }) { $0 == .missingTensor(path: file.path, tensor: "x") }
    }

    /// Every reference fixture opens, and its names/shapes agree with what the writer lays out.
    @Test(arguments: SafeTensorsWriterTests.referenceFiles)
    func referenceFilesOpen(_ name: String) throws {
        let file = try SafeTensorsFile(path: fixturePath(name))
        #expect(!file.tensors.isEmpty)
        let prefix = try readBytes(fixturePath(name)).prefix(8)
        let headerLength = prefix.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(8 + headerLength + file.tensors.last!.byteRange.upperBound == file.fileSize)
    }
}

extension SafeTensorsError {
    /// The path carried by file-level cases, so tests can build the expected value.
    var pathForTest: String {
        switch self {
        case .cannotOpen(let p, _), .truncated(let p, _), .headerTooLarge(let p, _), .headerBeyondFile(let p, _, _),
             .invalidHeader(let p, _), .unknownDType(let p, _, _), .badOffsets(let p, _, _), .sizeMismatch(let p, _, _, _),
             .overlapping(let p, _, _), .missingTensor(let p, _), .wrongDType(let p, _, _, _), .misaligned(let p, _),
             .badIndex(let p, _), .writeFailed(let p, _), .incompleteData(let p, _, _):
            return p
        case .missingShard(let p, _), .tensorNotInShard(let p, _, _), .noSafeTensors(let p, _):
            return p
        case .duplicateTensor:
            return ""
        }
    }
}
