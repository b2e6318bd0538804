import Foundation

extension TokenDecoder {
    /// The WordPiece decoder of `tokenizers`: a token after the first loses the prefix ("##") or gets a
    /// space in front; with `cleanup` each token then drops the spaces BERT put before punctuation and
    /// in contractions (the same literal replacements, in the same order).
    static func decodeWordPiece(_ tokens: [String], prefix: String, cleanup: Bool) -> [String] {
        tokens.enumerated().map { index, token in
            var token = token
            if index != 0 {
                if !prefix.isEmpty, token.utf8.starts(with: prefix.utf8) {
                    token = String(decoding: token.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
                } else {
                    token = " " + token
                }
            }
            guard cleanup, token.utf8.contains(0x20) else { return token }
            var text = AlignedText()
            for scalar in token.unicodeScalars { text.append(scalar.value, start: 0, end: 0) }
            for (dirty, clean) in wordPieceCleanups { text.replace(dirty, with: clean) }
            return stringFromScalars(text.scalars)
        }
    }

    private static let wordPieceCleanups: [([UInt32], [UInt32])] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
        (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ].map { (scalarValues($0.0), scalarValues($0.1)) }
}
