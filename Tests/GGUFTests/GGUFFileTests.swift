import Foundation
import Testing
@testable import GGUF

/// The reader against files the writer makes, and against broken ones: every bad count, length or
/// offset is an error that names the file, never a crash.
@Suite struct GGUFFileTests {
    static func temporaryPath(_ name: String) -> String { NSTemporaryDirectory() + "gguf-\(getpid())-\(UUID().uuidString)-\(name)" }

    static func sample() -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.alignment", .uint32(64))
        w.set("test.u8", .uint8(7)); w.set("test.i8", .int8(-3)); w.set("test.u16", .uint16(65000)); w.set("test.i16", .int16(-300))
        w.set("test.u32", .uint32(4_000_000_000)); w.set("test.i32", .int32(-5)); w.set("test.u64", .uint64(1 << 40))
        w.set("test.i64", .int64(-(1 << 40))); w.set("test.f32", .float32(0.5)); w.set("test.f64", .float64(-2.25))
        w.set("test.bool", .bool(true)); w.set("test.string", .string("héllo"))
        w.set("test.nested", .array(elementType: GGUFValue.TypeID.array.rawValue, [
            .array(elementType: GGUFValue.TypeID.int32.rawValue, [.int32(1), .int32(2)]),
            .array(elementType: GGUFValue.TypeID.string.rawValue, [.string("a"), .string("")])]))
        let f32 = (0..<6).flatMap { withUnsafeBytes(of: Float($0).bitPattern.littleEndian, Array.init) }
        w.tensors.append(.init(name: "a", type: .f32, dimensions: [3, 2], bytes: f32))
        w.tensors.append(.init(name: "b", type: .q8_0, dimensions: [32], bytes: [0x00, 0x3C] + (0..<32).map { UInt8($0) }))
        return w
    }

    @Test func roundTripsEveryValueTypeAndTensorLayout() throws {
        let path = Self.temporaryPath("ok.gguf")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let w = Self.sample()
        try w.write(to: path)
        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.alignment == 64)
        #expect(file.metadataKeys == w.metadata.map(\.0))
        for (key, value) in w.metadata { #expect(file[key] == value, "\(key)") }
        #expect(file.dataOffset % 64 == 0)
        let a = try file.info("a")
        #expect(a.dimensions == [3, 2] && a.shape == [2, 3] && a.type == .f32 && a.byteCount == 24)
        #expect(try file.floats("a") == [0, 1, 2, 3, 4, 5])
        let b = try file.info("b")
        #expect(b.offset == 64 && b.byteCount == 34)
        // Q8_0: d = 1.0 (0x3C00), codes 0...31.
        #expect(try file.floats("b") == (0..<32).map(Float.init))
    }

    /// Arrays are read into one typed Swift array per key (a vocabulary is a [String], its scores a
    /// [Float]): the typed accessors see the file's values, and a mixed array cannot be built.
    @Test func readsArraysTyped() throws {
        let path = Self.temporaryPath("arrays.gguf")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var w = GGUFWriter()
        w.set("t.tokens", .array(elementType: GGUFValue.TypeID.string.rawValue, ["<s>", "▁a", "é", ""].map(GGUFValue.string)))
        w.set("t.scores", .array(elementType: GGUFValue.TypeID.float32.rawValue, [0, -1.5, -2, .infinity].map(GGUFValue.float32)))
        w.set("t.types", .array(elementType: GGUFValue.TypeID.int32.rawValue, [3, 1, 6, -4].map(GGUFValue.int32)))
        w.set("t.big", .array(elementType: GGUFValue.TypeID.uint64.rawValue, [.uint64(1), .uint64(UInt64.max)]))
        try w.write(to: path)
        let file = try GGUFFile(path: path)
        #expect(file["t.tokens"]?.typedArray?.strings == ["<s>", "▁a", "é", ""])
        #expect(file["t.scores"]?.typedArray?.floats == [0, -1.5, -2, .infinity])
        #expect(file["t.types"]?.typedArray?.ints == [3, 1, 6, -4])
        #expect(file["t.types"]?.typedArray?.elementType == .int32)
        #expect(file["t.big"]?.typedArray?.ints == nil)   // 2^64 - 1 does not fit in Int
        #expect(file["t.tokens"]?.array == ["<s>", "▁a", "é", ""].map(GGUFValue.string))
        #expect(file["t.scores"]?.typedArray?.strings == nil)
        #expect(GGUFArray(elementType: .int32, values: [.int32(1), .uint32(2)]) == nil)
    }

    /// Writes `bytes` and expects GGUFFile to refuse them with an error containing `fragment`.
    func expectRefusal(_ bytes: [UInt8], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let path = Self.temporaryPath("bad.gguf")
        defer { try? FileManager.default.removeItem(atPath: path) }
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        do {
            _ = try GGUFFile(path: path)
            Issue.record("accepted a broken file (expected '\(fragment)')", sourceLocation: sourceLocation)
        } catch let error as GGUFError {
            #expect(error.description.contains(path), sourceLocation: sourceLocation)
            #expect(error.description.contains(fragment), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func refusesTruncatedFilesAtEveryLength() throws {
        let bytes = try Self.sample().encoded()
        let whole = Self.temporaryPath("whole.gguf")
        defer { try? FileManager.default.removeItem(atPath: whole) }
        FileManager.default.createFile(atPath: whole, contents: Data(bytes))
        let file = try GGUFFile(path: whole), last = try file.info("b")
        let end = file.dataOffset + last.offset + last.byteCount
        // Every prefix short of the last tensor's data is refused (header cut anywhere, or data missing);
        // the trailing padding is not needed.
        for length in 0..<end {
            let path = Self.temporaryPath("cut.gguf")
            FileManager.default.createFile(atPath: path, contents: Data(bytes[..<length]))
            #expect(throws: GGUFError.self, "prefix of \(length) bytes") { _ = try GGUFFile(path: path) }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    @Test func refusesWrongMagicVersionAndEndianness() throws {
        var bytes = try Self.sample().encoded()
        expectRefusal(Array("GGML".utf8) + bytes[4...], "not a GGUF file")
        bytes[4...7] = [0, 0, 0, 3]
        expectRefusal(bytes, "big-endian")
        bytes[4...7] = [1, 0, 0, 0]
        expectRefusal(bytes, "version 1")
    }

    /// Header fields at known offsets: magic 0, version 4, tensor count 8, metadata count 16, first key 24.
    @Test func refusesCountsAndLengthsTheFileCannotHold() throws {
        let bytes = try Self.sample().encoded()
        func patched(_ offset: Int, _ value: UInt64) -> [UInt8] {
            var b = bytes
            withUnsafeBytes(of: value.littleEndian) { b.replaceSubrange(offset..<(offset + 8), with: $0) }
            return b
        }
        expectRefusal(patched(8, UInt64.max), "tensor count")
        expectRefusal(patched(16, 1 << 60), "metadata count")
        expectRefusal(patched(24, UInt64.max - 3), "length of a metadata key")
    }

    @Test func refusesBadTensorInfos() throws {
        // A Q4_0 row of 16 elements (not whole blocks): written by hand since the writer checks sizes.
        var w = GGUFWriter()
        w.tensors = [.init(name: "t", type: .f32, dimensions: [16], bytes: [UInt8](repeating: 0, count: 64))]
        var bytes = try w.encoded()
        // Tensor info: name (8 + 1), n_dims (4), dims (8), type (4) at 24 + 9 + 4 + 8.
        let typeOffset = 24 + 9 + 4 + 8
        bytes[typeOffset] = UInt8(GGMLType.q4_0.rawValue)
        expectRefusal(bytes, "not a multiple of the block size")
        bytes[typeOffset] = 0
        bytes[typeOffset + 4] = 8  // offset 8: not aligned
        expectRefusal(bytes, "not aligned")
        bytes[typeOffset + 4] = 0
        bytes[24 + 9] = 5  // five dimensions
        expectRefusal(bytes, "5 dimensions")
        var big = GGUFWriter()
        big.set("general.alignment", .uint32(48))
        expectRefusal(try big.encoded(), "power of two")
    }

    @Test func refusesDuplicateKeysAndBadUTF8() throws {
        var w = GGUFWriter()
        w.metadata = [("k", .uint8(1)), ("k", .uint8(2))]
        expectRefusal(try w.encoded(), "appears twice")
        var v = GGUFWriter()
        v.set("k", .string("ab"))
        var bytes = try v.encoded()
        // The string's second byte.
        let at = bytes.lastIndex(of: UInt8(ascii: "a"))! + 1
        bytes[at] = 0xFF
        expectRefusal(bytes, "not valid UTF-8")
    }
}
