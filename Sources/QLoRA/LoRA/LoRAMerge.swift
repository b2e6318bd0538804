import Foundation

/// Folds LoRA adapters into the base weights, as PEFT's `merge_and_unload`: W' = W + (B A) * s in fp32.
/// Each element of B A is the fused multiply-add chain torch's CPU matmul computes
/// (acc = B[o,0] A[0,i]; acc = fma(B[o,r], A[r,i], acc) for r = 1..), then one multiply by s and one
/// add of W: bit-exact with PEFT on the reference. A quantized base is dequantized to fp32 first.
public enum LoRAMerge {
    public static func merge(model: LlamaModel, adapters: LoRAAdapters) throws -> LlamaModel {
        let config = model.config
        // modules_to_save: the trained embed_tokens / lm_head replace the base's.
        let dense = try LlamaLoader.copy(adapters.applied(to: model), format: .dense32, precision: .fp32)
        for layer in 0..<config.numHiddenLayers {
            for projection in config.layerProjections {
                guard let adapter = adapters.adapters[layer][projection.rawValue] else { continue }
                let weight = dense.layers[layer].linear(projection).weight as! DenseFloatWeight
                addDelta(into: weight.values.baseAddress!, adapter: adapter)
            }
        }
        return dense
    }

    /// W (O, I) += (B A) * s, element by element in PEFT's rounding order.
    static func addDelta(into w: UnsafeMutablePointer<Float>, adapter: LoRAAdapter) {
        let r = adapter.rank, inFeatures = adapter.inFeatures
        for o in 0..<adapter.outFeatures {
            let bRow = adapter.b + o * r
            let wRow = w + o * inFeatures
            for i in 0..<inFeatures {
                var acc = bRow[0] * adapter.a[i]
                for k in 1..<max(r, 1) { acc = acc.addingProduct(bRow[k], adapter.a[k * inFeatures + i]) }
                wRow[i] = acc * adapter.scale + wRow[i]
            }
        }
    }
}
