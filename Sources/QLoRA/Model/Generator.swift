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
    /// The RoPE tables of the layers (Gemma 3: global and local; LongRoPE: short and long factors).
    private let rope: LayerRoPE
    /// LongRoPE only (else empty): (P) the token of each cached position, to run again with the long
    /// factors when the sequence grows past original_max_position_embeddings (as Phi3ForCausalLM drops
    /// its cache then).
    private let history: UnsafeMutableBufferPointer<Int32>
    private let scratch: UnsafeMutableBufferPointer<Float>
    private let positions: UnsafeMutablePointer<Int32>   /// (M)
    private let ids: UnsafeMutablePointer<Int32>         /// (M)
    private let rstd: UnsafeMutablePointer<Float>        /// (M)
    /// Rows of the last chunk run (its last row is the newest position).
    private var lastChunkRows = 0
    private let layout: ScratchLayout
    /// The largest adapter rank the LoRA scratch holds (this decoder's, or `loraRank` for `appendOne`).
    private let loraRankCapacity: Int

    /// Where each working buffer sits in `scratch` (floats), from the config and sizes alone, so that
    /// `bytes(config:...)` (the memory plan) and a real decoder agree by construction.
    struct ScratchLayout {
        var x = 0, h = 0, q = 0, k = 0, v = 0, attn = 0, gate = 0, up = 0, loraT = 0, tile = 0, attentionScratch = 0, logits = 0
        var headRstd = 0, fused = 0
        var tileFloats = 0, logitsCapacity = 0, total = 0

        init(config c: LlamaConfig, maxSeqLen: Int, chunkRows m: Int, tileRows: Int, loraRank: Int) {
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
            loraT = slot(m * loraRank)                    /// (M, r)
            headRstd = slot(c.qkNorm ? m * c.numAttentionHeads : 0) /// (M*H) rstd of the q/k norms (Qwen3)
            /// (M, q+2kv or 2F) a fused qkv_proj / gate_up_proj output before its split (Phi-3)
            fused = slot(c.fusedProjections ? m * c.layerProjections.map { $0.fusedParts.isEmpty ? 0 : c.shape(of: $0).outFeatures }.max()! : 0)
            tileFloats = GemmWorkspace.floats(rows: m, maxInFeatures: c.maxLinearInFeatures, tileRows: tileRows)
            tile = slot(tileFloats)                       /// GEMM workspace: (R, I) dequant tile or bf16 panels
            attentionScratch = slot(CachedAttention.scratchCount(rows: m, maxSeqLen: maxSeqLen))
            logitsCapacity = min(m, BaseLinear.matrixVectorRows) * c.vocabSize
            logits = slot(logitsCapacity)                 /// (rows of appendOne, V)
            self.total = total
        }
    }

    public static let defaultChunkRows = 128
    public static let defaultTileRows = 256

    /// `maxSeqLen` positions of cache (at most the model's max_position_embeddings is sensible).
    /// `loraRank`: the largest adapter rank of the sequences `appendOne` will run (default: this decoder's).
    public init(model: LlamaModel, lora: LoRAAdapters?, maxSeqLen: Int, chunkRows: Int = IncrementalDecoder.defaultChunkRows,
                tileRows: Int = IncrementalDecoder.defaultTileRows, loraRank: Int = 0) {
        // Adapters with modules_to_save bring their own embed_tokens / lm_head.
        let model = lora?.applied(to: model) ?? model
        self.model = model
        self.lora = lora
        self.chunkRows = Self.chunkRows(chunkRows, maxSeqLen: maxSeqLen)
        self.tileRows = tileRows
        let c = model.config
        cache = KVCache(config: c, maxSeqLen: maxSeqLen)
        rope = LayerRoPE(config: c, maxPositions: max(maxSeqLen, 1))
        history = .allocate(capacity: Self.keepsHistory(c) ? maxSeqLen : 0)
        loraRankCapacity = max(lora?.config.r ?? 0, loraRank, 1)
        layout = ScratchLayout(config: c, maxSeqLen: maxSeqLen, chunkRows: self.chunkRows, tileRows: tileRows, loraRank: loraRankCapacity)
        scratch = .allocate(capacity: layout.total)
        scratch.initialize(repeating: 0)
        positions = .allocate(capacity: self.chunkRows)
        ids = .allocate(capacity: self.chunkRows)
        rstd = .allocate(capacity: self.chunkRows)
    }

    static func chunkRows(_ asked: Int, maxSeqLen: Int) -> Int { max(1, min(asked, maxSeqLen)) }

    /// Whether the decoder keeps its tokens (LongRoPE, which may have to run them again).
    static func keepsHistory(_ config: LlamaConfig) -> Bool { config.ropeTables.contains { $0.scaling?.hasLongFactors == true } }

    /// What a decoder built with these sizes holds: its KV cache, and its working buffers (scratch, index
    /// buffers, RoPE tables). The memory plan of generation (`MemoryPlan.Options.generation`) uses this.
    public static func bytes(config: LlamaConfig, maxSeqLen: Int, chunkRows asked: Int = IncrementalDecoder.defaultChunkRows,
                             tileRows: Int = IncrementalDecoder.defaultTileRows, loraRank: Int) -> (cache: Int, working: Int) {
        let m = chunkRows(asked, maxSeqLen: maxSeqLen)
        let layout = ScratchLayout(config: config, maxSeqLen: maxSeqLen, chunkRows: m, tileRows: tileRows, loraRank: max(loraRank, 1))
        let ropeBytes = LayerRoPE.bytes(config: config, maxPositions: max(maxSeqLen, 1))
        let historyBytes = keepsHistory(config) ? maxSeqLen * 4 : 0
        return (KVCache.bytes(config: config, maxSeqLen: maxSeqLen), layout.total * 4 + m * 12 + ropeBytes + historyBytes)
    }

    deinit {
        scratch.deallocate()
        positions.deallocate()
        ids.deallocate()
        rstd.deallocate()
        history.deallocate()
    }

    /// Bytes held: the KV cache plus the working buffers (scratch, index buffers, RoPE tables).
    public var bytes: Int { cache.bytes + scratch.count * 4 + chunkRows * 12 + rope.bytes + history.count * 4 }

    /// Positions filled so far.
    public var position: Int { cache.length }

    public func reset() { cache.reset() }

    @inline(__always) private func p(_ offset: Int) -> UnsafeMutablePointer<Float> { scratch.baseAddress! + offset }
    private var x: Int { layout.x }
    private var h: Int { layout.h }
    private var q: Int { layout.q }
    private var k: Int { layout.k }
    private var v: Int { layout.v }
    private var attn: Int { layout.attn }
    private var gate: Int { layout.gate }
    private var up: Int { layout.up }
    private var loraT: Int { layout.loraT }
    private var attentionScratch: Int { layout.attentionScratch }
    private var logits: Int { layout.logits }

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
        let length = cache.length + tokens.count
        if cache.length > 0 && LayerRoPE.factorsDiffer(config: config, sequenceLength: length, shorter: cache.length) {
            // LongRoPE: the cached keys were rotated with the short factors; transformers then runs the whole
            // sequence again with the long ones (Phi3ForCausalLM.prepare_inputs_for_generation), and so does this.
            let all = Array(history[0..<cache.length]) + tokens
            reset()
            return try append(all)
        }
        var r0 = 0
        while r0 < tokens.count {
            let r1 = min(tokens.count, r0 + chunkRows)
            // One transformers forward of the whole call: its RoPE factors follow the call's last position.
            run(Array(tokens[r0..<r1]), ropeLength: length)
            r0 = r1
        }
        // Final norm + lm_head of the last row only.
        let c = config.hiddenSize
        let last = p(x) + (lastChunkRows - 1) * c
        model.rmsNorm(out: p(h), rstd: rstd, x: last, weight: model.norm, rows: 1)
        model.lmHead.forward(y: p(logits), x: p(h), rows: 1, workspace: workspace)
        model.softcapLogits(p(logits), count: config.vocabSize)
        return Array(UnsafeBufferPointer(start: p(logits), count: config.vocabSize))
    }

    /// One token for each of `sequences` (decoders of this same model, each with its own cache and adapter)
    /// through this decoder's buffers together: the frozen weights are read once for all of them (the
    /// matrix-vector kernels, up to `BaseLinear.matrixVectorRows` sequences at a time), each adapter applied
    /// to its own row. Returns each sequence's logits (V), bit-identical to `sequence.append([token])`.
    public func appendOne(_ tokens: [Int32], to sequences: [IncrementalDecoder]) throws -> [[Float]] {
        precondition(tokens.count == sequences.count)
        let config = model.config
        for (index, sequence) in sequences.enumerated() {
            guard sequence.model === model else {
                throw ModelError.badBatch("sequence \(index) runs another model (an adapter with modules_to_save brings its own embeddings or lm_head); decode it on its own")
            }
            guard sequence.cache.length < sequence.cache.maxSeqLen, sequence.cache.length < rope.maxPositions else {
                throw ModelError.batchTooLarge(rows: 1, seqLen: sequence.cache.length + 1, maxRows: 1,
                                               maxSeqLen: min(sequence.cache.maxSeqLen, rope.maxPositions))
            }
            guard (sequence.lora?.config.r ?? 0) <= loraRankCapacity else {
                throw ModelError.badBatch("sequence \(index)'s adapter has rank \(sequence.lora!.config.r), more than this decoder was built for (\(loraRankCapacity))")
            }
            if tokens[index] < 0 || Int(tokens[index]) >= config.vocabSize {
                throw ModelError.tokenOutOfRange(id: Int(tokens[index]), vocab: config.vocabSize, position: sequence.cache.length)
            }
        }
        // A LongRoPE sequence crossing its original length runs again on its own (see `append`).
        let crossing = sequences.map { $0.cache.length > 0 && LayerRoPE.factorsDiffer(config: config, sequenceLength: $0.cache.length + 1, shorter: $0.cache.length) }
        var result = [[Float]](repeating: [], count: tokens.count)
        for i in sequences.indices where crossing[i] { result[i] = try sequences[i].append([tokens[i]]) }
        let batched = sequences.indices.filter { !crossing[$0] }
        let v = config.vocabSize, group = min(BaseLinear.matrixVectorRows, chunkRows)
        var g0 = 0
        while g0 < batched.count {
            let g1 = min(batched.count, g0 + group), m = g1 - g0
            let segments = (g0..<g1).map { j in
                let sequence = sequences[batched[j]]
                return Segment(cache: sequence.cache, lora: sequence.lora, rows: (j - g0)..<(j - g0 + 1), start: sequence.cache.length,
                               ropeLength: sequence.cache.length + 1, owner: sequence)
            }
            run(batched[g0..<g1].map { tokens[$0] }, segments: segments)
            model.rmsNorm(out: p(h), rstd: rstd, x: p(x), weight: model.norm, rows: m)
            precondition(m * v <= layout.logitsCapacity, "logits buffer too small")
            model.lmHead.forward(y: p(logits), x: p(h), rows: m, workspace: workspace)
            model.softcapLogits(p(logits), count: m * v)
            for row in 0..<m { result[batched[g0 + row]] = Array(UnsafeBufferPointer(start: p(logits) + row * v, count: v)) }
            g0 = g1
        }
        return result
    }

    /// Rows of one run that belong to one sequence: its cache, its adapter, where its rows start in it.
    private struct Segment {
        var cache: KVCache
        var lora: LoRAAdapters?
        var rows: Range<Int>
        var start: Int
        /// The sequence length whose RoPE factors its rows rotate with (LongRoPE's choice).
        var ropeLength: Int
        /// The decoder whose history the rows extend.
        var owner: IncrementalDecoder
    }

    /// One chunk of at most `chunkRows` tokens of this sequence through every layer; leaves the layer
    /// output in `x`.
    private func run(_ tokens: [Int32], ropeLength: Int) {
        run(tokens, segments: [Segment(cache: cache, lora: lora, rows: 0..<tokens.count, start: cache.length, ropeLength: ropeLength, owner: self)])
    }

    /// `tokens` through every layer, each segment of rows against its own cache and adapter: the base
    /// linears see all rows at once, everything else is per segment, so a row's result does not depend
    /// on the other segments.
    private func run(_ tokens: [Int32], segments: [Segment]) {
        let config = model.config
        let m = tokens.count, c = config.hiddenSize
        for segment in segments {
            for (offset, i) in segment.rows.enumerated() {
                ids[i] = tokens[i]
                positions[i] = Int32(segment.start + offset)
            }
        }
        model.embedTokens.gather(out: p(x), ids: ids, rows: m)
        model.scaleEmbeddings(p(x), rows: m)
        for layer in 0..<config.numHiddenLayers {
            let weights = model.layers[layer]
            let kvDim = config.keyValueDim, qDim = config.queryDim
            model.rmsNorm(out: p(h), rstd: rstd, x: p(x), weight: weights.inputLayernorm, rows: m)
            if config.fusedProjections {
                project(layer, .qkv, y: p(layout.fused), x: p(h), rows: m, segments: segments)
                FusedRows.split(p(layout.fused), rows: m, (p(q), qDim), (p(k), kvDim), (p(v), kvDim))
            } else {
                project(layer, .q, y: p(q), x: p(h), rows: m, segments: segments)
                project(layer, .k, y: p(k), x: p(h), rows: m, segments: segments)
                project(layer, .v, y: p(v), x: p(h), rows: m, segments: segments)
            }
            if config.qkNorm {
                // The per-head norms, in place, before RoPE: the cache holds normed, rotated keys.
                let rstd = p(layout.headRstd)
                model.rmsNorm(out: p(q), rstd: rstd, x: p(q), weight: weights.qNorm!, rows: m * config.numAttentionHeads)
                model.rmsNorm(out: p(k), rstd: rstd, x: p(k), weight: weights.kNorm!, rows: m * config.numKeyValueHeads)
            }
            if config.usesRoPE(layer: layer) {
                for segment in segments {
                    let table = rope.table(layer: layer, sequenceLength: segment.ropeLength)
                    let r0 = segment.rows.lowerBound, count = segment.rows.count
                    table.apply(p(q) + r0 * qDim, positions: positions + r0, rows: count, heads: config.numAttentionHeads)
                    table.apply(p(k) + r0 * kvDim, positions: positions + r0, rows: count, heads: config.numKeyValueHeads)
                }
            }
            for segment in segments {
                let r0 = segment.rows.lowerBound, count = segment.rows.count
                let keys = segment.cache.keys(layer: layer), values = segment.cache.values(layer: layer)
                (keys + segment.start * kvDim).update(from: p(k) + r0 * kvDim, count: count * kvDim)
                (values + segment.start * kvDim).update(from: p(v) + r0 * kvDim, count: count * kvDim)
                CachedAttention.forward(out: p(attn) + r0 * qDim, q: p(q) + r0 * qDim, keys: keys, values: values, rows: count,
                                        start: segment.start, heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads,
                                        headDim: config.headDim, scale: config.attentionScale,
                                        window: config.attentionWindow(layer: layer), scratch: p(attentionScratch))
            }
            // o_proj into h (free now), [its sandwich norm in place], then the residual.
            project(layer, .o, y: p(h), x: p(attn), rows: m, segments: segments)
            if let post = weights.norm(.postAttention) { model.rmsNorm(out: p(h), rstd: rstd, x: p(h), weight: post, rows: m) }
            add(p(x), p(h), count: m * c)
            model.rmsNorm(out: p(h), rstd: rstd, x: p(x), weight: weights.preMLPNorm, rows: m)
            if config.fusedProjections {
                project(layer, .gateUp, y: p(layout.fused), x: p(h), rows: m, segments: segments)
                FusedRows.split(p(layout.fused), rows: m, (p(gate), config.intermediateSize), (p(up), config.intermediateSize))
            } else {
                project(layer, .gate, y: p(gate), x: p(h), rows: m, segments: segments)
                project(layer, .up, y: p(up), x: p(h), rows: m, segments: segments)
            }
            config.activation.forward(out: p(gate), gate: p(gate), up: p(up), count: m * config.intermediateSize)
            project(layer, .down, y: p(attn), x: p(gate), rows: m, segments: segments)
            if let post = weights.norm(.postMLP) { model.rmsNorm(out: p(attn), rstd: rstd, x: p(attn), weight: post, rows: m) }
            add(p(x), p(attn), count: m * c)
        }
        for segment in segments {
            segment.cache.length = segment.start + segment.rows.count
            let history = segment.owner.history
            if !history.isEmpty { for (offset, i) in segment.rows.enumerated() { history[segment.start + offset] = tokens[i] } }
        }
        lastChunkRows = m
    }

    private var workspace: GemmWorkspace { GemmWorkspace(base: p(layout.tile), floats: layout.tileFloats, tileRows: tileRows) }

    /// Base linear over all rows, then each segment's LoRA branch (no dropout) on its own rows.
    private func project(_ layer: Int, _ projection: Projection, y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         segments: [Segment]) {
        let linear = model.layers[layer].linear(projection)
        linear.forward(y: y, x: x, rows: rows, workspace: workspace)
        for segment in segments {
            guard let adapter = segment.lora?.adapters[layer][projection.rawValue] else { continue }
            let r0 = segment.rows.lowerBound
            adapter.forward(y: y + r0 * linear.outFeatures, t: p(loraT) + r0 * adapter.rank, x: x + r0 * linear.inFeatures,
                            rows: segment.rows.count, maskSeed: 0, dropScratch: nil)
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

    /// Several prompts, each with its own adapter (nil = the base), decoded together: each prompt is
    /// prefilled on its own, then every step runs one token of each unfinished sequence through the layers
    /// at once (`IncrementalDecoder.appendOne`: one pass over the frozen weights per step). Each sequence's
    /// tokens are those `generate` gives it alone with the same sampling (same seed).
    /// `built` sees the decoders once they exist (one per request, then the shared step decoder).
    public static func generateBatch(model: LlamaModel, requests: [(prompt: [Int32], lora: LoRAAdapters?)], maxNewTokens: Int,
                                     stopTokens: Set<Int32> = [], sampling: Sampling = Sampling(),
                                     built: ([IncrementalDecoder]) -> Void = { _ in }) throws -> [[Int32]] {
        guard maxNewTokens > 0, !requests.isEmpty else { return requests.map { _ in [] } }
        let lengths = requests.map { min(model.config.maxPositionEmbeddings, $0.prompt.count + maxNewTokens) }
        let sequences = zip(requests, lengths).map { request, length in
            IncrementalDecoder(model: model, lora: request.lora, maxSeqLen: length)
        }
        let runner = IncrementalDecoder(model: model, lora: nil, maxSeqLen: lengths.max()!, chunkRows: Self.runnerChunkRows,
                                        loraRank: requests.compactMap { $0.lora?.config.r }.max() ?? 0)
        built(sequences + [runner])
        var logits = try zip(sequences, requests).map { sequence, request -> [Float] in
            guard !request.prompt.isEmpty else { throw ModelError.badBatch("an empty prompt") }
            return try sequence.append(request.prompt)
        }
        var generators = requests.map { _ in SeededGenerator(seed: sampling.seed) }
        var seen = requests.map { Set($0.prompt) }
        var outputs = requests.map { _ in [Int32]() }
        var active = Array(requests.indices)
        while !active.isEmpty {
            var next: [Int32] = []
            var stillActive: [Int] = []
            for i in active {
                var processed = logits[i]
                let token = pick(logits: &processed, seen: seen[i], sampling: sampling, generator: &generators[i])
                outputs[i].append(token)
                seen[i].insert(token)
                let done = stopTokens.contains(token) || outputs[i].count >= maxNewTokens || sequences[i].position >= sequences[i].cache.maxSeqLen
                if !done { next.append(token); stillActive.append(i) }
            }
            active = stillActive
            guard !active.isEmpty else { break }
            let stepLogits = try runner.appendOne(next, to: active.map { sequences[$0] })
            for (slot, i) in active.enumerated() { logits[i] = stepLogits[slot] }
        }
        return outputs
    }

    /// The rows one step of `generateBatch` runs through its shared decoder at once.
    static let runnerChunkRows = BaseLinear.matrixVectorRows

    /// Bytes of the decoders generation builds for `sequences` rows of `maxSeqLen` positions each, every
    /// adapter of rank `loraRank` (0: the base alone): one decoder (`Generator`) for one row; one per row
    /// plus the shared step decoder for `generateBatch`. KV caches, then the working buffers.
    public static func decoderBytes(config: LlamaConfig, sequences: Int, maxSeqLen: Int, loraRank: Int) -> (cache: Int, working: Int) {
        let one = IncrementalDecoder.bytes(config: config, maxSeqLen: maxSeqLen, loraRank: loraRank)
        guard sequences > 1 else { return one }
        let runner = IncrementalDecoder.bytes(config: config, maxSeqLen: maxSeqLen, chunkRows: runnerChunkRows, loraRank: loraRank)
        return (sequences * one.cache + runner.cache, sequences * one.working + runner.working)
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
