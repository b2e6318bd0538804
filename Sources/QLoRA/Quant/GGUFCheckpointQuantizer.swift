import Foundation
import GGUF
import SafeTensors

/// `qlora quantize x.gguf`: a GGUF model written as a Hugging Face bitsandbytes 4-bit directory
/// (model.safetensors, config.json with quantization_config, tokenizer.json and tokenizer_config.json
/// rebuilt from the metadata), so transformers and every other command load it as a QLoRA base.
///
/// Each tensor is dequantized from its blocks (q/k rows back in Hugging Face's order), the decoder
/// linears are quantized to NF4/FP4, everything else is kept in fp32 (a GGUF block type is not exact in
/// bf16). One linear is dequantized at a time; the 4-bit outputs and fp32 companions are held until
/// the file is written.
public enum GGUFCheckpointQuantizer {
    public static func quantize(input: String, output: String, options: QuantizeOptions = QuantizeOptions(),
                                progress: (QuantizeEvent) -> Void = { _ in }) throws -> QuantizeSummary {
        let start = Date()
        try BlockwiseQuantizer.validate(blocksize: options.blocksize)
        let outputURL = URL(fileURLWithPath: output).standardizedFileURL
        try CheckpointQuantizer.prepareOutput(outputURL, as: output)
        let file = try GGUFFile(path: input)
        let config = try GGUFModelLoader.config(file)
        // A file without tokenizer metadata (rare) gets no tokenizer files.
        let tokenizer = file["tokenizer.ggml.model"] == nil ? nil : try Tokenizer.huggingFaceFiles(gguf: file)

        // (HF name, GGUF name, stored-row order if permuted, what llama.cpp added to it) of every tensor,
        // in HF's sorted order. Gemma's norms are stored as 1 + w.
        let shift = config.normWeightOffset
        var names: [(hf: String, gguf: String, rows: [Int32]?, offset: Float)] = [("model.embed_tokens.weight", "token_embd.weight", nil, 0),
                                                                                  ("model.norm.weight", "output_norm.weight", nil, shift)]
        if !config.tieWordEmbeddings { names.append(("lm_head.weight", "output.weight", nil, 0)) }
        for layer in 0..<config.numHiddenLayers {
            for norm in config.layerNorms {
                names.append((config.normTensorName(layer: layer, norm), "blk.\(layer).\(norm.ggufName).weight", nil, shift))
            }
            for projection in config.layerProjections {
                let module = LlamaConfig.modulePath(layer: layer, projection)
                let rows = GGUFModelLoader.storedRows(config: config, projection: projection)
                let name = GGUFModelLoader.tensorName(layer: layer, projection)
                names.append((module + ".weight", name + ".weight", rows, 0))
                if config.hasBias(projection.moduleName) { names.append((module + ".bias", name + ".bias", rows, 0)) }
            }
        }
        names.sort { $0.hf < $1.hf }
        let targets = names.filter { CheckpointQuantizer.isQuantizable($0.hf, shape: [1, 1], skipModules: options.skipModules) }
        var summary = QuantizeSummary()
        summary.bytesBefore = file.tensors.reduce(0) { $0 + $1.byteCount }
        summary.largestTensorBytes = file.tensors.map(\.byteCount).max() ?? 0
        summary.outputDirectory = outputURL.path
        progress(.started(tensors: names.count, toQuantize: targets.count, parameters: file.tensors.reduce(0) { $0 + $1.elementCount }))

        var entries: [TensorEntry] = [], payload: [String: Data] = [:]
        var storageBytes = 0, quantizedIndex = 0
        for t in names {
            let info = try file.info(t.gguf)
            let values: [Float]
            if info.dimensions.count == 2 {
                let weight = try GGUFWeight(file: file, tensor: t.gguf, storedRow: t.rows)
                values = [Float](unsafeUninitializedCapacity: info.elementCount) { out, count in
                    weight.writeTile(rows: 0..<weight.outFeatures, into: out.baseAddress!, precision: .fp32)
                    count = info.elementCount
                }
            } else {
                let stored = try file.floats(t.gguf).map { $0 - t.offset }
                values = t.rows.map { order in order.map { stored[Int($0)] } } ?? stored
            }
            if CheckpointQuantizer.isQuantizable(t.hf, shape: info.shape, skipModules: options.skipModules) {
                let q = try values.withUnsafeBytes {
                    try QuantizedTensor.quantize($0.baseAddress!, dtype: .F32, shape: info.shape, quantType: options.quantType,
                                                 blocksize: options.blocksize, doubleQuant: options.doubleQuant,
                                                 rounding: options.rounding, threads: options.threads, name: t.hf)
                }
                for (entry, data) in BitsAndBytesFormat.tensors(q, weightName: t.hf) {
                    entries.append(entry)
                    payload[entry.name] = data
                }
                storageBytes += q.storageBytes
                summary.tensorsQuantized += 1
                summary.parametersQuantized += q.count
                quantizedIndex += 1
                progress(.quantized(name: t.hf, index: quantizedIndex, of: targets.count, parameters: q.count))
            } else {
                entries.append(TensorEntry(name: t.hf, dtype: .F32, shape: info.shape))
                payload[t.hf] = values.withUnsafeBytes { Data($0) }
                summary.tensorsKept += 1
                summary.parametersKept += values.count
            }
        }

        let modelPath = outputURL.appendingPathComponent("model.safetensors").path
        progress(.writing(path: modelPath))
        // Every tensor was dequantized: all of them are in the payload.
        try CheckpointQuantizer.writeModel(to: modelPath, entries: entries, payload: &payload) { name, _ in
            preconditionFailure("\(name) has no bytes to write")
        }

        var configJSON = PythonJSON(LlamaWriter.minimalConfig(config, dtype: "float32"))
        let skipList: [String]? = options.skipModules == ["lm_head"] ? nil : options.skipModules
        configJSON.set("quantization_config", BitsAndBytesFormat.quantizationConfig(
            quantType: options.quantType, doubleQuant: options.doubleQuant, computeDType: options.computeDType, skipModules: skipList))
        try AtomicFile.write(Data((configJSON.render(indent: 2, sortKeys: true) + "\n").utf8), to: outputURL.appendingPathComponent("config.json"))
        if let tokenizer {
            try AtomicFile.write(tokenizer.tokenizerJSON, to: outputURL.appendingPathComponent("tokenizer.json"))
            try AtomicFile.write(tokenizer.tokenizerConfig, to: outputURL.appendingPathComponent("tokenizer_config.json"))
        }

        CheckpointQuantizer.finish(&summary, modelPath: modelPath, storageBytes: storageBytes, start: start)
        progress(.finished(summary))
        return summary
    }
}
