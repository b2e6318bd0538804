import Testing
@testable import QLoRA

@Suite struct DataBatcherTests {
    static let examples = [
        TokenizedExample(inputIDs: [10, 11, 12], labels: [-100, 11, 12]),
        TokenizedExample(inputIDs: [20, 21, 22, 23, 24, 25], labels: [20, 21, 22, 23, 24, 25]),
        TokenizedExample(inputIDs: [30], labels: [30]),
    ]

    @Test func paddingTruncatesPadsAndMasks() throws {
        let batcher = try Batcher(examples: Self.examples, options: BatcherOptions(batchSize: 2, maxSequenceLength: 4, mode: .padding, shuffleSeed: nil),
                                  padTokenID: 0, separatorTokenID: 2)
        #expect(batcher.rowCount == 3 && batcher.batchesPerEpoch == 2)
        batcher.loadBatch(0, epoch: 0)
        #expect(batcher.inputIDs == [10, 11, 12, 0, 20, 21, 22, 23])
        #expect(batcher.labels == [-100, 11, 12, -100, 20, 21, 22, 23])
        #expect(batcher.attentionLengths == [3, 4])
        batcher.loadBatch(1, epoch: 0)
        // The last batch is completed with an all-padding row.
        #expect(batcher.inputIDs == [30, 0, 0, 0, 0, 0, 0, 0])
        #expect(batcher.labels == [30, -100, -100, -100, -100, -100, -100, -100])
        #expect(batcher.attentionLengths == [1, 0])
    }

    @Test func packingConcatenatesWithSeparators() throws {
        let batcher = try Batcher(examples: Self.examples, options: BatcherOptions(batchSize: 1, maxSequenceLength: 5, mode: .packing, shuffleSeed: nil),
                                  padTokenID: 0, separatorTokenID: 2)
        // Stream: 10 11 12 2 | 20 21 22 23 24 (truncated to 5) 2 | 30 2 -> 13 tokens, rows of 5.
        var ids: [Int32] = [], labels: [Int32] = [], lengths: [Int32] = []
        for index in 0..<batcher.batchesPerEpoch {
            batcher.loadBatch(index, epoch: 0)
            ids += batcher.inputIDs; labels += batcher.labels; lengths += batcher.attentionLengths
        }
        #expect(ids == [10, 11, 12, 2, 20, 21, 22, 23, 24, 2, 30, 2, 0, 0, 0])
        #expect(labels == [-100, 11, 12, 2, 20, 21, 22, 23, 24, 2, 30, 2, -100, -100, -100])
        #expect(lengths == [5, 5, 2])
    }

    @Test func shuffleIsSeededPerEpochAndCoversEveryRow() throws {
        let many = (0..<40).map { TokenizedExample(inputIDs: [Int32($0) + 100, 1], labels: [Int32($0) + 100, 1]) }
        func rows(_ seed: UInt64?, epoch: Int) throws -> [Int] {
            let batcher = try Batcher(examples: many, options: BatcherOptions(batchSize: 4, maxSequenceLength: 2, mode: .padding, shuffleSeed: seed),
                                      padTokenID: 0, separatorTokenID: nil)
            var seen: [Int] = []
            for index in 0..<batcher.batchesPerEpoch {
                batcher.loadBatch(index, epoch: epoch)
                for b in 0..<4 { seen.append(Int(batcher.inputIDs[b * 2]) - 100) }
            }
            return seen
        }
        let unshuffled = try rows(nil, epoch: 0)
        #expect(unshuffled == Array(0..<40))
        let a = try rows(5, epoch: 0), again = try rows(5, epoch: 0)
        let nextEpoch = try rows(5, epoch: 1), otherSeed = try rows(6, epoch: 0)
        #expect(a == again)
        #expect(a != nextEpoch && a != otherSeed)
        #expect(a.sorted() == Array(0..<40))
    }

    @Test func badOptionsThrowTheSpecificError() {
        #expect(throws: DataError.invalidBatcherOptions(detail: "batch size 0 must be positive")) {
            try Batcher(examples: Self.examples, options: BatcherOptions(batchSize: 0, maxSequenceLength: 4, mode: .padding, shuffleSeed: nil), padTokenID: 0, separatorTokenID: nil)
        }
        #expect(throws: DataError.invalidBatcherOptions(detail: "no examples to batch")) {
            try Batcher(examples: [], options: BatcherOptions(batchSize: 1, maxSequenceLength: 4, mode: .padding, shuffleSeed: nil), padTokenID: 0, separatorTokenID: nil)
        }
        #expect(throws: DataError.invalidBatcherOptions(detail: "example 0 has 2 ids but 1 labels")) {
            try Batcher(examples: [TokenizedExample(inputIDs: [1, 2], labels: [1])],
                        options: BatcherOptions(batchSize: 1, maxSequenceLength: 4, mode: .packing, shuffleSeed: nil), padTokenID: 0, separatorTokenID: nil)
        }
    }
}
