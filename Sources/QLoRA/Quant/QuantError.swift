/// Everything that can go wrong while quantizing, dequantizing or loading 4-bit tensors. Each message
/// says what was wrong, where (file, tensor), and what to do.
public enum QuantError: Error, CustomStringConvertible, Equatable {
    case badBlocksize(Int)
    case unsupportedDType(tensor: String, dtype: String)
    case shapeMismatch(tensor: String, expected: String, actual: String)
    case missingTensor(path: String, tensor: String)
    case badQuantState(tensor: String, reason: String)
    case notADirectory(String)
    case noConfig(directory: String)
    case noSafeTensors(directory: String)
    case badConfig(path: String, reason: String)
    case outputIsInput(String)
    case outputNotWritable(path: String, reason: String)
    case emptyTensor(tensor: String)
    /// One of the above, in a file the message should name.
    indirect case inFile(path: String, QuantError)

    public var description: String {
        switch self {
        case .badBlocksize(let size):
            return "blocksize \(size) is not supported: use a power of two from 32 to 4096 (bitsandbytes and transformers use 64)."
        case .unsupportedDType(let tensor, let dtype):
            return "tensor '\(tensor)' has dtype \(dtype); only F32, BF16 and F16 weights can be quantized. Convert the checkpoint to one of those first."
        case .shapeMismatch(let tensor, let expected, let actual):
            return "tensor '\(tensor)': expected \(expected), found \(actual). The checkpoint is corrupt or was written by an incompatible tool; re-quantize it with `qlora quantize`."
        case .missingTensor(let path, let tensor):
            return "\(path): tensor '\(tensor)' is missing. A 4-bit checkpoint needs <module>.weight, .weight.absmax, .weight.quant_map and .weight.quant_state.bitsandbytes__<type> (plus .nested_absmax / .nested_quant_map with double quantization)."
        case .badQuantState(let tensor, let reason):
            return "tensor '\(tensor)': invalid bitsandbytes quant state: \(reason). Re-quantize the model with `qlora quantize`."
        case .notADirectory(let path):
            return "\(path) is not a directory. Pass a Hugging Face model directory (config.json + *.safetensors)."
        case .noConfig(let directory):
            return "\(directory) has no config.json; it does not look like a Hugging Face model directory."
        case .noSafeTensors(let directory):
            return "\(directory) has no .safetensors files. Only safetensors checkpoints are supported; convert pytorch_model.bin first."
        case .badConfig(let path, let reason):
            return "\(path): \(reason)."
        case .outputNotWritable(let path, let reason):
            return "cannot write the output directory \(path): \(reason). Choose an --output in a writable location; nothing was quantized."
        case .outputIsInput(let path):
            return "the output directory \(path) is the input directory; choose another --output so the original checkpoint is kept."
        case .emptyTensor(let tensor):
            return "tensor '\(tensor)' has no elements and cannot be quantized."
        case .inFile(let path, let error):
            return error.description.hasPrefix(path) ? error.description : "\(path): \(error.description)"
        }
    }
}
