import Foundation

/// Key of a vocabulary entry: its exact UTF-8 bytes (Swift `String` equality is canonical
/// equivalence, which would merge distinct tokens such as "é" and "e\u{301}").
struct TokenBytes: Hashable {
    let bytes: [UInt8]
    init(_ string: String) { bytes = Array(string.utf8) }
    init(bytes: [UInt8]) { self.bytes = bytes }

    // Hashed as one buffer: the synthesized hash feeds the Hasher a byte at a time, which dominated
    // building a 262k-token vocabulary and its half a million merges.
    func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
    static func == (a: TokenBytes, b: TokenBytes) -> Bool { a.bytes == b.bytes }
}

/// The BPE model of `tokenizers`: per-character symbols (or `<0xNN>` byte fallback / unk), merged
/// lowest rank first (leftmost among equal ranks) with a binary heap over a linked symbol list.
final class BytePairModel: @unchecked Sendable {
    /// Token string of each model id (nil for holes in the id range).
    let idToToken: [String?]
    let tokenToID: [TokenBytes: Int32]
    /// Ids of single-scalar tokens.
    private let scalarToID: [UInt32: Int32]
    /// (left << 32 | right) -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    /// `<0xNN>` id per byte (-1 where the vocabulary lacks it); empty without byte fallback.
    private let byteFallbackIDs: [Int32]
    private let unknownID: Int32?
    private let fuseUnknown: Bool
    private let ignoreMerges: Bool

    private let cacheLock = NSLock()
    private var cache: [ArraySlice<UInt32>: CachedWord] = [:]
    private static let cacheCapacity = 100_000
    private static let maxCachedLength = 256

    /// A tokenized word: ids and how many input scalars each id covers.
    struct CachedWord { var ids: [Int32]; var scalarCounts: [Int32] }

    /// Token ids beyond this are refused (16M: 60x the largest vocabularies in use).
    static let maxTokenID: Int32 = 1 << 24

    init(json model: [String: Any]) throws {
        func invalid(_ detail: String) -> DataError { .invalidTokenizerFile(file: "tokenizer.json", detail: "model: \(detail)") }
        let type = model["type"] as? String ?? "BPE"
        guard type == "BPE" else {
            throw DataError.unsupportedTokenizerFeature(component: "model", detail: "type \(type) (only BPE is implemented)")
        }
        if let dropout = model["dropout"] as? NSNumber, dropout.doubleValue > 0 {
            throw DataError.unsupportedTokenizerFeature(component: "model", detail: "BPE dropout \(dropout)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = model[key] as? String, !affix.isEmpty {
                throw DataError.unsupportedTokenizerFeature(component: "model", detail: "\(key) \"\(affix)\"")
            }
        }
        var idToToken: [String?]
        if let vocabulary = model["vocab"] as? TokenizerVocabulary {
            idToToken = vocabulary.tokens
        } else if let vocab = model["vocab"] as? [String: Any] {
            var maxID = -1
            for (token, value) in vocab {
                // Ids index a table: refuse negative, fractional and absurd ones instead of trapping on them.
                guard let number = value as? NSNumber, let id = Int32(exactly: number.doubleValue), id >= 0, id < Self.maxTokenID else {
                    throw invalid("vocab entry \(token.debugDescription) has id \(value), not an integer in 0..<\(Self.maxTokenID)")
                }
                maxID = max(maxID, Int(id))
            }
            idToToken = [String?](repeating: nil, count: maxID + 1)
            for (token, value) in vocab { idToToken[(value as! NSNumber).intValue] = token }
        } else {
            throw invalid("vocab missing")
        }
        var tokenToID: [TokenBytes: Int32] = [:]
        tokenToID.reserveCapacity(idToToken.count)
        var scalarToID: [UInt32: Int32] = [:]
        for (index, token) in idToToken.enumerated() {
            guard let token else { continue }
            let id = Int32(index)
            tokenToID[TokenBytes(token)] = id
            let scalars = token.unicodeScalars
            if scalars.count == 1, let scalar = scalars.first { scalarToID[scalar.value] = id }
        }

        guard let mergeList = model["merges"] as? [Any] else { throw invalid("merges missing") }
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, entry) in mergeList.enumerated() {
            let parts: [String]
            if let line = entry as? String {
                // "a b": split at the first space (tokens never contain a plain space in this form)
                guard let space = line.firstIndex(of: " ") else { throw invalid("merge \(rank) \"\(line)\" has no space") }
                parts = [String(line[..<space]), String(line[line.index(after: space)...])]
            } else if let pair = entry as? [String], pair.count == 2 {
                parts = pair
            } else {
                throw invalid("merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            guard let left = tokenToID[TokenBytes(parts[0])], let right = tokenToID[TokenBytes(parts[1])] else {
                throw invalid("merge \(rank) uses a token missing from the vocab")
            }
            guard let merged = tokenToID[TokenBytes(bytes: Array(parts[0].utf8) + Array(parts[1].utf8))] else {
                throw invalid("merge \(rank) produces a token missing from the vocab")
            }
            let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
            if merges[key] == nil {
                merges[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
            }
        }

        if model["byte_fallback"] as? Bool ?? false {
            byteFallbackIDs = (0..<256).map { tokenToID[TokenBytes(String(format: "<0x%02X>", $0))] ?? -1 }
        } else {
            byteFallbackIDs = []
        }
        if let unknown = model["unk_token"] as? String {
            guard let id = tokenToID[TokenBytes(unknown)] else { throw invalid("unk_token \(unknown) is not in the vocab") }
            unknownID = id
        } else {
            unknownID = nil
        }
        fuseUnknown = model["fuse_unk"] as? Bool ?? false
        ignoreMerges = model["ignore_merges"] as? Bool ?? false
        self.idToToken = idToToken
        self.tokenToID = tokenToID
        self.scalarToID = scalarToID
        self.merges = merges
    }

    var vocabularyCount: Int { tokenToID.count }

    /// Tokenizes one pre-tokenized word, appending ids and scalar counts.
    func tokenize(_ word: ArraySlice<UInt32>, ids: inout [Int32], scalarCounts: inout [Int32]) {
        guard !word.isEmpty else { return }
        if ignoreMerges {
            var bytes: [UInt8] = []
            for scalar in word { AlignedText.appendUTF8(scalar, to: &bytes) }
            if let id = tokenToID[TokenBytes(bytes: bytes)] {
                ids.append(id)
                scalarCounts.append(Int32(word.count))
                return
            }
        }
        let cacheable = word.count < BytePairModel.maxCachedLength
        if cacheable {
            cacheLock.lock()
            let hit = cache[word]
            cacheLock.unlock()
            if let hit {
                ids.append(contentsOf: hit.ids)
                scalarCounts.append(contentsOf: hit.scalarCounts)
                return
            }
        }
        let result = mergeWord(word)
        ids.append(contentsOf: result.ids)
        scalarCounts.append(contentsOf: result.scalarCounts)
        if cacheable {
            cacheLock.lock()
            // A fresh copy, so the key does not keep the caller's whole text alive.
            if cache.count < BytePairModel.cacheCapacity { cache[ArraySlice(Array(word))] = result }
            cacheLock.unlock()
        }
    }

    /// The heap entry of a candidate merge: ordered by rank, then position.
    private struct Candidate {
        var key: UInt64  // rank << 32 | position
        var newID: Int32
    }

    private func mergeWord(_ word: ArraySlice<UInt32>) -> CachedWord {
        // Symbols: id, scalar count ("len" in tokenizers; 0 marks a removed symbol), prev, next.
        var symbolIDs: [Int32] = []
        var lengths: [Int32] = []
        symbolIDs.reserveCapacity(word.count)
        lengths.reserveCapacity(word.count)
        var pendingUnknown: (id: Int32, length: Int32)? = nil
        var utf8: [UInt8] = []
        for scalar in word {
            if let id = scalarToID[scalar] {
                if let unknown = pendingUnknown {
                    symbolIDs.append(unknown.id); lengths.append(unknown.length)
                    pendingUnknown = nil
                }
                symbolIDs.append(id); lengths.append(1)
                continue
            }
            if !byteFallbackIDs.isEmpty {
                utf8.removeAll(keepingCapacity: true)
                AlignedText.appendUTF8(scalar, to: &utf8)
                if utf8.allSatisfy({ byteFallbackIDs[Int($0)] >= 0 }) {
                    // Byte tokens share their character; the first carries it so that counts sum up.
                    for (k, byte) in utf8.enumerated() {
                        symbolIDs.append(byteFallbackIDs[Int(byte)]); lengths.append(k == 0 ? 1 : 0)
                    }
                    continue
                }
            }
            if let unknownID {
                if let unknown = pendingUnknown, fuseUnknown {
                    pendingUnknown = (unknown.id, unknown.length + 1)
                } else {
                    if let unknown = pendingUnknown { symbolIDs.append(unknown.id); lengths.append(unknown.length) }
                    pendingUnknown = (unknownID, 1)
                }
            }
        }
        if let unknown = pendingUnknown { symbolIDs.append(unknown.id); lengths.append(unknown.length) }

        let n = symbolIDs.count
        guard n > 1 else { return CachedWord(ids: symbolIDs, scalarCounts: lengths) }
        // Liveness is separate from the scalar count because byte-fallback continuation bytes count 0.
        var alive = [Bool](repeating: true, count: n)
        var previous = (0..<n).map { $0 - 1 }
        var next = (0..<n).map { $0 + 1 }  // n means none
        var heap: [Candidate] = []
        heap.reserveCapacity(n)

        func lookup(_ left: Int32, _ right: Int32) -> UInt64? {
            merges[UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))]
        }
        func push(_ candidate: Candidate) {
            heap.append(candidate)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                if heap[parent].key <= heap[child].key { break }
                heap.swapAt(parent, child)
                child = parent
            }
        }
        func pop() -> Candidate {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var parent = 0
                while true {
                    let left = 2 * parent + 1
                    if left >= heap.count { break }
                    var smallest = left
                    if left + 1 < heap.count && heap[left + 1].key < heap[left].key { smallest = left + 1 }
                    if heap[parent].key <= heap[smallest].key { break }
                    heap.swapAt(parent, smallest)
                    parent = smallest
                }
            }
            return top
        }
        for position in 0..<(n - 1) {
            if let merge = lookup(symbolIDs[position], symbolIDs[position + 1]) {
                push(Candidate(key: (merge >> 32) << 32 | UInt64(position), newID: Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)))
            }
        }
        while !heap.isEmpty {
            let top = pop()
            let position = Int(top.key & 0xFFFF_FFFF)
            guard alive[position] else { continue }
            let right = next[position]
            guard right < n else { continue }
            guard let merge = lookup(symbolIDs[position], symbolIDs[right]),
                  Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF) == top.newID else { continue }
            symbolIDs[position] = top.newID
            lengths[position] += lengths[right]
            alive[right] = false
            next[position] = next[right]
            if next[right] < n { previous[next[right]] = position }
            let before = previous[position]
            if before >= 0, let merge = lookup(symbolIDs[before], top.newID) {
                push(Candidate(key: (merge >> 32) << 32 | UInt64(before), newID: Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)))
            }
            let after = next[position]
            if after < n, let merge = lookup(top.newID, symbolIDs[after]) {
                push(Candidate(key: (merge >> 32) << 32 | UInt64(position), newID: Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)))
            }
        }
        var result = CachedWord(ids: [], scalarCounts: [])
        for i in 0..<n where alive[i] {
            result.ids.append(symbolIDs[i])
            result.scalarCounts.append(lengths[i])
        }
        return result
    }
}
