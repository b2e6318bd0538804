/// Errors loading or running a model. Each names the file or tensor and says what to do.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingConfig(path: String)
    case badConfig(path: String, reason: String)
    case unsupported(path: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], actual: [Int])
    case unsupportedDType(path: String, tensor: String, dtype: String)
    case tokenOutOfRange(id: Int, vocab: Int, position: Int)
    case batchTooLarge(rows: Int, seqLen: Int, maxRows: Int, maxSeqLen: Int)
    /// Sequences that cannot be decoded together.
    case badBatch(String)

    public var description: String {
        switch self {
        case .missingConfig(let path):
            return "\(path): no config.json. Point at a Hugging Face model directory (config.json + *.safetensors)."
        case .badConfig(let path, let reason):
            return "\(path): \(reason)"
        case .unsupported(let path, let reason):
            return "\(path): not supported: \(reason)"
        case .missingTensor(let path, let tensor):
            return "\(path): tensor '\(tensor)' is missing. Is this a Llama-family checkpoint? `qlora inspect \(path)` lists its tensors."
        case .wrongShape(let path, let tensor, let expected, let actual):
            return "\(path): tensor '\(tensor)' has shape \(actual), config.json implies \(expected). The weights and config.json do not belong together."
        case .unsupportedDType(let path, let tensor, let dtype):
            return "\(path): tensor '\(tensor)' has dtype \(dtype); expected F32, F16 or BF16 (or a bitsandbytes 4-bit weight)."
        case .tokenOutOfRange(let id, let vocab, let position):
            return "token id \(id) at position \(position) is outside the vocabulary (size \(vocab)). The tokenizer does not match the model."
        case .batchTooLarge(let rows, let seqLen, let maxRows, let maxSeqLen):
            return "batch \(rows) x \(seqLen) exceeds the \(maxRows) x \(maxSeqLen) the model's buffers were sized for."
        case .badBatch(let reason):
            return "cannot decode these sequences together: \(reason)"
        }
    }
}
