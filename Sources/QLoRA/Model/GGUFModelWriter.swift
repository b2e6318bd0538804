import Foundation
import GGUF

/// A (merged) model written as a GGUF file llama.cpp runs: the base GGUF's metadata (architecture,
/// hyperparameters, tokenizer, chat template) with the new file type, and every tensor under
/// llama.cpp's name in `type` — q/k rows permuted back into llama.cpp's rotary layout, norms in F32,
/// the embedding table and output in Q8_0 when `type` is a 4/8-bit block type (as llama.cpp's
/// quantizer keeps them), F16 where a row is not whole blocks.
public enum GGUFModelWriter {
    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) of each writable type.
    static func fileType(_ type: GGMLType) -> UInt32 {
        switch type {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q8_0: 7
        case .bf16: 32
        default: preconditionFailure("\(type) is not writable")
        }
    }

    public static func write(_ model: LlamaModel, base: GGUFFile, type: GGMLType, to path: String) throws {
        let config = model.config
        var w = GGUFWriter()
        for key in base.metadataKeys { w.set(key, base.metadata[key]!) }
        w.set("general.file_type", .uint32(fileType(type)))
        func matrix(_ name: String, _ weight: any FrozenWeight, storedRows: [Int32]?, as wanted: GGMLType) {
            let rows = weight.outFeatures, columns = weight.inFeatures
            var values = [Float](unsafeUninitializedCapacity: rows * columns) { out, count in
                weight.writeTile(rows: 0..<rows, into: out.baseAddress!, precision: .fp32)
                count = rows * columns
            }
            if let storedRows {
                let hf = values
                for r in 0..<rows { values[(Int(storedRows[r]) * columns)..<(Int(storedRows[r]) * columns + columns)] = hf[(r * columns)..<(r * columns + columns)] }
            }
            let chosen = columns % wanted.blockGeometry.elements == 0 ? wanted : .f16
            w.tensors.append(.init(name: name, type: chosen, dimensions: [columns, rows],
                                   bytes: values.withUnsafeBufferPointer { chosen.quantize($0.baseAddress!, count: $0.count) }))
        }
        func vector(_ name: String, _ values: [Float]) {
            w.tensors.append(.init(name: name, type: .f32, dimensions: [values.count],
                                   bytes: values.withUnsafeBufferPointer { GGMLType.f32.quantize($0.baseAddress!, count: $0.count) }))
        }
        let tableType: GGMLType = type == .q4_0 || type == .q8_0 ? .q8_0 : type
        matrix("token_embd.weight", model.embedTokens, storedRows: nil, as: tableType)
        // llama.cpp stores Gemma's norms as the scale itself, 1 + w (convert_hf_to_gguf's norm_shift).
        func norm(_ values: UnsafeMutableBufferPointer<Float>) -> [Float] { values.map { $0 + config.normWeightOffset } }
        vector("output_norm.weight", norm(model.norm))
        if !config.tieWordEmbeddings { matrix("output.weight", model.lmHead.weight, storedRows: nil, as: tableType) }
        // Phi-3's LongRoPE factors are tensors of the base: carried over as they are.
        for name in ["rope_factors_long.weight", "rope_factors_short.weight", "rope_freqs.weight"] where base.contains(name) {
            vector(name, try base.floats(name))
        }
        for (index, layer) in model.layers.enumerated() {
            for kind in config.layerNorms { vector("blk.\(index).\(kind.ggufName).weight", norm(layer.norm(kind)!)) }
            for projection in config.layerProjections {
                let name = GGUFModelLoader.tensorName(layer: index, projection)
                let rows = GGUFModelLoader.storedRows(config: config, projection: projection)
                let linear = layer.linear(projection)
                matrix(name + ".weight", linear.weight, storedRows: rows, as: type)
                if let bias = linear.bias {
                    var stored = Array(bias)
                    if let rows { for r in 0..<stored.count { stored[Int(rows[r])] = bias[r] } }
                    vector(name + ".bias", stored)
                }
            }
        }
        try w.write(to: path)
    }
}
