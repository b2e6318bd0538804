import Foundation
import QLoRA

/// Dataset tokenization time and peak RSS on a generated JSONL: one huge `{"text": ...}` line
/// (`--lines 1`) or many ordinary ones. `--path memory` is the whole-file path (TrainingExample.load +
/// DatasetTokenizer.tokenize); run each path in its own process so that its peak is its own.
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
        default:
            throw BenchError("--path must be memory")
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
