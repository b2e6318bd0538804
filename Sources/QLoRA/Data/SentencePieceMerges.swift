import Foundation

/// BPE merges recovered from a vocabulary that stores none (a SentencePiece GGUF), as transformers'
/// `generate_merges(vocab, vocab_scores)` does: every split of a token into two vocabulary tokens is a
/// merge; merges are ranked by the token's key (its score, or minus its position) highest first, then
/// by longer left part, then longer right part; ties keep the order of the tokens, and within a token
/// the order of (left id, right id).
enum SentencePieceMerges {
    /// `tokens` in file order, `vocabulary` their ids (a repeated token has its last index, as a Python
    /// dict keeps), `rankKeys[i]` the key of token i (the last occurrence's key counts for a repeat).
    static func recover(tokens: [String], vocabulary: [TokenBytes: Int], rankKeys: [Double]) -> [[String]] {
        struct Merge { var key: Double; var leftLength: Int32; var rightLength: Int32; var left: Int32; var right: Int32 }
        var merges: [Merge] = []
        merges.reserveCapacity(tokens.count * 2)
        var local: [Merge] = []
        var boundaries: [Int] = []
        var seen = Set<Int>()  // ids (last indices) already visited: a dict iterates each key once
        for token in tokens {
            let bytes = Array(token.utf8)
            guard let id = vocabulary[TokenBytes(bytes: bytes)], seen.insert(id).inserted else { continue }
            // Byte offsets of the scalar boundaries inside the token (Python slices by code point).
            boundaries.removeAll(keepingCapacity: true)
            var offset = 0
            for scalar in token.unicodeScalars {
                offset += UTF8.width(scalar)
                boundaries.append(offset)
            }
            let scalarCount = boundaries.count
            guard scalarCount > 1 else { continue }
            local.removeAll(keepingCapacity: true)
            for (k, cut) in boundaries.dropLast().enumerated() {
                guard let left = vocabulary[TokenBytes(bytes: Array(bytes[..<cut]))],
                      let right = vocabulary[TokenBytes(bytes: Array(bytes[cut...]))] else { continue }
                local.append(Merge(key: rankKeys[id], leftLength: Int32(k + 1), rightLength: Int32(scalarCount - k - 1),
                                   left: Int32(left), right: Int32(right)))
            }
            local.sort { ($0.left, $0.right) < ($1.left, $1.right) }
            merges += local
        }
        // Python's sorted(reverse=True) is stable: equal keys keep their order, hence the index.
        let order = merges.indices.sorted { a, b in
            let x = merges[a], y = merges[b]
            if x.key != y.key { return x.key > y.key }
            if x.leftLength != y.leftLength { return x.leftLength > y.leftLength }
            if x.rightLength != y.rightLength { return x.rightLength > y.rightLength }
            return a < b
        }
        return order.map { [tokens[Int(merges[$0].left)], tokens[Int(merges[$0].right)]] }
    }
}
