import Foundation
import Testing
@testable import QLoRA

/// The streaming token file: written from JSONL one line at a time, mapped, validated on open, reused
/// by the cache, and batched exactly as the in-memory path batches the same records.
@Suite struct TokenFileTests {
    static func tokenizerDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: FixturePaths.url("tokenizer-sp/metaspace/\(file)"), to: dir.appendingPathComponent(file))
        }
        return dir
    }

    static let lines = (0..<37).map { i -> String in
        switch i % 4 {
        case 0: return #"{"text": "The quick brown fox jumps over the lazy dog, time \#(i)."}"#
        case 1: return #"{"prompt": "Question \#(i): what is the capital of France?", "completion": " Paris."}"#
        case 2: return #"{"input_ids": [5, 6, 7, \#(i + 8)], "labels": [-100, 6, 7, \#(i + 8)]}"#
        default: return #"{"text": "\#(String(repeating: "long words again ", count: i))"}"#
        }
    }

    static func writeData(_ dir: URL, lines: [String] = lines, name: String = "train.jsonl") throws -> URL {
        let url = dir.appendingPathComponent(name)
        // CRLF endings and a blank line, no newline at the end: what files from other tools look like.
        try Data((lines.prefix(3).joined(separator: "\r\n") + "\r\n\n" + lines.dropFirst(3).joined(separator: "\n")).utf8).write(to: url)
        return url
    }

    @Test func holdsExactlyWhatTheInMemoryPathTokenizes() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.writeData(dir)
        for vocab in [2000, 70_000] {
            let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: vocab, purpose: "tests")
            let expected = try dataset.tokenize(try TrainingExample.load(jsonl: data), file: data)
            let file = try TokenFileWriter.write(jsonl: data, dataset: dataset, fingerprint: 7, to: dir.appendingPathComponent("t\(vocab).tokens"))
            #expect(file.idBytes == (vocab <= 65536 ? 2 : 4))
            #expect(file.exampleCount == expected.count && file.fingerprint == 7 && file.vocabSize == vocab)
            #expect(file.tokenCount == expected.reduce(0) { $0 + $1.inputIDs.count })
            for (index, example) in expected.enumerated() {
                var ids = [Int32](repeating: 0, count: example.inputIDs.count), labels = ids
                file.copy(example: index, range: 0..<ids.count, ids: &ids, labels: &labels)
                #expect(ids == example.inputIDs && labels == example.labels, "example \(index)")
                #expect(file.lastID(ofExample: index) == example.inputIDs.last)
            }
        }
    }

    @Test func batchesEqualTheInMemoryBatches() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.writeData(dir)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests")
        let expected = try dataset.tokenize(try TrainingExample.load(jsonl: data), file: data)
        let file = try TokenFileWriter.write(jsonl: data, dataset: dataset, fingerprint: 1, to: dir.appendingPathComponent("t.tokens"))
        let subset = try TrainingExample.split(Array(0..<expected.count), evalFraction: 0.25, seed: 9).train
        for mode in [BatchingMode.packing, .padding] {
            for T in [5, 16, 64] {
                let options = BatcherOptions(batchSize: 3, maxSequenceLength: T, mode: mode, shuffleSeed: 11)
                let separator: Int32? = mode == .packing ? 2 : nil
                let mapped = try Batcher(source: file, examples: subset, options: options, padTokenID: 0, separatorTokenID: separator)
                let memory = try Batcher(examples: subset.map { expected[$0] }, options: options, padTokenID: 0, separatorTokenID: separator)
                #expect(mapped.rowCount == memory.rowCount)
                for epoch in 0..<2 {
                    for index in 0..<memory.batchesPerEpoch {
                        mapped.loadBatch(index, epoch: epoch)
                        memory.loadBatch(index, epoch: epoch)
                        #expect(mapped.inputIDs == memory.inputIDs && mapped.labels == memory.labels
                                && mapped.attentionLengths == memory.attentionLengths, "\(mode) T=\(T) epoch \(epoch) batch \(index)")
                    }
                }
            }
        }
    }

    @Test func aDamagedFileIsRefusedWithItsPathAndTheCacheRewritesIt() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.writeData(dir)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests")
        let cache = TokenFileCache(directory: dir.appendingPathComponent("cache"))
        let first = try cache.tokenFile(for: data, dataset: dataset)
        #expect(!first.reused)
        let url = first.file.url
        let good = try Data(contentsOf: url)
        func refusal(_ bytes: Data) throws -> String {
            try bytes.write(to: url)
            do { _ = try TokenFile(url: url); return "" } catch { return "\(error)" }
        }
        var flipped = good
        flipped[TokenFile.headerBytes + 3] ^= 0x40
        #expect(try refusal(flipped).contains("body checksum"))
        #expect(try refusal(flipped).contains(url.path))
        var header = good
        header[20] ^= 1
        #expect(try refusal(header).contains("header checksum"))
        #expect(try refusal(good.prefix(good.count - 8)).contains("truncated"))
        #expect(try refusal(good.prefix(40)).contains("shorter than"))
        #expect(try refusal(Data(String(repeating: "not a token file ", count: 10).utf8)).contains("magic"))
        // The cache does not trust it: tokenized again, the same bytes as before.
        let again = try cache.tokenFile(for: data, dataset: dataset)
        #expect(!again.reused)
        #expect(try Data(contentsOf: again.file.url) == good)
    }

    /// A writer killed mid-tokenization leaves `.NAME.PID.RANDOM.tmp`: the next write removes it once its
    /// pid no longer runs, and leaves a live writer's file alone.
    @Test func staleTemporariesOfDeadWritersAreRemoved() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.writeData(dir)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests")
        let cacheDirectory = dir.appendingPathComponent("cache")
        try FileManager.default.createDirectory(at: cacheDirectory, withIntermediateDirectories: true)
        let dead = cacheDirectory.appendingPathComponent(".train-0123abcd-00000000.tokens.\(Int32.max).42.tmp")
        let live = cacheDirectory.appendingPathComponent(".train-0123abcd-00000000.tokens.\(getpid()).43.tmp")
        for url in [dead, live] { try Data("partial".utf8).write(to: url) }
        _ = try TokenFileCache(directory: cacheDirectory).tokenFile(for: data, dataset: dataset)
        #expect(!FileManager.default.fileExists(atPath: dead.path))
        #expect(FileManager.default.fileExists(atPath: live.path))
    }

    @Test func theCacheReusesUntilTheDataOrTheTokenizerChanges() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.writeData(dir)
        let cache = TokenFileCache(directory: dir.appendingPathComponent("cache"))
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests")
        let first = try cache.tokenFile(for: data, dataset: dataset)
        let second = try cache.tokenFile(for: data, dataset: dataset)
        #expect(!first.reused && second.reused && second.file.url == first.file.url)

        // Same size, other content: a new file replaces the old one.
        var edited = Self.lines
        edited[0] = edited[0].replacingOccurrences(of: "quick", with: "quack")
        _ = try Self.writeData(dir, lines: edited)
        let third = try cache.tokenFile(for: data, dataset: dataset)
        #expect(!third.reused && third.file.url != first.file.url)
        #expect(!FileManager.default.fileExists(atPath: first.file.url.path))

        // Another vocabulary size (another model) is another file; so is another tokenizer config.
        let wider = try DatasetTokenizer(modelDirectory: dir, vocabSize: 4000, purpose: "tests")
        #expect(try !cache.tokenFile(for: data, dataset: wider).reused)
        #expect(dataset.settingsFingerprint() != wider.settingsFingerprint())
        let before = dataset.settingsFingerprint()
        let config = dir.appendingPathComponent("tokenizer_config.json")
        try (String(decoding: try Data(contentsOf: config), as: UTF8.self) + "\n").write(to: config, atomically: true, encoding: .utf8)
        #expect(try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests").settingsFingerprint() != before)
    }

    @Test func errorsNameTheLineAndLeaveNoFileBehind() throws {
        let dir = try Self.tokenizerDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var lines = Self.lines
        lines[20] = #"{"text": 5}"#
        let data = dir.appendingPathComponent("bad.jsonl")
        try Data(lines.joined(separator: "\n").utf8).write(to: data)
        let dataset = try DatasetTokenizer(modelDirectory: dir, vocabSize: 2000, purpose: "tests")
        let target = dir.appendingPathComponent("out/bad.tokens")
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        #expect(throws: DataError.invalidDatasetLine(file: "bad.jsonl", line: 21, expected: #""text" to be a string"#)) {
            try TokenFileWriter.write(jsonl: data, dataset: dataset, fingerprint: 0, to: target)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: target.deletingLastPathComponent().path).isEmpty)
        // Out-of-vocabulary ids name the line too.
        lines[20] = #"{"input_ids": [1, 99999]}"#
        try Data(lines.joined(separator: "\n").utf8).write(to: data)
        let message: String
        do { try TokenFileWriter.write(jsonl: data, dataset: dataset, fingerprint: 0, to: target); message = "" } catch { message = "\(error)" }
        #expect(message.contains("bad.jsonl:21") && message.contains("99999"), "\(message)")
    }

    @Test func theLineReaderSplitsAcrossChunkBoundaries() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-lines-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = ["", "a", String(repeating: "x", count: 100), "bc\r", "", String(repeating: "y", count: 17), "last"].joined(separator: "\n")
        let url = dir.appendingPathComponent("l.txt")
        try Data(text.utf8).write(to: url)
        for chunk in [16, 17, 64, 1 << 20] {
            var lines: [String] = [], numbers: [Int] = []
            try JSONLLineReader(url: url, chunkBytes: chunk).forEachLine { line, number in
                lines.append(String(decoding: line, as: UTF8.self))
                numbers.append(number)
            }
            // Split on the byte: Swift's String treats "\r\n" as one Character.
            #expect(lines == text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }, "chunk \(chunk)")
            #expect(numbers == Array(1...7))
        }
    }
}
