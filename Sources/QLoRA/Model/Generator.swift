import Foundation

// M = rows of one call (chunk), C hidden, F intermediate, H heads, KV kv heads, D head dim, V vocab,
// P = maxSeqLen, r = largest LoRA rank.

/// Inference with a KV cache: runs tokens through the decoder once each, keeping every layer's keys
/// (after RoPE) and values in a `KVCache`. A prompt goes through in chunks of up to `chunkRows` rows
/// (prefill); each generated token is then one row. Base linears run through `BaseLinear.forward`
/// (the same tiled dequant as training), LoRA adapters through `LoRAAdapter.forward` without dropout.
public final class IncrementalDecoder {
    public let model: LlamaModel
    public let lora: LoRAAdapters?
    public let cache: KVCache
    public let chunkRows: Int
    public let tileRows: Int
    private let rope: RoPETable
    private let scratch: UnsafeMutableBufferPointer<Float>
    private let positions: UnsafeMutablePointer<Int32>   /// (M)
    private let ids: UnsafeMutablePointer<Int32>         /// (M)
    private let rstd: UnsafeMutablePointer<Float>        /// (M)
    /// Rows of the last chunk run (its last row is the newest position).
    private var lastChunkRows = 0
    // Offsets into `scratch`.
    private let x, h, q, k, v, attn, gate, up, loraT, tile, attentionScratch, logits: Int
    private let tileFloats: Int

    /// `maxSeqLen` positions of cache (at most the model's max_position_embeddings is sensible).
    public init(model: LlamaModel, lora: LoRAAdapters?, maxSeqLen: Int, chunkRows: Int = 128, tileRows: Int = 256) {
        // Adapters with modules_to_save bring their own embed_tokens / lm_head.
        let model = lora?.applied(to: model) ?? model
        self.model = model
        self.lora = lora
        self.chunkRows = max(1, min(chunkRows, maxSeqLen))
        self.tileRows = tileRows
        let c = model.config
        cache = KVCache(config: c, maxSeqLen: maxSeqLen)
        rope = RoPETable(headDim: c.headDim, maxPositions: max(maxSeqLen, 1), theta: c.ropeTheta, scaling: c.ropeScaling)
        let m = self.chunkRows
        var total = 0
        func slot(_ count: Int) -> Int { defer { total += count }; return total }
        x = slot(m * c.hiddenSize)                    /// (M, C) residual stream
        h = slot(m * c.hiddenSize)                    /// (M, C) normed, then o_proj output
        q = slot(m * c.queryDim)                      /// (M, H, D)
        k = slot(m * c.keyValueDim)                   /// (M, KV, D)
        v = slot(m * c.keyValueDim)                   /// (M, KV, D)
        attn = slot(m * max(c.queryDim, c.hiddenSize)) /// (M, H, D), then (M, C) down_proj output
        gate = slot(m * c.intermediateSize)           /// (M, F)
        up = slot(m * c.intermediateSize)             /// (M, F)
        loraT = slot(m * max(lora?.config.r ?? 0, 1)) /// (M, r)
        tileFloats = GemmWorkspace.floats(rows: m, maxInFeatures: model.maxInFeatures, tileRows: tileRows)
        tile = slot(tileFloats)                       /// GEMM workspace: (R, I) dequant tile or bf16 panels
        attentionScratch = slot(CachedAttention.scratchCount(rows: m, maxSeqLen: maxSeqLen))
        logits = slot(c.vocabSize)                    /// (V)
        scratch = .allocate(capacity: total)
        scratch.initialize(repeating: 0)
        positions = .allocate(capacity: m)
        ids = .allocate(capacity: m)
        rstd = .allocate(capacity: m)
    }

    deinit {
        scratch.deallocate()
        positions.deallocate()
        ids.deallocate()
        rstd.deallocate()
    }

    /// Bytes held: the KV cache plus the working buffers.
    public var bytes: Int { cache.bytes + scratch.count * 4 + chunkRows * 12 }

    /// Positions filled so far.
    public var position: Int { cache.length }

    public func reset() { cache.reset() }

    @inline(__always) private func p(_ offset: Int) -> UnsafeMutablePointer<Float> { scratch.baseAddress! + offset }

    /// Runs `tokens` at positions position..<position+count and returns the logits (V) of the last one.
    public func append(_ tokens: [Int32]) throws -> [Float] {
        precondition(!tokens.isEmpty)
        let config = model.config
        guard cache.length + tokens.count <= cache.maxSeqLen else {
            throw ModelError.batchTooLarge(rows: 1, seqLen: cache.length + tokens.count, maxRows: 1, maxSeqLen: cache.maxSeqLen)
        }
        for (i, id) in tokens.enumerated() where id < 0 || Int(id) >= config.vocabSize {
            throw ModelError.tokenOutOfRange(id: Int(id), vocab: config.vocabSize, position: cache.length + i)
        }
        var r0 = 0
        while r0 < tokens.count {
            let r1 = min(tokens.count, r0 + chunkRows)
            run(Array(tokens[r0..<r1]))
            r0 = r1
        }
        // Final norm + lm_head of the last row only.
        let c = config.hiddenSize
        let last = p(x) + (lastChunkRows - 1) * c
        RMSNorm.forward(out: p(h), rstd: rstd, x: last, weight: UnsafePointer(model.norm.baseAddress!), rows: 1, dim: c,
                        eps: config.rmsNormEps)
        model.lmHead.forward(y: p(logits), x: p(h), rows: 1, workspace: workspace)
        return Array(UnsafeBufferPointer(start: p(logits), count: config.vocabSize))
    }

    /// One chunk of at most `chunkRows` tokens through every layer; leaves the layer output in `x`.
    private func run(_ tokens: [Int32]) {
        let config = model.config
        let m = tokens.count, c = config.hiddenSize, start = cache.length
        for i in 0..<m {
            ids[i] = tokens[i]
            positions[i] = Int32(start + i)
        }
        model.embedTokens.gather(out: p(x), ids: ids, rows: m)
        for layer in 0..<config.numHiddenLayers {
            let weights = model.layers[layer]
            let kvDim = config.keyValueDim
            RMSNorm.forward(out: p(h), rstd: rstd, x: p(x), weight: UnsafePointer(weights.inputLayernorm.baseAddress!),
                            rows: m, dim: c, eps: config.rmsNormEps)
            project(layer, .q, y: p(q), x: p(h), rows: m)
            project(layer, .k, y: p(k), x: p(h), rows: m)
            project(layer, .v, y: p(v), x: p(h), rows: m)
            rope.apply(p(q), positions: positions, rows: m, heads: config.numAttentionHeads)
            rope.apply(p(k), positions: positions, rows: m, heads: config.numKeyValueHeads)
            let keys = cache.keys(layer: layer), values = cache.values(layer: layer)
            (keys + start * kvDim).update(from: p(k), count: m * kvDim)
            (values + start * kvDim).update(from: p(v), count: m * kvDim)
            CachedAttention.forward(out: p(attn), q: p(q), keys: keys, values: values, rows: m, start: start,
                                    heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim: config.headDim,
                                    scratch: p(attentionScratch))
            // o_proj into h (free now), then the residual.
            project(layer, .o, y: p(h), x: p(attn), rows: m)
            add(p(x), p(h), count: m * c)
            RMSNorm.forward(out: p(h), rstd: rstd, x: p(x), weight: UnsafePointer(weights.postAttentionLayernorm.baseAddress!),
                            rows: m, dim: c, eps: config.rmsNormEps)
            project(layer, .gate, y: p(gate), x: p(h), rows: m)
            project(layer, .up, y: p(up), x: p(h), rows: m)
            SwiGLU.forward(out: p(gate), gate: p(gate), up: p(up), count: m * config.intermediateSize)
            project(layer, .down, y: p(attn), x: p(gate), rows: m)
            add(p(x), p(attn), count: m * c)
        }
        cache.length = start + m
        lastChunkRows = m
    }

    private var workspace: GemmWorkspace { GemmWorkspace(base: p(tile), floats: tileFloats, tileRows: tileRows) }

    /// Base linear + LoRA branch (no dropout) of one projection.
    private func project(_ layer: Int, _ projection: Projection, y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int) {
        model.layers[layer].linears[projection.rawValue].forward(y: y, x: x, rows: rows, workspace: workspace)
        if let adapter = lora?.adapters[layer][projection.rawValue] {
            adapter.forward(y: y, t: p(loraT), x: x, rows: rows, maskSeed: 0, dropScratch: nil)
        }
    }

    @inline(__always)
    private func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}

/// Text generation (greedy or sampled) with a model and optional adapters, on an `IncrementalDecoder`:
/// the prompt is prefilled once, then each new token is one row through the layers.
public final class Generator {
    public let decoder: IncrementalDecoder

    public init(model: LlamaModel, lora: LoRAAdapters?, maxSeqLen: Int) {
        decoder = IncrementalDecoder(model: model, lora: lora, maxSeqLen: maxSeqLen)
    }

    /// Token choice, with Hugging Face `generate` semantics: repetition penalty over the prompt and the
    /// output so far, then temperature, top-k, top-p; temperature 0 is greedy (argmax after the penalty).
    public struct Sampling: Sendable {
        /// 0 = greedy.
        public var temperature: Float = 0
        /// 0 = off.
        public var topK: Int = 0
        /// 1 = off.
        public var topP: Float = 1
        /// 1 = off; HF's CTRL-style penalty: a seen token's logit is divided by it (multiplied when negative).
        public var repetitionPenalty: Float = 1
        public var seed: UInt64 = 0
        public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1, seed: UInt64 = 0) {
            self.temperature = temperature
            self.topK = topK
            self.topP = topP
            self.repetitionPenalty = repetitionPenalty
            self.seed = seed
        }
    }

    /// Continues `prompt` by up to `maxNewTokens` (fewer when the cache fills), stopping after any of
    /// `stopTokens` (included in the result). `onToken` sees each new token and the model's raw logits it was chosen from, as they come.
    public func generate(prompt: [Int32], maxNewTokens: Int, stopTokens: Set<Int32> = [], sampling: Sampling = Sampling(),
                         onToken: (Int32, [Float]) -> Void = { _, _ in }) throws -> [Int32] {
        decoder.reset()
        guard maxNewTokens > 0, !prompt.isEmpty else { return [] }
        var logits = try decoder.append(prompt)
        var generator = SeededGenerator(seed: sampling.seed)
        var seen = Set(prompt)
        var generated: [Int32] = []
        while true {
            var processed = logits
            let next = Self.pick(logits: &processed, seen: seen, sampling: sampling, generator: &generator)
            generated.append(next)
            seen.insert(next)
            onToken(next, logits)
            if stopTokens.contains(next) || generated.count >= maxNewTokens || decoder.position >= decoder.cache.maxSeqLen { break }
            logits = try decoder.append([next])
        }
        return generated
    }

    /// Applies the penalty and warpers to `logits` in place (what is left is the sampled distribution's
    /// logits, -inf where filtered) and picks a token.
    public static func pick(logits: inout [Float], seen: Set<Int32>, sampling: Sampling, generator: inout SeededGenerator) -> Int32 {
        let vocab = logits.count
        if sampling.repetitionPenalty != 1 {
            for id in seen where Int(id) < vocab {
                let score = logits[Int(id)]
                logits[Int(id)] = score < 0 ? score * sampling.repetitionPenalty : score / sampling.repetitionPenalty
            }
        }
        if sampling.temperature <= 0 {
            var best = 0
            for i in 1..<vocab where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        for i in 0..<vocab { logits[i] /= sampling.temperature }
        // Tokens by descending logit (ties: lower id first, as a stable sort).
        var order = Array(0..<vocab)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        var kept = vocab
        if sampling.topK > 0 { kept = min(kept, sampling.topK) }
        // HF top-p: drop the tokens whose ascending cumulative probability is <= 1 - top_p (keeps >= 1).
        let maxLogit = logits[order[0]]
        var weights = order.map { Double(Foundation.exp(Double(logits[$0] - maxLogit))) }
        if sampling.topP < 1 {
            let total = weights[0..<kept].reduce(0, +)
            var cumulative = 0.0
            var firstKept = kept - 1
            // Ascending from the least likely kept token.
            for index in stride(from: kept - 1, through: 0, by: -1) {
                cumulative += weights[index] / total
                if cumulative <= 1 - Double(sampling.topP) { firstKept = index - 1 } else { break }
            }
            kept = max(1, firstKept + 1)
        }
        for index in kept..<vocab {
            logits[order[index]] = -.infinity
            weights[index] = 0
        }
        let total = weights[0..<kept].reduce(0, +)
        var u = Double(generator.nextUnitFloat()) * total
        for index in 0..<kept {
            u -= weights[index]
            if u < 0 { return Int32(order[index]) }
        }
        return Int32(order[kept - 1])
    }
}
