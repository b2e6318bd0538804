/// How examples become fixed-length rows.
public enum BatchingMode: Sendable, Equatable {
    /// Concatenate examples (each followed by the separator, normally EOS, unless it already ends with
    /// it) and cut the stream into rows of `maxSequenceLength`. Like HF's simple packing (`group_texts`),
    /// attention is NOT reset at example boundaries: a token may attend to the previous example in its row.
    case packing
    /// One example per row, truncated to `maxSequenceLength`, padded with the pad id (labels -100).
    case padding
}

public struct BatcherOptions: Sendable, Equatable {
    public var batchSize: Int
    public var maxSequenceLength: Int
    public var mode: BatchingMode
    /// Seed of the per-epoch row shuffle; nil keeps the file order.
    public var shuffleSeed: UInt64?

    public init(batchSize: Int, maxSequenceLength: Int, mode: BatchingMode, shuffleSeed: UInt64?) {
        self.batchSize = batchSize
        self.maxSequenceLength = maxSequenceLength
        self.mode = mode
        self.shuffleSeed = shuffleSeed
    }
}

/// Builds all rows up front from tokenized examples, then fills one batch at a time into buffers it
/// owns: loading a batch never allocates.
///
/// Output per batch: `inputIDs` and `labels` `(B, T)` row-major Int32, labels UNSHIFTED (the model
/// shifts, HF convention; -100 = no loss), `attentionLengths` `(B)`: real tokens at the start of each
/// row (the rest is padding). A last incomplete batch is completed with all-padding rows (length 0,
/// labels -100), so every batch has the same shape and those rows contribute no loss.
public final class Batcher {
    public let options: BatcherOptions
    public let padTokenID: Int32
    /// Number of rows (packed chunks or examples).
    public let rowCount: Int
    public var batchesPerEpoch: Int { (rowCount + options.batchSize - 1) / options.batchSize }

    /// (B, T) token ids of the last loaded batch.
    public private(set) var inputIDs: [Int32]
    /// (B, T) labels of the last loaded batch.
    public private(set) var labels: [Int32]
    /// (B) real (non-padding) length of each row of the last loaded batch.
    public private(set) var attentionLengths: [Int32]

    /// (rowCount, T) all rows, built once.
    private var rowIDs: [Int32]
    /// (rowCount, T)
    private var rowLabels: [Int32]
    /// (rowCount)
    private var rowLengths: [Int32]
    /// Row order of `orderEpoch`.
    private var order: [Int]
    private var orderEpoch = -1

    /// - Parameters:
    ///   - separatorTokenID: put between packed examples (normally EOS); ignored when padding.
    public init(examples: [TokenizedExample], options: BatcherOptions, padTokenID: Int32, separatorTokenID: Int32?) throws {
        guard options.batchSize > 0 else { throw DataError.invalidBatcherOptions(detail: "batch size \(options.batchSize) must be positive") }
        guard options.maxSequenceLength > 1 else {
            throw DataError.invalidBatcherOptions(detail: "maximum sequence length \(options.maxSequenceLength) must be at least 2")
        }
        guard !examples.isEmpty else { throw DataError.invalidBatcherOptions(detail: "no examples to batch") }
        for (index, example) in examples.enumerated() where example.inputIDs.count != example.labels.count {
            throw DataError.invalidBatcherOptions(detail: "example \(index) has \(example.inputIDs.count) ids but \(example.labels.count) labels")
        }
        self.options = options
        self.padTokenID = padTokenID
        let T = options.maxSequenceLength
        var ids: [Int32] = [], labels: [Int32] = [], lengths: [Int32] = []
        switch options.mode {
        case .padding:
            for example in examples {
                let count = min(example.inputIDs.count, T)
                ids += example.inputIDs[..<count]
                labels += example.labels[..<count]
                ids += repeatElement(padTokenID, count: T - count)
                labels += repeatElement(TokenizedExample.ignoredLabel, count: T - count)
                lengths.append(Int32(count))
            }
        case .packing:
            for example in examples {
                let count = min(example.inputIDs.count, T)
                ids += example.inputIDs[..<count]
                labels += example.labels[..<count]
                if let separator = separatorTokenID, ids.last != separator {
                    ids.append(separator)
                    labels.append(separator)
                }
            }
            let streamLength = ids.count
            let rows = (streamLength + T - 1) / T
            for row in 0..<rows { lengths.append(Int32(min(T, streamLength - row * T))) }
            ids += repeatElement(padTokenID, count: rows * T - streamLength)
            labels += repeatElement(TokenizedExample.ignoredLabel, count: rows * T - streamLength)
        }
        rowIDs = ids
        rowLabels = labels
        rowLengths = lengths
        rowCount = lengths.count
        order = Array(0..<lengths.count)
        let B = options.batchSize
        inputIDs = [Int32](repeating: padTokenID, count: B * T)
        self.labels = [Int32](repeating: TokenizedExample.ignoredLabel, count: B * T)
        attentionLengths = [Int32](repeating: 0, count: B)
    }

    /// Fills `inputIDs`, `labels` and `attentionLengths` with batch `index` of `epoch`.
    public func loadBatch(_ index: Int, epoch: Int) {
        if orderEpoch != epoch { reorder(epoch: epoch) }
        let B = options.batchSize, T = options.maxSequenceLength
        rowIDs.withUnsafeBufferPointer { sourceIDs in
            rowLabels.withUnsafeBufferPointer { sourceLabels in
                inputIDs.withUnsafeMutableBufferPointer { outIDs in
                    labels.withUnsafeMutableBufferPointer { outLabels in
                        for b in 0..<B {
                            let slot = index * B + b
                            let destination = b * T
                            guard slot < rowCount else {
                                for t in 0..<T {
                                    outIDs[destination + t] = padTokenID
                                    outLabels[destination + t] = TokenizedExample.ignoredLabel
                                }
                                attentionLengths[b] = 0
                                continue
                            }
                            let row = order[slot]
                            let source = row * T
                            for t in 0..<T {
                                outIDs[destination + t] = sourceIDs[source + t]
                                outLabels[destination + t] = sourceLabels[source + t]
                            }
                            attentionLengths[b] = rowLengths[row]
                        }
                    }
                }
            }
        }
    }

    /// Row order of `epoch`: identity without a seed, else a shuffle seeded by (seed, epoch).
    private func reorder(epoch: Int) {
        for i in order.indices { order[i] = i }
        if let seed = options.shuffleSeed {
            var generator = SeededGenerator(seed: seed ^ (UInt64(truncatingIfNeeded: epoch) &* 0x9E37_79B9_7F4A_7C15))
            generator.shuffle(&order)
        }
        orderEpoch = epoch
    }

    /// The row of the current order at batch `index`, slot `b` (for inspection and tests).
    public func rowIndex(batch index: Int, slot b: Int, epoch: Int) -> Int? {
        if orderEpoch != epoch { reorder(epoch: epoch) }
        let slot = index * options.batchSize + b
        return slot < rowCount ? order[slot] : nil
    }
}
