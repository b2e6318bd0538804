import Foundation
import QLoRA
import SafeTensors

/// A valid input for one target: its files (name -> bytes) and which of them may be mutated.
public struct FuzzSeed {
    public var target: FuzzTarget
    public var label: String
    public var files: [(name: String, bytes: [UInt8])]
    /// Indexes into `files` of those that mutations may touch, with their format and structure.
    public var mutable: [(index: Int, format: Mutator.Format, structure: FileStructure)]
}

/// The seed corpus, from Fixtures/ plus a few inputs made here (JSONL datasets, a sharded checkpoint,
/// a token file) that the fixtures do not hold.
public enum FuzzSeeds {
    public static func load(fixtures: URL, scratch: URL) throws -> (seeds: [FuzzSeed], context: FuzzContext) {
        func bytes(_ relative: String) throws -> [UInt8] {
            let url = fixtures.appendingPathComponent(relative)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw RuntimeError.writeFailed(path: url.path, reason: "fuzz seed missing: run from the repository root or pass --fixtures")
            }
            return [UInt8](data)
        }
        func structure(_ b: [UInt8], _ format: Mutator.Format) -> FileStructure {
            switch format {
            case .safetensors: return .safetensors(b)
            case .gguf: return .gguf(b)
            case .json, .jsonl: return .text(b)
            case .binary: return .records(b, size: 8)
            }
        }
        func seed(_ target: FuzzTarget, _ label: String, _ files: [(String, [UInt8])], mutable: [(Int, Mutator.Format)]) -> FuzzSeed {
            FuzzSeed(target: target, label: label, files: files.map { (name: $0.0, bytes: $0.1) },
                     mutable: mutable.map { (index: $0.0, format: $0.1, structure: structure(files[$0.0].1, $0.1)) })
        }
        var seeds: [FuzzSeed] = []

        for file in ["safetensors/adapter_qv_layer1.safetensors", "safetensors/codebooks.safetensors", "safetensors/linear4bit_state_dict.safetensors",
                     "safetensors/weight_3x67_f32.safetensors", "safetensors/weight_16x192_f16.safetensors", "nf4/weight_7x90_f32.safetensors"] {
            seeds.append(seed(.safetensorsFile, file, [("input.safetensors", try bytes(file))], mutable: [(0, .safetensors)]))
        }
        seeds.append(seed(.safetensorsCheckpoint, "two shards", try shardedCheckpoint(try bytes("safetensors/adapter_qv_layer1.safetensors"), scratch: scratch),
                          mutable: [(0, .json), (1, .safetensors), (2, .safetensors)]))

        for file in ["gguf-model/tiny-untied.gguf", "gguf-model/tiny-kquant.gguf", "gguf-model/tiny-tied.gguf",
                     "gguf-model/tiny-smollm3.gguf", "gguf-model/tiny-phi3.gguf", "gguf-model/tiny-rope-freqs.gguf"] {
            let b = try bytes(file)
            seeds.append(seed(.ggufFile, file, [("input.gguf", b)], mutable: [(0, .gguf)]))
            seeds.append(seed(.modelGGUF, file, [("model.gguf", b)], mutable: [(0, .gguf)]))
        }
        seeds.append(seed(.tokenizerGGUF, "smollm2-tokenizer.gguf", [("tokenizer.gguf", try bytes("gguf-model/smollm2-tokenizer.gguf"))], mutable: [(0, .gguf)]))
        // SentencePiece vocabularies (scores, byte and control tokens; llama, phi3 and gemma3 classes).
        for file in ["gguf-spm/spm-llama.gguf", "gguf-spm/spm-phi3.gguf", "gguf-spm/spm-gemma3.gguf"] {
            seeds.append(seed(.tokenizerGGUF, file, [("tokenizer.gguf", try bytes(file))], mutable: [(0, .gguf)]))
        }
        for type in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16"] {
            seeds.append(seed(.ggmlBlocks, type, [("\(type).blocks", try bytes("gguf-blocks/\(type).blocks"))], mutable: [(0, .binary)]))
        }

        let configs = (try FileManager.default.contentsOfDirectory(atPath: fixtures.appendingPathComponent("configs").path))
            .filter { $0.hasSuffix(".json") }.sorted()
        for name in configs {
            seeds.append(seed(.llamaConfig, name, [("config.json", try bytes("configs/" + name))], mutable: [(0, .json)]))
        }
        for dir in ["tiny-llama/untied-bf16", "tiny-llama/untied-nf4", "gemma3/model", "qwen3/model-nf4", "phi3/model", "smollm3/model"] {
            seeds.append(seed(.llamaConfig, dir, [("config.json", try bytes(dir + "/config.json"))], mutable: [(0, .json)]))
        }
        for dir in ["tiny-llama/untied-bf16", "tiny-llama/untied-nf4", "tiny-llama/tied-fp32"] {
            seeds.append(seed(.modelSafetensors, dir, [("config.json", try bytes(dir + "/config.json")), ("model.safetensors", try bytes(dir + "/model.safetensors"))],
                              mutable: [(0, .json), (1, .safetensors)]))
        }
        for dir in ["tokenizer-sp/legacy", "tokenizer-sp/metaspace", "tokenizer-encoder/roberta"] {
            seeds.append(seed(.tokenizerJSON, dir, [("tokenizer.json", try bytes(dir + "/tokenizer.json"))], mutable: [(0, .json)]))
        }
        for dir in ["tiny-llama-cases/untied_fp32/adapter_step1", "tiny-llama-cases/untied_fp32_qv_layer1/adapter_step1", "tiny-llama-cases/untied_fp32_rslora/adapter_init"] {
            seeds.append(seed(.adapter, dir, [("adapter_config.json", try bytes(dir + "/adapter_config.json")),
                                              ("adapter_model.safetensors", try bytes(dir + "/adapter_model.safetensors"))],
                              mutable: [(0, .json), (1, .safetensors)]))
        }
        for (index, text) in datasets.enumerated() {
            seeds.append(seed(.jsonlDataset, "dataset \(index)", [("data.jsonl", Array(text.utf8))], mutable: [(0, .jsonl)]))
        }

        // The JSONL target tokenizes with the legacy SentencePiece-style tokenizer (small, fast).
        let tokenizerDirectory = scratch.appendingPathComponent("tokenizer")
        try FileManager.default.createDirectory(at: tokenizerDirectory, withIntermediateDirectories: true)
        try Data(try bytes("tokenizer-sp/legacy/tokenizer.json")).write(to: tokenizerDirectory.appendingPathComponent("tokenizer.json"))
        try Data(try bytes("tokenizer/chat_template.jinja")).write(to: tokenizerDirectory.appendingPathComponent("chat_template.jinja"))
        let vocab = try Tokenizer(directory: tokenizerDirectory).vocabSize
        let dataset = try DatasetTokenizer(modelDirectory: tokenizerDirectory, vocabSize: vocab, purpose: "fuzzing")
        let context = FuzzContext(adapterModelConfig: try LlamaConfig.load(directory: fixtures.appendingPathComponent("tiny-llama/untied-fp32")),
                                  dataset: dataset, scratch: scratch)

        for (index, text) in datasets.enumerated() where index < 2 {
            let jsonl = scratch.appendingPathComponent("tokens-\(index).jsonl")
            try Data(text.utf8).write(to: jsonl)
            let url = scratch.appendingPathComponent("tokens-\(index).qltokens")
            _ = try TokenFileWriter.write(jsonl: jsonl, dataset: dataset, fingerprint: UInt64(index), to: url)
            seeds.append(seed(.tokenFile, "token file \(index)", [("data.qltokens", [UInt8](try Data(contentsOf: url)))], mutable: [(0, .binary)]))
        }
        return (seeds, context)
    }

    /// One line of each record kind, and a larger mixed file.
    static let datasets: [String] = [
        """
        {"text": "Hello world, this is a short document."}
        {"prompt": "Question: 2+2?", "completion": " 4"}
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        {"input_ids": [1, 5, 9, 12], "labels": [-100, 5, 9, 12]}

        """,
        (0..<40).map { i in
            i % 3 == 0 ? "{\"text\": \"line \(i) with some words \(String(repeating: "x", count: i))\"}"
                : i % 3 == 1 ? "{\"prompt\": \"p\(i)\", \"completion\": \"c\(i) é ü\"}"
                : "{\"input_ids\": [\((1...(i % 7 + 2)).map(String.init).joined(separator: ", "))]}"
        }.joined(separator: "\n"),
    ]

    /// The adapter file split into two shards with a Hugging Face index, as files of one input.
    static func shardedCheckpoint(_ single: [UInt8], scratch: URL) throws -> [(String, [UInt8])] {
        let source = scratch.appendingPathComponent("shard-source.safetensors")
        try Data(single).write(to: source)
        let file = try SafeTensorsFile(path: source.path)
        let names = file.names.sorted()
        let halves = [Array(names.prefix(names.count / 2)), Array(names.dropFirst(names.count / 2))]
        var out: [(String, [UInt8])] = []
        var weightMap: [String: String] = [:]
        for (i, half) in halves.enumerated() {
            let shard = "model-0000\(i + 1)-of-00002.safetensors"
            let url = scratch.appendingPathComponent(shard)
            let tensors = try half.map { name -> (TensorEntry, Data) in
                let info = try file.info(name)
                return (TensorEntry(name: name, dtype: info.dtype, shape: info.shape), Data(try file.rawBytes(name)))
            }
            try SafeTensorsWriter.write(path: url.path, tensors: tensors, metadata: ["format": "pt"])
            out.append((shard, [UInt8](try Data(contentsOf: url))))
            for name in half { weightMap[name] = shard }
        }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": single.count], "weight_map": weightMap], options: [.sortedKeys])
        return [(SafeTensorsCheckpoint.indexFileName, [UInt8](index))] + out
    }
}
