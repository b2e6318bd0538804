import Foundation
import QLoRA

/// Dataset tokenization time and peak RSS on a generated JSONL: one huge `{"text": ...}` line
/// (`--lines 1`) or many ordinary ones. `--path memory` is the old whole-file path (TrainingExample.load +
/// DatasetTokenizer.tokenize); `--path stream` is what `train` and `eval` do: the streaming pass into a
/// token file, then one epoch of packed batches (B 4, T 512) read out of the mapped file. Run each
/// path in its own process so that its peak is its own.
enum TokenizeBenchmark: Benchmark {
    static let name = "tokenize"
    static let summary = "dataset tokenization seconds and peak RSS (--mb 50 --lines 1 --path memory --model Fixtures/tokenizer)"

    static func run(_ arguments: [String]) throws {
        let options = try Bench.options(arguments, allowed: ["mb", "lines", "path", "model", "vocab", "keep"])
        let megabytes = Double(options["mb"] ?? "50")!, lines = Int(options["lines"] ?? "1")!
        let path = options["path"] ?? "memory"
        let model = URL(fileURLWithPath: options["model"] ?? "Fixtures/tokenizer")
        let vocab = Int(options["vocab"] ?? "49152")!
        let file = URL(fileURLWithPath: NSTemporaryDirectory() + "qlora-bench-tokenize-\(getpid()).jsonl")
        defer { if options["keep"] == nil { try? FileManager.default.removeItem(at: file) } }
        let bytes = try generate(file, bytes: Int(megabytes * 1_000_000), lines: lines)
        let dataset = try DatasetTokenizer(modelDirectory: model, vocabSize: vocab, purpose: "the benchmark")
        ProcessMemory.releaseFreedMemory()
        ProcessMemory.resetPeak()
        let before = ProcessMemory.residentBytes().current
        let start = Bench.now()
        var tokens = 0, records = 0
        switch path {
        case "memory":
            let tokenized = try dataset.tokenize(try TrainingExample.load(jsonl: file), file: file)
            records = tokenized.count
            tokens = tokenized.reduce(0) { $0 + $1.inputIDs.count }
        case "stream":
            let target = URL(fileURLWithPath: file.path + ".tokens")
            defer { try? FileManager.default.removeItem(at: target) }
            let tokenFile = try TokenFileWriter.write(jsonl: file, dataset: dataset, fingerprint: 0, to: target)
            let written = Bench.now() - start
            let batcher = try Batcher(source: tokenFile, options: BatcherOptions(batchSize: 4, maxSequenceLength: 512, mode: .packing, shuffleSeed: 1),
                                      padTokenID: 0, separatorTokenID: dataset.separatorTokenID)
            var checksum = 0
            for index in 0..<batcher.batchesPerEpoch {
                batcher.loadBatch(index, epoch: 0)
                checksum &+= Int(batcher.inputIDs[index % batcher.inputIDs.count])
            }
            records = tokenFile.exampleCount
            tokens = tokenFile.tokenCount
            print(String(format: "  token file %.1f MB written in %.2f s; %d batches read (checksum %d), index + buffers %.1f MB",
                         Double(tokenFile.fileBytes) / 1e6, written, batcher.batchesPerEpoch, checksum,
                         Double(batcher.heldBytes + tokenFile.indexBytes) / 1e6))
        default:
            throw BenchError("--path must be memory or stream")
        }
        let seconds = Bench.now() - start
        let peak = ProcessMemory.residentBytes().peak
        print("tokenize --path \(path): \(lines) line(s), \(bytes) bytes -> \(records) records, \(tokens) tokens")
        print(String(format: "  %.2f s (%.1f MB/s), peak RSS %.1f MB (%.1f MB before: +%.1f bytes per input byte)",
                     seconds, Double(bytes) / seconds / 1e6, Double(peak) / 1e6, Double(before) / 1e6,
                     Double(peak - before) / Double(bytes)))
    }

    /// Seeded pseudo-English (words, punctuation, digits, a little non-ASCII), `lines` JSONL records of
    /// about `bytes / lines` bytes each, written in pieces so the generator itself stays small.
    static func generate(_ url: URL, bytes: Int, lines: Int) throws -> Int {
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "of", "to", "in", "model",
                     "training", "data", "memory", "token", "café", "naïve", "über", "数据", "模型", "2024", "42", "Paris",
                     "is", "a", "capital", "France", "we", "measure", "bytes", "per", "second", "it's", "don't"]
        let punctuation = [" ", " ", " ", " ", " ", ", ", ". ", "; ", "! ", "? ", "\\n", " (", ") "]
        var rng = SeededGenerator(seed: 20)
        FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        let perLine = max(16, bytes / max(1, lines))
        var written = 0
        for _ in 0..<lines {
            var chunk = #"{"text": ""#
            var lineBytes = 0
            while lineBytes < perLine {
                let word = words[Int(rng.next() % UInt64(words.count))]
                let gap = punctuation[Int(rng.next() % UInt64(punctuation.count))]
                chunk += word
                chunk += gap
                lineBytes += word.utf8.count + gap.utf8.count
                if chunk.utf8.count > 1 << 20 {
                    try handle.write(contentsOf: Data(chunk.utf8))
                    written += chunk.utf8.count
                    chunk = ""
                }
            }
            chunk += "\"}\n"
            try handle.write(contentsOf: Data(chunk.utf8))
            written += chunk.utf8.count
        }
        return written
    }
}
