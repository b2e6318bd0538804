/// The demo's synthetic language: arithmetic progressions of digits mod 10.
/// "+2 7:913579" continues 7 upward in steps of 2; "-2 7:531975" downward. The base model is
/// pretrained on the "+" direction only; the LoRA fine-tune teaches "-", a related skill.
/// Character-level vocabulary, so nothing is downloaded.
public struct CountingTask: BatchSource, Sendable {
    public static let pad: Int32 = 0, bos: Int32 = 1, eos: Int32 = 2
    public static let alphabet: [Character] = Array("0123456789+-: ")
    public static var vocabSize: Int { 3 + alphabet.count }
    /// Answer digits per example.
    public static let answerLength = 6
    /// BOS + "+k d:" + answer + EOS.
    public static let sequenceLength = 1 + 5 + answerLength + 1

    public var direction: Character
    public var batchSize: Int
    public var seed: UInt64

    public init(direction: Character, batchSize: Int, seed: UInt64) {
        self.direction = direction
        self.batchSize = batchSize
        self.seed = seed
    }

    public static func encode(_ text: String) -> [Int32] {
        text.map { ch in Int32(3 + alphabet.firstIndex(of: ch)!) }
    }

    public static func decode(_ ids: [Int32]) -> String {
        String(ids.compactMap { id -> Character? in
            let index = Int(id) - 3
            return index >= 0 && index < alphabet.count ? alphabet[index] : nil
        })
    }

    /// "+2 7:" — the part the model is given.
    public func prompt(step: Int, start: Int) -> String { "\(direction)\(step) \(start):" }

    /// The correct continuation of a prompt.
    public func answer(step: Int, start: Int) -> String {
        let sign = direction == "+" ? 1 : -1
        return String((1...Self.answerLength).map { j in Character(String(((start + sign * step * j) % 10 + 10) % 10)) })
    }

    /// One example: ids and labels (-100 on the prompt: only the answer and EOS are trained).
    public func example(step: Int, start: Int) -> (ids: [Int32], labels: [Int32]) {
        let promptIDs = [Self.bos] + Self.encode(prompt(step: step, start: start))
        let answerIDs = Self.encode(answer(step: step, start: start)) + [Self.eos]
        return (promptIDs + answerIDs, [Int32](repeating: -100, count: promptIDs.count) + answerIDs)
    }

    public func batch(step: Int, micro: Int) -> TokenBatch {
        var generator = SeededGenerator(seed: SeededGenerator.mix(seed &+ UInt64(step) &* 7919 &+ UInt64(micro)))
        var ids: [Int32] = [], labels: [Int32] = []
        ids.reserveCapacity(batchSize * Self.sequenceLength)
        labels.reserveCapacity(batchSize * Self.sequenceLength)
        for _ in 0..<batchSize {
            let example = self.example(step: 1 + Int(generator.next() % 3), start: Int(generator.next() % 10))
            ids += example.ids
            labels += example.labels
        }
        return TokenBatch(inputIDs: ids, labels: labels, batch: batchSize, seqLen: Self.sequenceLength)
    }

    /// All 30 prompts (step 1..3, start 0..9).
    public static let allProblems: [(step: Int, start: Int)] = (1...3).flatMap { k in (0..<10).map { (k, $0) } }
}
