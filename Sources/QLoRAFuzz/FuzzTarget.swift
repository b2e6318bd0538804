import Foundation
import GGUF
import QLoRA
import SafeTensors

/// The loaders under test. Each reads the files of one input from a scratch directory and touches
/// everything a real run would: every tensor's bytes, dequantized blocks, tokenizer encode/decode.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case safetensorsFile = "safetensors-file"
    case safetensorsCheckpoint = "safetensors-checkpoint"
    case ggufFile = "gguf-file"
    case ggmlBlocks = "ggml-blocks"
    case llamaConfig = "config-json"
    case modelSafetensors = "model-safetensors"
    case modelGGUF = "model-gguf"
    case tokenizerJSON = "tokenizer-json"
    case tokenizerGGUF = "tokenizer-gguf"
    case adapter = "adapter"
    case jsonlDataset = "jsonl-dataset"
    case tokenFile = "token-file"

    /// Relative share of the random inputs, set so that a 1M-input run spends its time evenly-ish
    /// (model and tokenizer loads cost milliseconds, header parses microseconds).
    public var weight: Double {
        switch self {
        case .safetensorsFile: 20
        case .safetensorsCheckpoint: 6
        case .ggufFile: 18
        case .ggmlBlocks: 8
        case .llamaConfig: 14
        case .modelSafetensors: 3
        case .modelGGUF: 3
        case .tokenizerJSON: 2
        case .tokenizerGGUF: 0.1
        case .adapter: 8
        case .jsonlDataset: 12
        case .tokenFile: 6
        }
    }
}

/// Things the targets need that are not themselves fuzzed (built once per process).
public final class FuzzContext {
    /// The config the adapter seeds were trained for.
    public let adapterModelConfig: LlamaConfig
    /// The tokenizer the JSONL target tokenizes with.
    public let dataset: DatasetTokenizer
    public let scratch: URL

    init(adapterModelConfig: LlamaConfig, dataset: DatasetTokenizer, scratch: URL) {
        self.adapterModelConfig = adapterModelConfig
        self.dataset = dataset
        self.scratch = scratch
    }
}

enum TargetRunner {
    /// Elements read out of one tensor at most (inputs are small; this bounds a pathological one).
    static let maxElements = 1 << 22

    static func run(_ target: FuzzTarget, directory: URL, files: [String], context: FuzzContext) throws {
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        switch target {
        case .safetensorsFile:
            touch(try SafeTensorsFile(path: path(files[0])))
        case .safetensorsCheckpoint:
            let checkpoint = try SafeTensorsCheckpoint(directory: directory.path)
            for file in checkpoint.files { touch(file) }
        case .ggufFile:
            let file = try GGUFFile(path: path(files[0]))
            for tensor in file.tensors {
                guard let type = tensor.type else { continue }
                let bytes = try file.data(tensor.name)
                guard bytes.count == tensor.byteCount else { fatalError("GGUF data size disagrees with the tensor info") }
                if type.isSupported, tensor.elementCount <= maxElements { _ = try file.floats(tensor.name) }
            }
        case .ggmlBlocks:
            let name = files[0]
            guard let type = GGMLType.supported.first(where: { name.hasPrefix($0.description + ".") }) else { return }
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            let geometry = type.blockGeometry
            let blocks = data.count / geometry.bytes
            var out = [Float](repeating: 0, count: blocks * geometry.elements)
            data.withUnsafeBytes { raw in
                out.withUnsafeMutableBufferPointer { o in
                    if blocks > 0 { type.dequantize(blocks: blocks, from: raw.baseAddress!, into: o.baseAddress!) }
                }
            }
        case .llamaConfig:
            let url = directory.appendingPathComponent(files[0])
            let config = try LlamaConfig.load(directory: url)
            _ = config.architectureSummary
            _ = config.totalParameterCount
            _ = config.decoderLinearParameterCount
        case .modelSafetensors:
            let model = try LlamaLoader.load(directory: directory, format: .stored, precision: .fp32)
            _ = model.config.totalParameterCount
        case .modelGGUF:
            let model = try LlamaLoader.load(directory: directory.appendingPathComponent(files[0]), format: .stored, precision: .fp32)
            _ = model.config.totalParameterCount
        case .tokenizerJSON:
            exercise(try Tokenizer(directory: directory))
        case .tokenizerGGUF:
            exercise(try Tokenizer(directory: directory.appendingPathComponent(files[0])))
        case .adapter:
            let adapters = try PEFTAdapterIO.load(directory: directory, modelConfig: context.adapterModelConfig)
            _ = adapters.parameters.parameterCount
        case .jsonlDataset:
            let url = directory.appendingPathComponent(files[0])
            let records = try TrainingExample.load(jsonl: url)
            _ = try context.dataset.tokenize(records, file: url)
        case .tokenFile:
            let file = try TokenFile(url: directory.appendingPathComponent(files[0]))
            for example in 0..<file.exampleCount {
                let length = file.length(ofExample: example)
                guard length >= 0, length <= file.tokenCount else { fatalError("token file example length out of range") }
                var ids = [Int32](repeating: 0, count: length), labels = ids
                ids.withUnsafeMutableBufferPointer { i in
                    labels.withUnsafeMutableBufferPointer { l in file.copy(example: example, range: 0..<length, ids: i.baseAddress!, labels: l.baseAddress!) }
                }
                _ = file.lastID(ofExample: example)
            }
        }
    }

    /// Reads every tensor of a safetensors file as its dtype allows.
    static func touch(_ file: SafeTensorsFile) {
        for tensor in file.tensors {
            guard let bytes = try? file.rawBytes(tensor.name), bytes.count == tensor.byteCount else { fatalError("rawBytes disagrees with the header") }
            guard tensor.elementCount <= maxElements else { continue }
            switch tensor.dtype {
            case .F32, .F16, .BF16: _ = try? file.floats(tensor.name)
            case .U8, .I8, .I16, .U16, .I32, .U32, .I64, .BOOL: _ = try? file.integers(tensor.name)
            default: _ = bytes.reduce(0, &+)
            }
        }
    }

    static func exercise(_ tokenizer: Tokenizer) {
        for text in ["Hello world! 123", "  naïve café\n\tend", "<|im_start|>user\nhi<|im_end|>", "\u{1F600}\u{0}x"] {
            let ids = tokenizer.encode(text, addSpecialTokens: true)
            _ = tokenizer.decode(ids)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
        }
        // Ids beyond the vocabulary must decode to something, never trap.
        _ = tokenizer.decode([0, 1, Int32(tokenizer.vocabSize), Int32.max, -1])
    }
}
