/// Everything that can be wrong with a safetensors file or directory. Each message names the file
/// (and the tensor, where there is one) and says what to do.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case truncated(path: String, size: Int)
    case headerTooLarge(path: String, headerLength: UInt64)
    case headerBeyondFile(path: String, headerLength: UInt64, fileSize: Int)
    case invalidHeader(path: String, reason: String)
    case unknownDType(path: String, tensor: String, dtype: String)
    case badOffsets(path: String, tensor: String, reason: String)
    case sizeMismatch(path: String, tensor: String, expected: Int, actual: Int)
    case overlapping(path: String, tensor: String, other: String)
    case missingTensor(path: String, tensor: String)
    case wrongDType(path: String, tensor: String, expected: String, actual: DType)
    case misaligned(path: String, tensor: String)
    case badIndex(path: String, reason: String)
    case writeFailed(path: String, reason: String)
    /// The tensors' data_offsets end at `covered` but the data section is `dataSize` bytes.
    case incompleteData(path: String, dataSize: Int, covered: Int)
    /// A shard named by a sharded checkpoint's index does not exist.
    case missingShard(index: String, shard: String)
    /// The index maps `tensor` to `shard`, but that shard has no such tensor.
    case tensorNotInShard(index: String, shard: String, tensor: String)
    /// The same tensor name is stored in two files of one checkpoint.
    case duplicateTensor(tensor: String, files: [String])
    /// A directory holds no safetensors checkpoint; `found` lists what was there instead (e.g. .bin files).
    case noSafeTensors(directory: String, found: [String])

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "\(path): cannot open (\(reason)). Check the path and permissions."
        case .truncated(let path, let size):
            return "\(path): file is \(size) bytes, too short for a safetensors header (needs at least 8). The file is truncated or not safetensors; re-download or re-export it."
        case .headerTooLarge(let path, let length):
            return "\(path): header length \(length) exceeds the 100 MB limit; the file is corrupt or not safetensors."
        case .headerBeyondFile(let path, let length, let size):
            return "\(path): header length \(length) runs past the end of the \(size)-byte file; the file is truncated or corrupt."
        case .invalidHeader(let path, let reason):
            return "\(path): invalid safetensors header: \(reason)."
        case .unknownDType(let path, let tensor, let dtype):
            return "\(path): tensor '\(tensor)' has unknown dtype '\(dtype)' (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))."
        case .badOffsets(let path, let tensor, let reason):
            return "\(path): tensor '\(tensor)' has bad data_offsets: \(reason). The file is truncated or corrupt."
        case .sizeMismatch(let path, let tensor, let expected, let actual):
            return "\(path): tensor '\(tensor)' shape and dtype need \(expected) bytes but its data_offsets span \(actual). The file is corrupt."
        case .overlapping(let path, let tensor, let other):
            return "\(path): tensors '\(tensor)' and '\(other)' overlap in the data section. The file is corrupt."
        case .missingTensor(let path, let tensor):
            return "\(path): no tensor named '\(tensor)'. Run `qlora inspect \(path)` to list the tensors."
        case .wrongDType(let path, let tensor, let expected, let actual):
            return "\(path): tensor '\(tensor)' is \(actual.rawValue), expected \(expected)."
        case .misaligned(let path, let tensor):
            return "\(path): tensor '\(tensor)' data is not aligned to its element size; cannot view it in place."
        case .badIndex(let path, let reason):
            return "\(path): invalid sharded-checkpoint index: \(reason)."
        case .writeFailed(let path, let reason):
            return "\(path): could not write (\(reason)). Nothing was left under that name; check free disk space and permissions."
        case .incompleteData(let path, let dataSize, let covered):
            return "\(path): the tensors' data_offsets cover \(covered) bytes but the data section holds \(dataSize); safetensors requires them to cover it exactly. The file is truncated or corrupt; re-download or re-export it."
        case .missingShard(let index, let shard):
            return "\(index): lists shard '\(shard)', which does not exist beside it. Download the missing shard (or the whole checkpoint) again."
        case .tensorNotInShard(let index, let shard, let tensor):
            return "\(index): maps tensor '\(tensor)' to '\(shard)', but that shard has no such tensor. The index and the shards do not belong together; re-download the checkpoint."
        case .duplicateTensor(let tensor, let files):
            return "tensor '\(tensor)' is stored in more than one file (\(files.joined(separator: ", "))); the checkpoint is inconsistent. Remove stray files from the directory or re-download it."
        case .noSafeTensors(let directory, let found):
            let bins = found.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".pt") || $0.hasSuffix(".pth") }
            if !bins.isEmpty {
                return "\(directory): no model.safetensors or model.safetensors.index.json, only PyTorch pickle checkpoints (\(bins.joined(separator: ", "))), which are not supported (loading them would mean running pickle code). Convert once with transformers: `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`, or download the repository's safetensors files."
            }
            return "\(directory): no safetensors checkpoint (expected model.safetensors, or model.safetensors.index.json with its shards, or a single *.safetensors file)\(found.isEmpty ? "; the directory is empty" : "; found: \(found.prefix(10).joined(separator: ", "))")."
        }
    }
}
