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
        if cleanText {
            text.filterScalars { c in c != 0 && c != 0xFFFD && (c == 0x09 || c == 0x0A || c == 0x0D || !FrozenUnicode.isOther8(c)) }
            for i in 0..<text.count where text.scalars[i] != 0x20 && isWhitespaceScalar(text.scalars[i]) { text.scalars[i] = 0x20 }
        }
        if handleChineseChars, text.scalars.contains(where: BertNormalization.isChineseCharacter) {
            var out = AlignedText()
            out.isAtInputStart = text.isAtInputStart
            out.reserveCapacity(text.count + text.count / 2)
            for i in 0..<text.count {
                let c = text.scalars[i], start = text.starts[i], end = text.ends[i]
                if BertNormalization.isChineseCharacter(c) {
                    out.append(0x20, start: start, end: end)
                    out.append(c, start: start, end: end)
                    out.append(0x20, start: start, end: end)
                } else {
                    out.append(c, start: start, end: end)
                }
            }
            text = out
        }
        if stripAccents {
            text.decompose(compatibility: false)
            text.filterScalars { !FrozenUnicode.isNonspacingMark8($0) }
        }
        if lowercase { text.lowercaseScalars() }
    }

    /// The CJK Unified Ideographs blocks `tokenizers` names (not Hangul, Hiragana or Katakana).
    static func isChineseCharacter(_ c: UInt32) -> Bool {
        guard c >= 0x3400 else { return false }
        return (0x4E00...0x9FFF).contains(c) || (0x3400...0x4DBF).contains(c) || (0x20000...0x2A6DF).contains(c)
            || (0x2A700...0x2B73F).contains(c) || (0x2B740...0x2B81F).contains(c) || (0x2B920...0x2CEAF).contains(c)
            || (0xF900...0xFAFF).contains(c) || (0x2F800...0x2FA1F).contains(c)
    }
}
