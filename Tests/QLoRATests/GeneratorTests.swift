import Foundation
import Testing
@testable import QLoRA

/// KV-cache generation: cached attention against the full causal attention, incremental logits against
/// a full re-run of the sequence (LlamaExecutor), and the sampling rules (HF semantics).
@Suite struct GeneratorTests {
    static let logitTolerance: Float = 1e-4

    /// CachedAttention on chunks of a sequence = rows of Attention.forward on the whole sequence, and
    /// = its naive Reference; also with a sliding window and a score scale of its own (Gemma 3).
    @Test(arguments: [[9], [4, 1, 4], [1, 1, 1, 1, 1, 1, 1, 1, 1], [3, 6]], [nil, 3] as [Int?])
    func cachedAttentionMatchesFullAttention(chunks: [Int], window: Int?) throws {
        let scale: Float? = window == nil ? nil : 0.3
        let T = chunks.reduce(0, +), H = 4, KV = 2, D = 8
        var generator = QLoRA.SeededGenerator(seed: 7)
        let q = (0..<(T * H * D)).map { _ in generator.normal() }
        let k = (0..<(T * KV * D)).map { _ in generator.normal() }
        let v = (0..<(T * KV * D)).map { _ in generator.normal() }
        var full = [Float](repeating: 0, count: T * H * D)
        var stats = [Float](repeating: 0, count: Attention.rowStatsCount(batch: 1, seqLen: T, heads: H))
        var scratch = [Float](repeating: 0, count: Attention.scratchCount(batch: 1, seqLen: T, heads: H, kvHeads: KV, headDim: D))
        Attention.forward(out: &full, rowStats: &stats, q: q, k: k, v: v, batch: 1, seqLen: T, heads: H, kvHeads: KV, headDim: D,
                          scale: scale, window: window, scratch: &scratch)
        var cached = [Float](repeating: 0, count: T * H * D)
        var reference = [Float](repeating: 0, count: T * H * D)
        var cacheScratch = [Float](repeating: 0, count: CachedAttention.scratchCount(rows: T, maxSeqLen: T))
        var start = 0
        for m in chunks {
            let rows = start * H * D
            q.withUnsafeBufferPointer { qb in
                cached.withUnsafeMutableBufferPointer { out in
                    CachedAttention.forward(out: out.baseAddress! + rows, q: qb.baseAddress! + rows, keys: k, values: v, rows: m,
                                            start: start, heads: H, kvHeads: KV, headDim: D, scale: scale, window: window,
                                            scratch: &cacheScratch)
                }
                reference.withUnsafeMutableBufferPointer { out in
                    CachedAttention.Reference.forward(out: out.baseAddress! + rows, q: qb.baseAddress! + rows, keys: k, values: v,
                                                      rows: m, start: start, heads: H, kvHeads: KV, headDim: D,
                                                      scale: scale, window: window)
                }
            }
            start += m
        }
        let againstFull = compare(cached, full, tolerance: 1e-5)
        #expect(againstFull.maxDiff <= 1e-5, "\(againstFull.report)")
        let againstReference = compare(cached, reference, tolerance: 1e-5)
        #expect(againstReference.maxDiff <= 1e-5, "\(againstReference.report)")
    }

    /// Logits (V) of the last position of a full forward over `tokens`.
    static func fullRecomputeLogits(_ executor: LlamaExecutor, _ tokens: [Int32]) throws -> [Float] {
        try executor.forward(inputIDs: tokens, batch: 1, seqLen: tokens.count)
        var logits = [Float](repeating: 0, count: executor.model.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.lastRowLogits(into: $0.baseAddress!) }
        return logits
    }

    static let prompt: [Int32] = [1, 37, 512, 9, 880, 41, 7]

    /// Every generated position's KV-cache logits equal a full re-run of the whole sequence, and greedy
    /// picks the full re-run's argmax: fp32 base + LoRA adapter, and an NF4 base (bf16 tiles) + adapter.
    @Test(arguments: [("tiny-llama/untied-fp32", "fp32"), ("tiny-llama/untied-nf4", "bf16"), ("tiny-llama/tied-fp32", "fp32")])
    func cachedLogitsEqualFullRecompute(modelPath: String, precision: String) throws {
        let precision = ComputePrecision(rawValue: precision)!
        let model = try LlamaLoader.load(directory: FixturePaths.url(modelPath), format: .dense32, precision: precision)
        let lora = model.config.tieWordEmbeddings ? nil
            : try PEFTAdapterIO.load(directory: FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_step1"), modelConfig: model.config)
        let maxSeqLen = 24
        let executor = LlamaExecutor(model: model, lora: lora,
                                     shape: .init(batch: 1, seqLen: maxSeqLen, logitsChunkRows: 1, training: false))
        let generator = Generator(model: model, lora: lora, maxSeqLen: maxSeqLen)
        var steps: [(token: Int32, logits: [Float])] = []
        let output = try generator.generate(prompt: Self.prompt, maxNewTokens: 12) { steps.append(($0, $1)) }
        #expect(output.count == 12 && steps.map(\.token) == output)
        var sequence = Self.prompt
        for (i, step) in steps.enumerated() {
            let expected = try Self.fullRecomputeLogits(executor, sequence)
            let result = compare(step.logits, expected, tolerance: Self.logitTolerance)
            #expect(result.maxDiff <= Self.logitTolerance, "generated position \(i): \(result.report)")
            let argmax = expected.indices.max { expected[$0] < expected[$1] || (expected[$0] == expected[$1] && $0 > $1) }!
            #expect(Int(step.token) == argmax, "position \(i): greedy picked \(step.token), full recompute's argmax is \(argmax)")
            sequence.append(step.token)
        }
        // The cache holds what it says.
        #expect(generator.decoder.cache.bytes == 2 * model.config.numHiddenLayers * maxSeqLen * model.config.keyValueDim * 4)
        #expect(generator.decoder.position == Self.prompt.count + 11)
    }

    /// Prefill in chunks of 3 rows = prefill in one chunk = one token at a time.
    @Test func chunkedPrefillMatches() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        var results: [[Float]] = []
        for chunkRows in [32, 3, 1] {
            let decoder = IncrementalDecoder(model: model, lora: nil, maxSeqLen: 16, chunkRows: chunkRows)
            results.append(try decoder.append(Self.prompt))
            #expect(decoder.position == Self.prompt.count)
        }
        for other in results.dropFirst() {
            let result = compare(other, results[0], tolerance: 1e-5)
            #expect(result.maxDiff <= 1e-5, "\(result.report)")
        }
    }

    @Test func stopsOnStopTokenAndAtCacheEnd() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let generator = Generator(model: model, lora: nil, maxSeqLen: 10)
        let free = try generator.generate(prompt: Self.prompt, maxNewTokens: 8)
        #expect(free.count == 10 - Self.prompt.count + 1, "generation must stop when the cache is full")
        let stopped = try generator.generate(prompt: Self.prompt, maxNewTokens: 8, stopTokens: [free[1]])
        #expect(stopped == Array(free[0...1]))
        #expect(throws: ModelError.self) { try generator.decoder.append([Int32](repeating: 1, count: 11)) }
        generator.decoder.reset()
        #expect(throws: ModelError.tokenOutOfRange(id: 5000, vocab: 1024, position: 1)) { try generator.decoder.append([1, 5000]) }
    }

    @Test func samplingIsSeededAndTopKOneIsGreedy() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let generator = Generator(model: model, lora: nil, maxSeqLen: 24)
        let greedy = try generator.generate(prompt: Self.prompt, maxNewTokens: 10)
        let sampling = Generator.Sampling(temperature: 1.5, topK: 50, topP: 0.95, repetitionPenalty: 1.1, seed: 11)
        let a = try generator.generate(prompt: Self.prompt, maxNewTokens: 10, sampling: sampling)
        let b = try generator.generate(prompt: Self.prompt, maxNewTokens: 10, sampling: sampling)
        #expect(a == b)
        var other = sampling
        other.seed = 12
        let c = try generator.generate(prompt: Self.prompt, maxNewTokens: 10, sampling: other)
        #expect(a != c, "different seeds gave the same 10 tokens at temperature 1.5")
        let topOne = try generator.generate(prompt: Self.prompt, maxNewTokens: 10, sampling: .init(temperature: 1, topK: 1, seed: 3))
        #expect(topOne == greedy)
        let tinyP = try generator.generate(prompt: Self.prompt, maxNewTokens: 10, sampling: .init(temperature: 1, topP: 1e-6, seed: 3))
        #expect(tinyP == greedy)
    }

    /// HF RepetitionPenaltyLogitsProcessor: positive seen logits divided, negative multiplied; applies to greedy too.
    @Test func repetitionPenaltyFollowsHF() {
        var generator = QLoRA.SeededGenerator(seed: 0)
        var logits: [Float] = [3, -1, 2.9, 0.5]
        let pick = Generator.pick(logits: &logits, seen: [0, 1], sampling: .init(repetitionPenalty: 2), generator: &generator)
        #expect(logits == [1.5, -2, 2.9, 0.5])
        #expect(pick == 2)
    }

    /// HF TopPLogitsWarper: drop tokens whose ascending cumulative probability is <= 1 - top_p.
    @Test func topPFiltersLikeHF() {
        let probabilities: [Double] = [0.05, 0.5, 0.15, 0.3]
        var generator = QLoRA.SeededGenerator(seed: 0)
        var logits = probabilities.map { Float(Foundation.log($0)) }
        _ = Generator.pick(logits: &logits, seen: [], sampling: .init(temperature: 1, topP: 0.75), generator: &generator)
        // Ascending: 0.05 (cum 0.05), 0.15 (0.20) are <= 0.25 and go; 0.3 (0.5) and 0.5 stay.
        #expect(logits[0] == -.infinity && logits[2] == -.infinity)
        #expect(logits[1].isFinite && logits[3].isFinite)
        var topK = probabilities.map { Float(Foundation.log($0)) }
        _ = Generator.pick(logits: &topK, seen: [], sampling: .init(temperature: 1, topK: 3), generator: &generator)
        #expect(topK.filter { $0 == -.infinity }.count == 1 && topK[0] == -.infinity)
    }

    /// Sampled frequencies follow softmax(logits / temperature).
    @Test func samplesFollowTheDistribution() {
        let base: [Float] = [2, 1, 0, -1]
        let temperature: Float = 0.7
        var generator = QLoRA.SeededGenerator(seed: 5)
        var counts = [Int](repeating: 0, count: base.count)
        let draws = 4000
        for _ in 0..<draws {
            var logits = base
            counts[Int(Generator.pick(logits: &logits, seen: [], sampling: .init(temperature: temperature), generator: &generator))] += 1
        }
        let weights = base.map { Foundation.exp(Double($0 / temperature)) }
        let total = weights.reduce(0, +)
        for i in base.indices {
            let expected = weights[i] / total, observed = Double(counts[i]) / Double(draws)
            #expect(abs(observed - expected) < 0.03, "token \(i): observed \(observed), expected \(expected)")
        }
    }
}
