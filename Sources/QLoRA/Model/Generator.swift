/// Text generation (greedy or sampled) with a model and optional adapters. Each new token re-runs the
/// prompt so far (no KV cache): simple and exact, fine for short outputs on small models.
public final class Generator {
    public let executor: LlamaExecutor
    private var logits: [Float]

    public init(model: LlamaModel, lora: LoRAAdapters?, maxSeqLen: Int) {
        executor = LlamaExecutor(model: model, lora: lora,
                                 shape: .init(batch: 1, seqLen: maxSeqLen, logitsChunkRows: 1, training: false, tileThreads: 1))
        logits = [Float](repeating: 0, count: model.config.vocabSize)
    }

    public struct Sampling: Sendable {
        /// 0 = greedy.
        public var temperature: Float = 0
        public var topK: Int = 0
        public var seed: UInt64 = 0
        public init(temperature: Float = 0, topK: Int = 0, seed: UInt64 = 0) {
            self.temperature = temperature
            self.topK = topK
            self.seed = seed
        }
    }

    /// Continues `prompt` by up to `maxNewTokens`, stopping after any of `stopTokens`. Returns the new tokens.
    public func generate(prompt: [Int32], maxNewTokens: Int, stopTokens: Set<Int32> = [], sampling: Sampling = Sampling()) throws -> [Int32] {
        var tokens = prompt
        var generated: [Int32] = []
        var generator = SeededGenerator(seed: sampling.seed)
        let vocab = executor.model.config.vocabSize
        while generated.count < maxNewTokens && tokens.count < executor.shape.seqLen {
            try executor.forward(inputIDs: tokens, batch: 1, seqLen: tokens.count)
            logits.withUnsafeMutableBufferPointer { executor.lastRowLogits(into: $0.baseAddress!) }
            let next = pick(vocab: vocab, sampling: sampling, generator: &generator)
            tokens.append(next)
            generated.append(next)
            if stopTokens.contains(next) { break }
        }
        return generated
    }

    private func pick(vocab: Int, sampling: Sampling, generator: inout SeededGenerator) -> Int32 {
        if sampling.temperature <= 0 {
            var best = 0
            for v in 1..<vocab where logits[v] > logits[best] { best = v }
            return Int32(best)
        }
        var order = Array(0..<vocab)
        if sampling.topK > 0 && sampling.topK < vocab {
            order.sort { logits[$0] > logits[$1] }
            order.removeLast(vocab - sampling.topK)
        }
        let maxLogit = order.map { logits[$0] }.max() ?? 0
        let weights = order.map { Double((logits[$0] - maxLogit) / sampling.temperature).exponentialValue }
        let total = weights.reduce(0, +)
        var u = Double(generator.nextUnitFloat()) * total
        for (index, w) in zip(order, weights) {
            u -= w
            if u <= 0 { return Int32(index) }
        }
        return Int32(order.last!)
    }
}

private extension Double {
    var exponentialValue: Double { Foundation.exp(self) }
}

import Foundation
