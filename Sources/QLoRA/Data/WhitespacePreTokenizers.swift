import Foundation

// The pre-tokenizers that split on whitespace without rewriting the text: BertPreTokenizer,
// WhitespaceSplit and Whitespace of `tokenizers`. Each keeps the text and narrows the pieces.

enum WhitespaceSplitting {
    /// BertPreTokenizer: split on whitespace (removed), then every punctuation character on its own
    /// (ASCII punctuation, or Unicode P* at Unicode 8.0 as `unicode_categories` has it).
    static func bert(_ input: PreTokenized) -> PreTokenized {
        var out = PreTokenized(text: input.text, pieces: [])
        out.pieces.reserveCapacity(input.text.count / 4)
        let s = input.text.scalars
        for piece in input.pieces {
            var start = piece.lowerBound
            for i in piece {
                let c = s[i]
                if isWhitespaceScalar(c) {
                    if start < i { out.pieces.append(start..<i) }
                    start = i + 1
                } else if isPunctuation(c) {
                    if start < i { out.pieces.append(start..<i) }
                    out.pieces.append(i..<(i + 1))
                    start = i + 1
                }
            }
            if start < piece.upperBound { out.pieces.append(start..<piece.upperBound) }
        }
        return out
    }

    @inline(__always) static func isPunctuation(_ c: UInt32) -> Bool {
        if c < 0x80 { return (33...47).contains(c) || (58...64).contains(c) || (91...96).contains(c) || (123...126).contains(c) }
        return FrozenUnicode.isPunctuation8(c)
    }

    /// WhitespaceSplit: the runs between whitespace.
    static func whitespaceSplit(_ input: PreTokenized) -> PreTokenized {
        var out = PreTokenized(text: input.text, pieces: [])
        let s = input.text.scalars
        for piece in input.pieces {
            var start = piece.lowerBound
            for i in piece where isWhitespaceScalar(s[i]) {
                if start < i { out.pieces.append(start..<i) }
                start = i + 1
            }
            if start < piece.upperBound { out.pieces.append(start..<piece.upperBound) }
        }
        return out
    }

    /// Whitespace: the matches of `\w+|[^\w\s]+` (Rust regex's Unicode \w and \s); whitespace is dropped.
    static func whitespace(_ input: PreTokenized) -> PreTokenized {
        var out = PreTokenized(text: input.text, pieces: [])
        let s = input.text.scalars
        for piece in input.pieces {
            var i = piece.lowerBound
            while i < piece.upperBound {
                if isWhitespaceScalar(s[i]) { i += 1; continue }
                let word = isWordScalar(s[i])
                var k = i + 1
                while k < piece.upperBound && !isWhitespaceScalar(s[k]) && isWordScalar(s[k]) == word { k += 1 }
                out.pieces.append(i..<k)
                i = k
            }
        }
        return out
    }

    /// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, join controls.
    static func isWordScalar(_ c: UInt32) -> Bool {
        if c < 0x80 { return (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A || (c >= 0x30 && c <= 0x39) || c == 0x5F }
        guard let scalar = Unicode.Scalar(c) else { return false }
        let properties = scalar.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
}
