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

/// Fills one batch at a time into buffers it owns, reading rows straight from a `TokenizedExampleSource`
/// (a mapped token file, or arrays): loading a batch never allocates, and the rows are never built
/// all at once, so the memory held is the index below whatever the dataset's size.
///
/// Output per batch: `inputIDs` and `labels` `(B, T)` row-major Int32, labels UNSHIFTED (the model
/// shifts, HF convention; -100 = no loss), `attentionLengths` `(B)`: real tokens at the start of each
/// row (the rest is padding). A last incomplete batch is completed with all-padding rows (length 0,
/// labels -100), so every batch has the same shape and those rows contribute no loss.
public final class Batcher {
    public let options: BatcherOptions
    public let padTokenID: Int32
    public let source: TokenizedExampleSource
    /// Number of rows (packed chunks or examples).
    public let rowCount: Int
    public var batchesPerEpoch: Int { (rowCount + options.batchSize - 1) / options.batchSize }

    /// (B, T) token ids of the last loaded batch.
    public private(set) var inputIDs: [Int32]
    /// (B, T) labels of the last loaded batch.
    public private(set) var labels: [Int32]
    /// (B) real (non-padding) length of each row of the last loaded batch.
    public private(set) var attentionLengths: [Int32]

    /// The source's examples this batcher uses, in stream order.
    private let examples: [Int]
    /// Packing: where each example's segment (its first T tokens, then the separator when `separated`)
    /// starts in the packed stream; (examples + 1), the last is the stream length.
    private let streamStart: [Int]
    private let separated: [Bool]
    private let separatorTokenID: Int32?
    /// Row order of `orderEpoch`.
    private var order: [Int]
    private var orderEpoch = -1

    /// - Parameters:
    ///   - examples: indices into `source`, in the order rows are made (nil: all, in order).
    ///   - separatorTokenID: put between packed examples (normally EOS); ignored when padding.
    public init(source: TokenizedExampleSource, examples: [Int]? = nil, options: BatcherOptions, padTokenID: Int32,
                separatorTokenID: Int32?) throws {
        guard options.batchSize > 0 else { throw DataError.invalidBatcherOptions(detail: "batch size \(options.batchSize) must be positive") }
        guard options.maxSequenceLength > 1 else {
            throw DataError.invalidBatcherOptions(detail: "maximum sequence length \(options.maxSequenceLength) must be at least 2")
        }
        let used = examples ?? Array(0..<source.exampleCount)
        guard !used.isEmpty else { throw DataError.invalidBatcherOptions(detail: "no examples to batch") }
        self.options = options
        self.padTokenID = padTokenID
        self.source = source
        self.examples = used
        let T = options.maxSequenceLength
        switch options.mode {
        case .padding:
            streamStart = []
            separated = []
            self.separatorTokenID = nil
            rowCount = used.count
        case .packing:
            // The separator follows an example unless the stream already ends with it.
            var starts = [Int](repeating: 0, count: used.count + 1)
            var flags = [Bool](repeating: false, count: used.count)
            var position = 0
            var streamLast: Int32?
            var one: Int32 = 0, ignored: Int32 = 0
            for (k, index) in used.enumerated() {
                starts[k] = position
                let length = source.length(ofExample: index)
                let count = min(length, T)
                if count > 0 {
                    if count == length {
                        streamLast = source.lastID(ofExample: index)
                    } else {
                        source.copy(example: index, range: (count - 1)..<count, ids: &one, labels: &ignored)
                        streamLast = one
                        // Each such read maps a page of a token file: give them back as we go.
                        if k % 1024 == 1023 { source.releaseResidentPages() }
                    }
                }
                flags[k] = separatorTokenID != nil && streamLast != separatorTokenID
                if flags[k] { streamLast = separatorTokenID }
                position += count + (flags[k] ? 1 : 0)
            }
            starts[used.count] = position
            source.releaseResidentPages()
            streamStart = starts
            separated = flags
            self.separatorTokenID = separatorTokenID
            rowCount = (position + T - 1) / T
        }
        order = Array(0..<rowCount)
        let B = options.batchSize
        inputIDs = [Int32](repeating: padTokenID, count: B * T)
        self.labels = [Int32](repeating: TokenizedExample.ignoredLabel, count: B * T)
        attentionLengths = [Int32](repeating: 0, count: B)
    }

    /// Examples held in memory.
    public convenience init(examples: [TokenizedExample], options: BatcherOptions, padTokenID: Int32, separatorTokenID: Int32?) throws {
        for (index, example) in examples.enumerated() where example.inputIDs.count != example.labels.count {
            throw DataError.invalidBatcherOptions(detail: "example \(index) has \(example.inputIDs.count) ids but \(example.labels.count) labels")
        }
        try self.init(source: InMemoryExamples(examples), options: options, padTokenID: padTokenID, separatorTokenID: separatorTokenID)
    }

    /// Bytes of the batch buffers for `batch` rows of `seqLen`.
    public static func bufferBytes(batch: Int, seqLen: Int) -> Int { batch * seqLen * 8 + batch * 4 }

    /// Bytes this batcher holds: its batch buffers and its row index (not the source's).
    public var heldBytes: Int {
        Self.bufferBytes(batch: options.batchSize, seqLen: options.maxSequenceLength)
            + 8 * (examples.count + order.count + streamStart.count) + separated.count
    }

    /// Fills `inputIDs`, `labels` and `attentionLengths` with batch `index` of `epoch`.
    public func loadBatch(_ index: Int, epoch: Int) {
        if orderEpoch != epoch { reorder(epoch: epoch) }
        let B = options.batchSize, T = options.maxSequenceLength
        inputIDs.withUnsafeMutableBufferPointer { outIDs in
            labels.withUnsafeMutableBufferPointer { outLabels in
                for b in 0..<B {
                    let slot = index * B + b
                    let ids = outIDs.baseAddress! + b * T, labels = outLabels.baseAddress! + b * T
                    let length = slot < rowCount ? fillRow(order[slot], ids: ids, labels: labels) : 0
                    for t in length..<T {
                        ids[t] = padTokenID
                        labels[t] = TokenizedExample.ignoredLabel
                    }
                    attentionLengths[b] = Int32(length)
                }
            }
        }
        source.releaseResidentPages()
    }

    /// Writes row `row`'s tokens at the start of `ids`/`labels`; returns how many.
    private func fillRow(_ row: Int, ids: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>) -> Int {
        let T = options.maxSequenceLength
        switch options.mode {
        case .padding:
            let index = examples[row]
            let count = min(source.length(ofExample: index), T)
            source.copy(example: index, range: 0..<count, ids: ids, labels: labels)
            return count
        case .packing:
            let begin = row * T, end = min(begin + T, streamStart[examples.count])
            // The last segment starting at or before `begin`.
            var low = 0, high = examples.count
            while high - low > 1 {
                let middle = (low + high) / 2
                if streamStart[middle] <= begin { low = middle } else { high = middle }
            }
            var k = low, position = begin
            while position < end {
                while streamStart[k + 1] <= position { k += 1 }
                let index = examples[k]
                let tokens = min(source.length(ofExample: index), T)
                let offset = position - streamStart[k]
                if offset < tokens {
                    let count = min(tokens - offset, end - position)
                    source.copy(example: index, range: offset..<(offset + count), ids: ids + (position - begin), labels: labels + (position - begin))
                    position += count
                } else {
                    ids[position - begin] = separatorTokenID!
                    labels[position - begin] = separatorTokenID!
                    position += 1
                }
            }
            return end - begin
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
