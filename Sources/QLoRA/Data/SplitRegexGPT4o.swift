/// The GPT-4o (o200k) pre-tokenization regex, matched by hand with the regex engine's backtracking order
/// (Phi-4-mini, Llama 4 and others; transformers' `_GPT4O_SPLIT`):
///
///     [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
///     |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
///     |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
///
/// A word is a run of "upper" letters (Lu Lt Lm Lo and marks) then a run of "lower" ones (Ll Lm Lo and
/// marks), so CamelCase splits before each capital that follows a lower-case letter.
extension SplitRegex {
    static let gpt4oPattern = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Which of the two letter classes a scalar is in (both for Lm, Lo and marks).
    private static func letterClasses(_ c: UInt32) -> (upper: Bool, lower: Bool) {
        if c < 0x80 {
            if c >= 0x41 && c <= 0x5A { return (true, false) }
            if c >= 0x61 && c <= 0x7A { return (false, true) }
            return (false, false)
        }
        guard let scalar = Unicode.Scalar(c) else { return (false, false) }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .titlecaseLetter: return (true, false)
        case .lowercaseLetter: return (false, true)
        case .modifierLetter, .otherLetter, .nonspacingMark, .spacingMark, .enclosingMark: return (true, true)
        default: return (false, false)
        }
    }

    /// `[^\r\n\p{L}\p{N}]`: the optional one-character prefix of a word.
    private static func isWordPrefix(_ c: UInt32) -> Bool { c != 0x0D && c != 0x0A && !isLetterScalar(c) && !isNumberScalar(c) }

    /// End of the match at `i`.
    func matchGPT4o(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ isOther: (UInt32) -> Bool) -> Int {
        let n = s.count
        func upper(_ k: Int) -> Bool { Self.letterClasses(s[k]).upper }
        func lower(_ k: Int) -> Bool { Self.letterClasses(s[k]).lower }
        func withContraction(_ end: Int) -> Int { end < n ? end + Self.contractionLength(s, end, caseInsensitive: true) : end }
        // The word starts: after the prefix first (greedy `?`), then at i itself.
        let starts = Self.isWordPrefix(s[i]) && i + 1 < n ? [i + 1, i] : [i]
        // Alternative 1: upper* lower+ — the upper run backs off until a lower run can start.
        for j in starts {
            var k = j
            while k < n && upper(k) { k += 1 }
            var p = k
            while p >= j {
                if p < n && lower(p) {
                    var e = p
                    while e < n && lower(e) { e += 1 }
                    return withContraction(e)
                }
                p -= 1
            }
        }
        // Alternative 2: upper+ lower*.
        for j in starts where j < n && upper(j) {
            var k = j
            while k < n && upper(k) { k += 1 }
            while k < n && lower(k) { k += 1 }
            return withContraction(k)
        }
        let c = s[i]
        // \p{N}{1,3}
        if isNumberScalar(c) {
            var k = i
            while k < n && k - i < 3 && isNumberScalar(s[k]) { k += 1 }
            return k
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
        let j = c == 0x20 ? i + 1 : i
        if j < n && isOther(s[j]) {
            var k = j
            while k < n && isOther(s[k]) { k += 1 }
            while k < n && (s[k] == 0x0D || s[k] == 0x0A || s[k] == 0x2F) { k += 1 }
            return k
        }
        return matchLineBreaksOrWhitespace(s, i)
    }
}
