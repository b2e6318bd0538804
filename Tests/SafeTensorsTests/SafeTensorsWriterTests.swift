import Foundation
import Testing
@testable import SafeTensors

@Suite("SafeTensorsWriter")
struct SafeTensorsWriterTests {
    static let referenceFiles = [
        "codebooks.safetensors", "linear4bit_state_dict.safetensors", "weight_3x67_f32.safetensors",
        "weight_16x192_f16.safetensors", "adapter_qv_layer1.safetensors",
    ]

    /// Files written by safetensors 0.8 (Python) come out byte-identical when streamed through the
    /// writer, with the tensors handed over in reverse file order.
    @Test(arguments: referenceFiles)
    func rewritesReferenceFilesByteForByte(_ name: String) throws {
        let original = try readBytes(fixturePath(name))
        let file = try SafeTensorsFile(path: fixturePath(name))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let out = directory.file("copy.safetensors")
        let entries = file.tensors.map { TensorEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let writer = try SafeTensorsWriter(path: out, entries: entries.shuffled(), metadata: file.metadata.isEmpty ? nil : file.metadata)
        for tensor in file.tensors.reversed() {
            try writer.write(tensor.name, bytes: try file.rawBytes(tensor.name))
        }
        try writer.finish()
        let copy = try readBytes(out)
        let firstMismatch = zip(copy, original).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset
        let identical = copy == original
        #expect(identical, "sizes \(copy.count) vs \(original.count); first differing byte at \(firstMismatch.map(String.init) ?? "the end of the shorter")")
        #expect(directory.contents == ["copy.safetensors"])
    }

    /// The convenience writer gives the same bytes.
    @Test func staticWriteMatchesReference() throws {
        let name = "weight_3x67_f32.safetensors"
        let file = try SafeTensorsFile(path: fixturePath(name))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let out = directory.file("x.safetensors")
        let tensors = try file.tensors.map { t in
            (TensorEntry(name: t.name, dtype: t.dtype, shape: t.shape), Data(try file.rawBytes(t.name)))
        }
        try SafeTensorsWriter.write(path: out, tensors: tensors)
        let identical = try readBytes(out) == readBytes(fixturePath(name))
        #expect(identical)
    }

    /// The byte vectors from the reference crate's own unit tests (tensor.rs: test_serialization,
    /// test_empty, test_serialization_forced_alignement).
    @Test func matchesReferenceCrateVectors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = floatBytes([0, 1, 2, 3, 4, 5])

        try SafeTensorsWriter.write(path: directory.file("a"), tensors: [(TensorEntry(name: "attn.0", dtype: .F32, shape: [1, 2, 3]), data)])
        #expect(try readBytes(directory.file("a")) == [
            64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
            116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
            58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
            101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
            0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
        ])

        try SafeTensorsWriter.write(path: directory.file("b"), tensors: [])
        #expect(try readBytes(directory.file("b")) == [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32])

        try SafeTensorsWriter.write(path: directory.file("c"), tensors: [], metadata: ["framework": "pt"])
        #expect(try readBytes(directory.file("c")) == [
            40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
            95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
            116, 34, 125, 125, 32, 32, 32, 32, 32,
        ])

        try SafeTensorsWriter.write(path: directory.file("d"), tensors: [(TensorEntry(name: "attn0", dtype: .F32, shape: [1, 1, 2, 3]), data)])
        #expect(try readBytes(directory.file("d")) == [
            72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
            121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
            91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
            115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
            32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
            160, 64,
        ])
    }

    /// Layout order: dtype descending in the reference enum order, then name by UTF-8 bytes (so
    /// "B" < "a" < "é", unlike a locale-aware sort).
    @Test func layoutOrder() throws {
        var entries = DType.allCases.map { TensorEntry(name: "t_\($0.rawValue)", dtype: $0, shape: [3]) }
        entries += ["é", "a", "B", "a.b", "a_b"].map { TensorEntry(name: $0, dtype: .F32, shape: [1]) }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let writer = try SafeTensorsWriter(path: directory.file("o"), entries: entries.shuffled())
        defer { writer.abandon() }
        let order = writer.layout.map(\.name)
        let expectedDTypes = ["U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"]
        var expected = expectedDTypes.map { "t_\($0)" }
        expected.insert(contentsOf: ["B", "a", "a.b", "a_b"], at: 3)
        expected.insert("é", at: 8)
        #expect(order == expected)
        var offset = 0
        for t in writer.layout {
            #expect(t.byteRange.lowerBound == offset)
            offset = t.byteRange.upperBound
        }
        #expect(writer.header.count % 8 == 0)
    }

    /// Names and metadata are escaped as serde_json does, and read back unchanged.
    @Test func escapesLikeSerdeJSON() throws {
        let name = "q\"b\\s/\u{08}\u{0C}\n\r\t\u{01}\u{1F}\u{7F}é😀"
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("e.safetensors")
        try SafeTensorsWriter.write(path: path, tensors: [(TensorEntry(name: name, dtype: .U8, shape: [2]), Data([7, 9]))],
                                    metadata: ["k\"": "v\n", "format": "pt"])
        let bytes = try readBytes(path)
        let headerText = String(decoding: bytes[8...].prefix(while: { $0 != 0 && $0 != 7 }), as: UTF8.self)
        #expect(headerText.hasPrefix(#"{"__metadata__":{"format":"pt","k\"":"v\n"},"q\"b\\s/\b\f\n\r\t\u0001\u001f"#
                                     + "\u{7F}é😀\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}"))
        let file = try SafeTensorsFile(path: path)
        #expect(file.names == [name])
        #expect(file.metadata == ["k\"": "v\n", "format": "pt"])
        #expect(try file.integers(name) == [7, 9])
    }

    /// Zero-size tensors and scalars (shape []) are laid out like the reference.
    @Test func emptyAndScalarTensors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("z.safetensors")
        try SafeTensorsWriter.write(path: path, tensors: [
            (TensorEntry(name: "empty", dtype: .F32, shape: [0, 4]), Data()),
            (TensorEntry(name: "scalar", dtype: .I64, shape: []), withUnsafeBytes(of: Int64(-5).littleEndian) { Data($0) }),
        ])
        let file = try SafeTensorsFile(path: path)
        #expect(file.names == ["scalar", "empty"])
        #expect(try file.integers("scalar") == [-5])
        #expect(try file.floats("empty") == [])
    }

    // MARK: - Atomicity and misuse

    @Test func abandonLeavesNothing() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let writer = try SafeTensorsWriter(path: directory.file("m.safetensors"), entries: [TensorEntry(name: "a", dtype: .F32, shape: [2])])
        #expect(directory.contents.count == 1)  // the temp file
        #expect(!directory.contents.contains("m.safetensors"))
        try floatBytes([1, 2]).withUnsafeBytes { try writer.write("a", bytes: $0) }
        writer.abandon()
        #expect(directory.contents.isEmpty)
    }

    @Test func deinitWithoutFinishLeavesNothing() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        do {
            let writer = try SafeTensorsWriter(path: directory.file("m.safetensors"), entries: [TensorEntry(name: "a", dtype: .F32, shape: [2])])
            try floatBytes([1, 2]).withUnsafeBytes { try writer.write("a", bytes: $0) }
        }
        #expect(directory.contents.isEmpty)
    }

    /// finish() with a tensor never written throws, removes the temp file and leaves an existing
    /// file under the real name untouched.
    @Test func failedFinishKeepsOldFileAndRemovesTemp() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("m.safetensors")
        try Data("old".utf8).write(to: URL(fileURLWithPath: path))
        let writer = try SafeTensorsWriter(path: path, entries: [TensorEntry(name: "a", dtype: .F32, shape: [2]), TensorEntry(name: "b", dtype: .U8, shape: [1])])
        try floatBytes([1, 2]).withUnsafeBytes { try writer.write("a", bytes: $0) }
        expectSafeTensorsError({ try writer.finish() }) {
            if case .writeFailed(_, let reason) = $0 { return reason.contains("'b'") }
            return false
        }
        #expect(directory.contents == ["m.safetensors"])
        #expect(try readBytes(path) == Array("old".utf8))
    }

    @Test func wrongByteCountNamesTheTensor() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let writer = try SafeTensorsWriter(path: directory.file("m"), entries: [TensorEntry(name: "w", dtype: .F32, shape: [2, 3])])
        defer { writer.abandon() }
        expectSafeTensorsError({ try floatBytes([1, 2, 3]).withUnsafeBytes { try writer.write("w", bytes: $0) } }) {
            $0 == .sizeMismatch(path: directory.file("m"), tensor: "w", expected: 24, actual: 12)
        }
        expectSafeTensorsError({ try floatBytes([1]).withUnsafeBytes { try writer.write("nope", bytes: $0) } }) {
            if case .missingTensor(_, "nope") = $0 { return true } else { return false }
        }
        try floatBytes([1, 2, 3, 4, 5, 6]).withUnsafeBytes { try writer.write("w", bytes: $0) }
        expectSafeTensorsError({ try floatBytes([1, 2, 3, 4, 5, 6]).withUnsafeBytes { try writer.write("w", bytes: $0) } }) {
            if case .writeFailed(_, let reason) = $0 { return reason.contains("already written") } else { return false }
        }
    }

    @Test func badEntriesAreRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cases: [[TensorEntry]] = [
            [TensorEntry(name: "a", dtype: .F32, shape: [1]), TensorEntry(name: "a", dtype: .U8, shape: [1])],
            [TensorEntry(name: "a", dtype: .F32, shape: [-1])],
            [TensorEntry(name: "__metadata__", dtype: .F32, shape: [1])],
            [TensorEntry(name: "a", dtype: .F64, shape: [Int.max / 2, 3])],
        ]
        for entries in cases {
            expectSafeTensorsError({ _ = try SafeTensorsWriter(path: directory.file("m"), entries: entries) }) {
                if case .writeFailed = $0 { return true } else { return false }
            }
        }
        expectSafeTensorsError({ _ = try SafeTensorsWriter(path: directory.file("no/such/dir/m"), entries: []) }) {
            if case .writeFailed = $0 { return true } else { return false }
        }
        #expect(directory.contents.isEmpty)
    }

    /// The convenience writer leaves nothing behind when one tensor's data has the wrong size.
    @Test func staticWriteFailureLeavesNothing() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        expectSafeTensorsError({
            try SafeTensorsWriter.write(path: directory.file("m"), tensors: [
                (TensorEntry(name: "a", dtype: .F32, shape: [1]), floatBytes([1])),
                (TensorEntry(name: "b", dtype: .F32, shape: [2]), floatBytes([1])),
            ])
        }) { if case .sizeMismatch(_, "b", 8, 4) = $0 { return true } else { return false } }
        #expect(directory.contents.isEmpty)
    }
}
