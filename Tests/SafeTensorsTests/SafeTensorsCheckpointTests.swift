import Foundation
import Testing
@testable import SafeTensors

@Suite("SafeTensorsCheckpoint")
struct SafeTensorsCheckpointTests {
    /// Writes `shards` (file name -> tensors) into `directory`, plus an index mapping every tensor
    /// to its shard, with `extraIndexEntries` added to the weight map as given.
    static func writeSharded(_ directory: TemporaryDirectory, shards: [String: [(TensorEntry, Data)]],
                             extraIndexEntries: [String: String] = [:], writeIndex: Bool = true) throws {
        var weightMap: [String: String] = extraIndexEntries
        var total = 0
        for (shard, tensors) in shards {
            try SafeTensorsWriter.write(path: directory.file(shard), tensors: tensors, metadata: ["format": "pt"])
            for (entry, data) in tensors {
                weightMap[entry.name] = shard
                total += data.count
            }
        }
        if writeIndex {
            let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(to: URL(fileURLWithPath: directory.file(SafeTensorsCheckpoint.indexFileName)))
        }
    }

    static let shardA: [(TensorEntry, Data)] = [
        (TensorEntry(name: "model.embed_tokens.weight", dtype: .F32, shape: [2, 3]), floatBytes([1, 2, 3, 4, 5, 6])),
        (TensorEntry(name: "model.norm.weight", dtype: .BF16, shape: [2]), Data([0x80, 0x3f, 0x00, 0xc0])),  // 1, -2
    ]
    static let shardB: [(TensorEntry, Data)] = [
        (TensorEntry(name: "lm_head.weight", dtype: .F32, shape: [3]), floatBytes([7, 8, 9])),
        (TensorEntry(name: "step", dtype: .I64, shape: [1]), withUnsafeBytes(of: Int64(42).littleEndian) { Data($0) }),
    ]

    @Test func mergesShards() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Self.writeSharded(directory, shards: ["model-00001-of-00002.safetensors": Self.shardA, "model-00002-of-00002.safetensors": Self.shardB])
        let checkpoint = try SafeTensorsCheckpoint(directory: directory.path)
        #expect(checkpoint.isSharded)
        #expect(checkpoint.files.count == 2)
        #expect(Set(checkpoint.names) == ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "step"])
        #expect(checkpoint.names.count == 4)
        #expect(try checkpoint.floats("model.embed_tokens.weight") == [1, 2, 3, 4, 5, 6])
        #expect(try checkpoint.floats("model.norm.weight") == [1, -2])
        #expect(try checkpoint.floats("lm_head.weight") == [7, 8, 9])
        #expect(try checkpoint.integers("step") == [42])
        #expect(try checkpoint.info("model.norm.weight").shape == [2])
        #expect(try checkpoint.rawBytes("lm_head.weight").count == 12)
        #expect(try checkpoint.file(for: "lm_head.weight").path.hasSuffix("model-00002-of-00002.safetensors"))
        #expect(try checkpoint.file(for: "model.norm.weight").path.hasSuffix("model-00001-of-00002.safetensors"))
        #expect(checkpoint.indexMetadata["total_size"]?.intValue == 24 + 4 + 12 + 8)
        #expect(checkpoint.dataByteCount == 48)
        expectSafeTensorsError({ _ = try checkpoint.info("nope") }) {
            if case .missingTensor(_, "nope") = $0 { return true } else { return false }
        }
        // Opening the index file directly gives the same view.
        let viaIndex = try SafeTensorsCheckpoint(directory: directory.file(SafeTensorsCheckpoint.indexFileName))
        #expect(viaIndex.names == checkpoint.names)
    }

    @Test func singleFileDirectoryAndFilePath() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try SafeTensorsWriter.write(path: directory.file("model.safetensors"), tensors: Self.shardA)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: directory.file("config.json")))
        let checkpoint = try SafeTensorsCheckpoint(directory: directory.path)
        #expect(!checkpoint.isSharded)
        #expect(checkpoint.names == ["model.embed_tokens.weight", "model.norm.weight"])
        #expect(try checkpoint.floats("model.norm.weight") == [1, -2])
        let byFile = try SafeTensorsCheckpoint(directory: fixturePath("adapter_qv_layer1.safetensors"))
        #expect(byFile.names.count == 4)
        #expect(try byFile.info("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape == [32, 4])
    }

    /// A directory with only a PEFT adapter file opens that file.
    @Test func lonelyAdapterFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try FileManager.default.copyItem(atPath: fixturePath("adapter_qv_layer1.safetensors"), toPath: directory.file("adapter_model.safetensors"))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: directory.file("adapter_config.json")))
        let checkpoint = try SafeTensorsCheckpoint(directory: directory.path)
        #expect(checkpoint.files.first?.path == directory.file("adapter_model.safetensors"))
    }

    @Test func missingShard() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Self.writeSharded(directory, shards: ["a.safetensors": Self.shardA], extraIndexEntries: ["lm_head.weight": "b.safetensors"])
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .missingShard(_, "b.safetensors") = $0 { return true } else { return false }
        }
    }

    @Test func tensorListedButNotInShard() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Self.writeSharded(directory, shards: ["a.safetensors": Self.shardA, "b.safetensors": Self.shardB],
                              extraIndexEntries: ["ghost.weight": "a.safetensors"])
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .tensorNotInShard(_, "a.safetensors", "ghost.weight") = $0 { return true } else { return false }
        }
    }

    /// The index says lm_head is in b, but a also stores it.
    @Test func tensorInTwoShards() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Self.writeSharded(directory, shards: ["a.safetensors": Self.shardA + [Self.shardB[0]], "b.safetensors": Self.shardB])
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .duplicateTensor("lm_head.weight", let files) = $0 { return files.count == 2 } else { return false }
        }
    }

    @Test func pytorchBinIsExplained() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Data([0x80, 0x02]).write(to: URL(fileURLWithPath: directory.file("pytorch_model.bin")))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: directory.file("config.json")))
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) { error in
            guard case .noSafeTensors(_, let found) = error, found.contains("pytorch_model.bin") else { return false }
            return error.description.contains("not supported") && error.description.contains("safe_serialization=True")
        }
    }

    @Test func emptyDirectory() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .noSafeTensors(_, let found) = $0 { return found.isEmpty } else { return false }
        }
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.file("absent")) }) {
            if case .cannotOpen = $0 { return true } else { return false }
        }
    }

    @Test func severalFilesWithoutIndex() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Self.writeSharded(directory, shards: ["a.safetensors": Self.shardA, "b.safetensors": Self.shardB], writeIndex: false)
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .badIndex = $0 { return true } else { return false }
        }
    }

    @Test(arguments: [
        "not json", "[]", #"{"metadata": {}}"#, #"{"weight_map": {"a": 3}}"#,
        #"{"weight_map": {"a": "../model.safetensors"}}"#, #"{"weight_map": {"a": "sub/x.safetensors"}}"#,
    ])
    func badIndexFiles(_ text: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Data(text.utf8).write(to: URL(fileURLWithPath: directory.file(SafeTensorsCheckpoint.indexFileName)))
        expectSafeTensorsError({ _ = try SafeTensorsCheckpoint(directory: directory.path) }) {
            if case .badIndex = $0 { return true } else { return false }
        }
    }
}
