import Foundation
import GGUF

/// A PEFT LoRA adapter as the LoRA GGUF llama.cpp loads with `--lora` (what its convert_lora_to_gguf.py
/// writes): `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per adapted
/// linear `blk.N.<proj>.weight.lora_a` (r, in) and `.lora_b` (out, r) in F32, with lora_b's rows of q
/// and k permuted as the converter permutes the base's rows in the `llama` architecture.
public enum GGUFAdapterExport {
    public static func writer(_ adapters: LoRAAdapters, architecture: String) throws -> GGUFWriter {
        let config = adapters.config, model = adapters.modelConfig
        guard config.modulesToSave.isEmpty else {
            throw LoRAError.badConfig("a LoRA GGUF holds only lora_A/lora_B; this adapter also trains \(config.modulesToSave.joined(separator: ", ")) in full (modules_to_save), which llama.cpp adapters cannot carry")
        }
        var w = GGUFWriter()
        w.set("general.architecture", .string(architecture))
        w.set("general.type", .string("adapter"))
        w.set("adapter.type", .string("lora"))
        // llama.cpp scales by alpha / r; writing scaling * r keeps rsLoRA's alpha / sqrt(r) too.
        w.set("adapter.lora.alpha", .float32(adapters.config.scaling * Float(config.r)))
        func bytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        for layer in 0..<model.numHiddenLayers {
            for projection in model.layerProjections where config.adapts(layer: layer, linear: projection.moduleName) {
                let prefix = LoRAAdapters.keyPrefix(layer: layer, projection: projection)
                guard let a = adapters.parameters.entry(prefix + ".lora_A.weight"), let b = adapters.parameters.entry(prefix + ".lora_B.weight") else {
                    continue
                }
                let r = a.shape[0], inFeatures = a.shape[1], outFeatures = b.shape[0]
                var bValues = adapters.parameters.values(b)
                if let stored = GGUFModelLoader.storedRows(config: model, projection: projection) {
                    let hf = bValues
                    for row in 0..<outFeatures {
                        let to = Int(stored[row]) * r
                        for k in 0..<r { bValues[to + k] = hf[row * r + k] }
                    }
                }
                let name = GGUFModelLoader.tensorName(layer: layer, projection) + ".weight"
                w.tensors.append(.init(name: name + ".lora_a", type: .f32, dimensions: [inFeatures, r], bytes: bytes(adapters.parameters.values(a))))
                w.tensors.append(.init(name: name + ".lora_b", type: .f32, dimensions: [r, outFeatures], bytes: bytes(bValues)))
            }
        }
        return w
    }
}
