import Foundation

/// PEFT's `add_weighted_adapter` for LoRA adapters of one model, bit for bit:
/// - `linear` (equal ranks): A = Σ sign(w_i s_i) sqrt(|w_i s_i|) A_i, B = Σ sqrt(|w_i s_i|) B_i, with s_i the
///   adapter's scaling (alpha / r) and each factor rounded to fp32 as torch does;
/// - `cat` (any ranks): A stacks fp32(fp32(A_i w_i) s_i) by rows, B stacks the B_i by columns.
/// The result keeps the first adapter's settings with r = the new rank, lora_alpha = r, and the union of
/// the target modules; a module an adapter does not adapt contributes nothing there.
public enum LoRACombination: String, Sendable, CaseIterable {
    case linear, cat

    public static func combine(_ inputs: [(adapters: LoRAAdapters, weight: Double)], as type: LoRACombination,
                               modelConfig: LlamaConfig) throws -> LoRAAdapters {
        guard let first = inputs.first?.adapters.config else { throw LoRAError.badConfig("no adapters to combine") }
        if inputs.contains(where: { !$0.adapters.config.modulesToSave.isEmpty }) {
            throw LoRAError.badConfig("adapters with modules_to_save cannot be combined (their full modules cannot be mixed)")
        }
        let ranks = inputs.map(\.adapters.config.r)
        let rank: Int
        switch type {
        case .linear:
            guard Set(ranks).count == 1 else {
                throw LoRAError.badConfig("a linear combination needs adapters of one rank (got r = \(ranks.map(String.init).joined(separator: ", "))); use cat")
            }
            rank = ranks[0]
        case .cat:
            rank = ranks.reduce(0, +)
        }
        var config = first
        config.r = rank
        config.loraAlpha = Double(rank)
        let targets = Set(inputs.flatMap(\.adapters.config.resolvedTargets))
        config.targetModules = modelConfig.layerLinears.filter { targets.contains($0) }
        let combined = try LoRAAdapters(modelConfig: modelConfig, config: config, training: false)
        for (layer, row) in combined.adapters.enumerated() {
            for (index, target) in row.enumerated() {
                guard let target else { continue }
                let parts = inputs.compactMap { input in input.adapters.adapters[layer][index].map { (adapter: $0, input: input) } }
                let aCount = target.rank * target.inFeatures, bCount = target.outFeatures * target.rank
                target.a.update(repeating: 0, count: aCount)
                target.b.update(repeating: 0, count: bCount)
                switch type {
                case .linear:
                    for (n, part) in parts.enumerated() {
                        // PEFT: weight * scaling in Python floats, sqrt, then a float32 tensor of the factors.
                        let scaled = part.input.weight * Self.scaling(part.input.adapters.config)
                        let magnitude = abs(scaled).squareRoot()
                        let factorA = Float(scaled >= 0 ? magnitude : -magnitude), factorB = Float(magnitude)
                        // torch: (factors * stacked tensors).sum(dim: 0): products rounded, then added in order.
                        for k in 0..<aCount { target.a[k] = n == 0 ? factorA * part.adapter.a[k] : target.a[k] + factorA * part.adapter.a[k] }
                        for k in 0..<bCount { target.b[k] = n == 0 ? factorB * part.adapter.b[k] : target.b[k] + factorB * part.adapter.b[k] }
                    }
                case .cat:
                    var row0 = 0
                    for part in parts {
                        let r = part.adapter.rank, w = Float(part.input.weight), s = Float(Self.scaling(part.input.adapters.config))
                        for k in 0..<(r * target.inFeatures) { target.a[row0 * target.inFeatures + k] = (part.adapter.a[k] * w) * s }
                        for o in 0..<target.outFeatures {
                            for j in 0..<r { target.b[o * target.rank + row0 + j] = part.adapter.b[o * r + j] }
                        }
                        row0 += r
                    }
                }
            }
        }
        return combined
    }

    /// PEFT's `scaling[adapter]` in Double: alpha / r, or alpha / sqrt(r) with rsLoRA.
    static func scaling(_ config: LoRAConfig) -> Double {
        config.useRSLoRA ? config.loraAlpha / Double(config.r).squareRoot() : config.loraAlpha / Double(config.r)
    }
}
