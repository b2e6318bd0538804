import Foundation

/// A model checkpoint: one safetensors file, or the shards listed by a Hugging Face index
/// (`model.safetensors.index.json`, `{"metadata": {...}, "weight_map": {tensor: shard file}}`),
/// presented as one set of tensors. Accessors have the same meaning as on `SafeTensorsFile`.
///
/// Which files are used, for a directory (the first rule that applies):
/// 1. `model.safetensors` (as transformers does, it wins over an index beside it);
/// 2. `model.safetensors.index.json` and the shards it names;
/// 3. exactly one other `*.safetensors.index.json`, or exactly one `*.safetensors` file
///    (e.g. a PEFT `adapter_model.safetensors`).
/// A path to a `.safetensors` file opens just that file; a path to an `.index.json` opens its shards.
public final class SafeTensorsCheckpoint: @unchecked Sendable {
    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// The directory that holds the files.
    public let directory: String
    /// The index file, for a sharded checkpoint.
    public let indexPath: String?
    /// The index's `metadata` object (e.g. `total_size`), empty without an index.
    public let indexMetadata: [String: JSONValue]
    /// The open files, shards in file-name order.
    public let files: [SafeTensorsFile]
    /// Every tensor: files in order, and within a file in data-offset order.
    public let tensors: [TensorInfo]
    private let location: [String: Int]  // tensor name -> index into `files`

    public convenience init(url: URL) throws { try self.init(directory: url.path) }

    public init(directory path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw SafeTensorsError.cannotOpen(path: path, reason: "no such file or directory")
        }
        let chosen = try isDirectory.boolValue ? Self.choose(in: path) : Self.classify(file: path)
        let url = URL(fileURLWithPath: chosen.path)
        directory = url.deletingLastPathComponent().path
        var files: [SafeTensorsFile] = []
        var location: [String: Int] = [:]
        var tensors: [TensorInfo] = []

        func add(_ file: SafeTensorsFile) throws {
            let fileIndex = files.count
            files.append(file)
            for tensor in file.tensors {
                if let other = location[tensor.name] {
                    throw SafeTensorsError.duplicateTensor(tensor: tensor.name, files: [files[other].path, file.path])
                }
                location[tensor.name] = fileIndex
                tensors.append(tensor)
            }
        }

        if chosen.isIndex {
            indexPath = chosen.path
            let (metadata, weightMap) = try Self.readIndex(chosen.path)
            indexMetadata = metadata
            let shardNames = Set(weightMap.map(\.shard)).sorted()
            var shardIndex: [String: Int] = [:]
            for shard in shardNames {
                let shardPath = directory + "/" + shard
                guard FileManager.default.fileExists(atPath: shardPath) else {
                    throw SafeTensorsError.missingShard(index: chosen.path, shard: shard)
                }
                shardIndex[shard] = files.count
                try add(SafeTensorsFile(path: shardPath))
            }
            for (tensor, shard) in weightMap where location[tensor] != shardIndex[shard] {
                throw SafeTensorsError.tensorNotInShard(index: chosen.path, shard: shard, tensor: tensor)
            }
        } else {
            indexPath = nil
            indexMetadata = [:]
            try add(SafeTensorsFile(path: chosen.path))
        }
        self.files = files
        self.tensors = tensors
        self.location = location
    }

    public var names: [String] { tensors.map(\.name) }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// True when the tensors come from an index and its shards.
    public var isSharded: Bool { indexPath != nil }

    /// The file that holds `name`.
    public func file(for name: String) throws -> SafeTensorsFile {
        guard let i = location[name] else {
            throw SafeTensorsError.missingTensor(path: indexPath ?? files.first?.path ?? directory, tensor: name)
        }
        return files[i]
    }

    public func info(_ name: String) throws -> TensorInfo { try file(for: name).info(name) }

    /// The tensor's bytes, in place in its file's mapping (valid while this object lives).
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer { try file(for: name).rawBytes(name) }

    public func view<T>(_ name: String, as type: T.Type, dtype: DType) throws -> UnsafeBufferPointer<T> {
        try file(for: name).view(name, as: type, dtype: dtype)
    }

    public func floats(_ name: String) throws -> [Float] { try file(for: name).floats(name) }

    public func integers(_ name: String) throws -> [Int] { try file(for: name).integers(name) }

    /// Total bytes of tensor data over all files.
    public var dataByteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    // MARK: - Finding the files

    private static func classify(file path: String) throws -> (path: String, isIndex: Bool) {
        if path.hasSuffix(".index.json") { return (path, true) }
        if path.hasSuffix(".bin") || path.hasSuffix(".pt") || path.hasSuffix(".pth") {
            let url = URL(fileURLWithPath: path)
            throw SafeTensorsError.noSafeTensors(directory: url.deletingLastPathComponent().path, found: [url.lastPathComponent])
        }
        return (path, false)
    }

    private static func choose(in directory: String) throws -> (path: String, isIndex: Bool) {
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw SafeTensorsError.cannotOpen(path: directory, reason: "cannot list the directory")
        }
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        if entries.contains(singleFileName) { return (base + "/" + singleFileName, false) }
        if entries.contains(indexFileName) { return (base + "/" + indexFileName, true) }
        let indexes = entries.filter { $0.hasSuffix(".safetensors.index.json") }
        let singles = entries.filter { $0.hasSuffix(".safetensors") }
        if indexes.count == 1 { return (base + "/" + indexes[0], true) }
        if indexes.isEmpty, singles.count == 1 { return (base + "/" + singles[0], false) }
        if indexes.count > 1 || singles.count > 1 {
            throw SafeTensorsError.badIndex(path: directory, reason: "several safetensors files or indexes (\((indexes + singles).joined(separator: ", "))) and no \(singleFileName) or \(indexFileName) to say which form the model; pass the file or index to use")
        }
        throw SafeTensorsError.noSafeTensors(directory: directory, found: entries.filter { !$0.hasPrefix(".") })
    }

    /// The index's metadata and its weight map as (tensor, shard file name) pairs.
    static func readIndex(_ path: String) throws -> (metadata: [String: JSONValue], weightMap: [(tensor: String, shard: String)]) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SafeTensorsError.cannotOpen(path: path, reason: error.localizedDescription)
        }
        let root: JSONValue
        do {
            root = try JSONValue.parse([UInt8](data))
        } catch {
            throw SafeTensorsError.badIndex(path: path, reason: "not valid JSON (\(error))")
        }
        guard case .object = root else {
            throw SafeTensorsError.badIndex(path: path, reason: "the index is \(root.kindName), not a JSON object")
        }
        guard case .object(let map)? = root["weight_map"] else {
            throw SafeTensorsError.badIndex(path: path, reason: "no \"weight_map\" object mapping tensor names to shard files")
        }
        var weightMap: [(tensor: String, shard: String)] = []
        for (tensor, value) in map {
            guard let shard = value.stringValue else {
                throw SafeTensorsError.badIndex(path: path, reason: "weight_map entry '\(tensor)' is \(value.kindName), not a file name")
            }
            guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw SafeTensorsError.badIndex(path: path, reason: "weight_map entry '\(tensor)' names '\(shard)', which is not a plain file name in the index's directory")
            }
            weightMap.append((tensor, shard))
        }
        var metadata: [String: JSONValue] = [:]
        if case .object(let members)? = root["metadata"] {
            for (key, value) in members { metadata[key] = value }
        }
        return (metadata, weightMap)
    }
}
