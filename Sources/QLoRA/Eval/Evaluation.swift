import Foundation

/// Loss and perplexity of a model (with or without an adapter) over tokenized records, forward only:
/// the executor is built for inference (no saved activations, no gradients), the lm_head and the loss
/// run in chunks, and the batches are those `train` would make (padding by default, so records are
/// never mixed; packing when asked). The loss is the mean over every trained token of all records, as
/// transformers' `model(ids, labels=labels).loss` over one batch holding them all.
public enum Evaluation {
    public struct Options: Sendable {
        public var batchSize = 1
        public var seqLen = 512
        public var packing = false
        public init(batchSize: Int = 1, seqLen: Int = 512, packing: Bool = false) {
            self.batchSize = batchSize
            self.seqLen = seqLen
            self.packing = packing
        }
    }

    public struct Result: Sendable, Equatable {
        public var lossSum: Double
        /// Tokens with a label (the ones that count).
        public var tokens: Int
        public var records: Int
        /// Records longer than the sequence length: their tail beyond it is not scored.
        public var truncatedRecords: Int
        public var seconds: Double

        public var loss: Double { tokens > 0 ? lossSum / Double(tokens) : .nan }
        public var perplexity: Double { Foundation.exp(loss) }
    }

    /// Records held in memory.
    public static func run(model: LlamaModel, lora: LoRAAdapters?, records: [TokenizedExample], options: Options,
                           padTokenID: Int32, separatorTokenID: Int32?, progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        try run(model: model, lora: lora, source: InMemoryExamples(records), options: options, padTokenID: padTokenID,
                separatorTokenID: separatorTokenID, progress: progress)
    }

    /// True when some record has a token the loss scores (a label after its first position).
    public static func hasScoredToken(_ source: TokenizedExampleSource) -> Bool {
        var ids = [Int32](repeating: 0, count: 4096), labels = ids
        defer { source.releaseResidentPages() }
        for index in 0..<source.exampleCount {
            let length = source.length(ofExample: index)
            var start = 1
            while start < length {
                let count = min(ids.count, length - start)
                source.copy(example: index, range: start..<(start + count), ids: &ids, labels: &labels)
                if labels[..<count].contains(where: { $0 != TokenizedExample.ignoredLabel }) { return true }
                start += count
            }
        }
        return false
    }

    /// `progress(done, total)` is called after each batch.
    public static func run(model: LlamaModel, lora: LoRAAdapters?, source: TokenizedExampleSource, options: Options,
                           padTokenID: Int32, separatorTokenID: Int32?, progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        let started = DispatchTime.now().uptimeNanoseconds
        let batcher = try Batcher(source: source,
                                  options: BatcherOptions(batchSize: options.batchSize, maxSequenceLength: options.seqLen,
                                                          mode: options.packing ? .packing : .padding, shuffleSeed: nil),
                                  padTokenID: padTokenID, separatorTokenID: options.packing ? separatorTokenID : nil)
        let executor = LlamaExecutor(model: model, lora: lora,
                                     shape: .init(batch: options.batchSize, seqLen: options.seqLen, training: false))
        var sum = 0.0, tokens = 0
        let total = batcher.batchesPerEpoch, B = options.batchSize, T = options.seqLen
        var ids: [Int32] = [], labels: [Int32] = []
        ids.reserveCapacity(B * T)
        labels.reserveCapacity(B * T)
        for index in 0..<total {
            batcher.loadBatch(index, epoch: 0)
            // Only the batch's real rows, cut to its longest one: padding is never computed.
            let rows = min(B, batcher.rowCount - index * B)
            let length = max(2, Int(batcher.attentionLengths[..<rows].max() ?? 2))
            ids.removeAll(keepingCapacity: true)
            labels.removeAll(keepingCapacity: true)
            for b in 0..<rows {
                ids += batcher.inputIDs[(b * T)..<(b * T + length)]
                labels += batcher.labels[(b * T)..<(b * T + length)]
            }
            try executor.forward(inputIDs: ids, batch: rows, seqLen: length)
            let result = executor.loss(labels: labels)
            sum += result.sum
            tokens += result.count
            progress(index + 1, total)
        }
        let truncated = (0..<source.exampleCount).filter { source.length(ofExample: $0) > options.seqLen }.count
        return Result(lossSum: sum, tokens: tokens, records: source.exampleCount, truncatedRecords: truncated,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }
}
