import Foundation

/// The WordPiece model of `tokenizers` (BERT): each word is cut greedily into the longest vocabulary
/// entries from the left, pieces after the first looked up with `continuing_subword_prefix` ("##");
/// when some position has no entry, or the word has more than `max_input_chars_per_word` characters,
/// the whole word becomes `unk_token`.
final class WordPieceModel: TokenizerModel, @unchecked Sendable {
    let idToToken: [String?]
    let tokenToID: [TokenBytes: Int32]
    /// Entries by their scalars: all of them (a word's first piece), and those with the prefix, keyed
    /// without it (later pieces). Slices, so that a piece of a word is looked up without copying it.
    private let wordStarts: [ArraySlice<UInt32>: Int32]
    private let continuations: [ArraySlice<UInt32>: Int32]
    /// Longest entry in scalars: no longer piece is tried.
    private let longestStart: Int
    private let longestContinuation: Int
    private let unknownID: Int32
    private let maxInputCharsPerWord: Int

    init(json model: [String: Any]) throws {
        func invalid(_ detail: String) -> DataError { .invalidTokenizerFile(file: "tokenizer.json", detail: "model (WordPiece): \(detail)") }
        // Our tokenizer.json reader gives the vocabulary in id order (every spelling kept); a JSON
        // object from elsewhere is a dictionary.
        let vocab: [(token: String, id: Int)]
        if let vocabulary = model["vocab"] as? TokenizerVocabulary {
            vocab = vocabulary.tokens.enumerated().compactMap { id, token in token.map { ($0, id) } }
        } else if let object = model["vocab"] as? [String: Any] {
            vocab = try object.map { token, value in
                guard let number = value as? NSNumber else { throw invalid("vocab entry \(token) has no integer id") }
                return (token, number.intValue)
            }
        } else {
            throw invalid("vocab missing")
        }
        let prefix = model["continuing_subword_prefix"] as? String ?? "##"
        let prefixScalars = scalarValues(prefix)
        maxInputCharsPerWord = (model["max_input_chars_per_word"] as? NSNumber)?.intValue ?? 100
        var tokenToID: [TokenBytes: Int32] = [:], starts: [ArraySlice<UInt32>: Int32] = [:], continuations: [ArraySlice<UInt32>: Int32] = [:]
        tokenToID.reserveCapacity(vocab.count)
        starts.reserveCapacity(vocab.count)
        var maxID: Int32 = -1, longestStart = 0, longestContinuation = 0
        for (token, value) in vocab {
            guard value >= 0, value <= Int(Int32.max) else { throw invalid("vocab entry \(token) has the id \(value), outside 0...\(Int32.max)") }
            let id = Int32(value)
            tokenToID[TokenBytes(token)] = id
            maxID = max(maxID, id)
            let scalars = scalarValues(token)
            starts[ArraySlice(scalars)] = id
            longestStart = max(longestStart, scalars.count)
            if !prefixScalars.isEmpty, scalars.count > prefixScalars.count, scalars.starts(with: prefixScalars) {
                let rest = ArraySlice(Array(scalars[prefixScalars.count...]))
                continuations[rest] = id
                longestContinuation = max(longestContinuation, rest.count)
            }
        }
        var idToToken = [String?](repeating: nil, count: Int(maxID) + 1)
        for (token, id) in vocab { idToToken[id] = token }
        // An empty prefix: later pieces are looked up as they are.
        if prefixScalars.isEmpty { continuations = starts; longestContinuation = longestStart }
        let unknown = model["unk_token"] as? String ?? "[UNK]"
        guard let unknownID = tokenToID[TokenBytes(unknown)] else {
            throw invalid("unk_token \(unknown) is not in the vocab (every word without pieces becomes it)")
        }
        self.unknownID = unknownID
        self.idToToken = idToToken
        self.tokenToID = tokenToID
        self.wordStarts = starts
        self.continuations = continuations
        self.longestStart = longestStart
        self.longestContinuation = longestContinuation
    }

    func tokenize(_ word: ArraySlice<UInt32>, ids: inout [Int32], scalarCounts: inout [Int32]) {
        guard !word.isEmpty else { return }
        guard word.count <= maxInputCharsPerWord else {
            ids.append(unknownID); scalarCounts.append(Int32(word.count))
            return
        }
        let first = ids.count
        var start = word.startIndex
        while start < word.endIndex {
            let table = start == word.startIndex ? wordStarts : continuations
            let longest = start == word.startIndex ? longestStart : longestContinuation
            var end = min(word.endIndex, start + longest)
            var found: Int32? = nil
            while end > start {
                if let id = table[word[start..<end]] { found = id; break }
                end -= 1
            }
            guard let id = found else {
                // One piece is missing: the whole word is unknown.
                ids.removeSubrange(first...)
                scalarCounts.removeSubrange(first...)
                ids.append(unknownID); scalarCounts.append(Int32(word.count))
                return
            }
            ids.append(id); scalarCounts.append(Int32(end - start))
            start = end
        }
    }
}
