import Foundation

/// `BertNormalizer` of `tokenizers`, in its order: clean the text (drop NUL, U+FFFD and control/format
/// characters, every whitespace becomes a space), put spaces around CJK ideographs, strip accents (NFD
/// then drop nonspacing marks; `strip_accents` null follows `lowercase`), lowercase.
struct BertNormalization {
    var cleanText: Bool
    var handleChineseChars: Bool
    var stripAccents: Bool
    var lowercase: Bool

    init(_ object: JSONObject) {
        cleanText = object.bool("clean_text", default: true)
        handleChineseChars = object.bool("handle_chinese_chars", default: true)
        lowercase = object.bool("lowercase", default: true)
        stripAccents = (object.values["strip_accents"] as? Bool) ?? lowercase
    }

    func apply(_ text: inout AlignedText) {
        // One pass for the per-character steps up to the decomposition, then canonical reordering, then
        // dropping the marks (after reordering: a dropped mark of class 0 bounds a reordering run), then
        // lowercasing. Each as `tokenizers` orders them; fused only to copy a long text fewer times.
        var out = AlignedText()
        out.isAtInputStart = text.isAtInputStart
        out.reserveCapacity(text.count + text.count / 16)
        var decomposed: [UInt32] = []
        var reorder = false
        @inline(__always) func emit(_ c: UInt32, _ start: Int32, _ end: Int32) {
            guard stripAccents, c >= 0xA0 else { out.append(c, start: start, end: end); return }
            decomposed.removeAll(keepingCapacity: true)
            FrozenUnicode.decomposition(c, compatibility: false, into: &decomposed)
            for d in decomposed {
                if !reorder, FrozenUnicode.combiningClass9(d) != 0, let last = out.scalars.last, FrozenUnicode.combiningClass9(last) != 0 {
                    reorder = true
                }
                out.append(d, start: start, end: end)
            }
        }
        for i in 0..<text.count {
            var c = text.scalars[i]
            let start = text.starts[i], end = text.ends[i]
            if cleanText {
                if c == 0 || c == 0xFFFD || (c != 0x09 && c != 0x0A && c != 0x0D && FrozenUnicode.isOther8(c)) { continue }
                if isWhitespaceScalar(c) { c = 0x20 }
            }
            if handleChineseChars && BertNormalization.isChineseCharacter(c) {
                out.append(0x20, start: start, end: end)
                emit(c, start, end)
                out.append(0x20, start: start, end: end)
            } else {
                emit(c, start, end)
            }
        }
        if reorder { out.reorderCombiningMarks() }
        if stripAccents { out.filterScalars { !FrozenUnicode.isNonspacingMark8($0) } }
        if lowercase { out.lowercaseScalars() }
        text = out
    }

    /// The CJK Unified Ideographs blocks `tokenizers` names (not Hangul, Hiragana or Katakana).
    static func isChineseCharacter(_ c: UInt32) -> Bool {
        guard c >= 0x3400 else { return false }
        return (0x4E00...0x9FFF).contains(c) || (0x3400...0x4DBF).contains(c) || (0x20000...0x2A6DF).contains(c)
            || (0x2A700...0x2B73F).contains(c) || (0x2B740...0x2B81F).contains(c) || (0x2B920...0x2CEAF).contains(c)
            || (0xF900...0xFAFF).contains(c) || (0x2F800...0x2FA1F).contains(c)
    }
}
