import Foundation

// The stages of a Hugging Face `tokenizers` pipeline around the model: normalizer, pre-tokenizer,
// decoder and post-processor, each parsed from its tokenizer.json object.

/// Reads a field of a tokenizer.json object, throwing a `DataError` naming the component.
struct JSONObject {
    let values: [String: Any]
    let component: String

    init(_ any: Any?, component: String) throws {
        guard let values = any as? [String: Any] else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "\(component) is not a JSON object")
        }
        self.values = values
        self.component = component
    }

    var type: String { values["type"] as? String ?? "" }

    func string(_ key: String) throws -> String {
        guard let value = values[key] as? String else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "\(component).\(key) must be a string")
        }
        return value
    }

    func bool(_ key: String, default defaultValue: Bool) -> Bool {
        if let value = values[key] as? Bool { return value }
        if let number = values[key] as? NSNumber { return number.boolValue }
        return defaultValue
    }

    func int(_ key: String, default defaultValue: Int) -> Int {
        (values[key] as? NSNumber)?.intValue ?? defaultValue
    }

    /// `{"String": "x"}` patterns; regex patterns are refused.
    func stringPattern(_ key: String) throws -> String {
        guard let pattern = values[key] as? [String: Any] else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "\(component).\(key) must be a pattern object")
        }
        if let string = pattern["String"] as? String { return string }
        throw DataError.unsupportedTokenizerFeature(component: component,
            detail: "regex pattern \(pattern["Regex"] as? String ?? "?") (only plain string patterns are supported)")
    }

    func array(_ key: String) throws -> [Any] {
        guard let value = values[key] as? [Any] else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "\(component).\(key) must be an array")
        }
        return value
    }
}

func scalarValues(_ string: String) -> [UInt32] { string.unicodeScalars.map(\.value) }

// MARK: - Normalizers

indirect enum Normalizer {
    case sequence([Normalizer])
    case prepend([UInt32])
    case replace(pattern: [UInt32], content: [UInt32])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case bert(BertNormalization)
    case stripAccents

    static func parse(_ any: Any?) throws -> Normalizer? {
        guard let any, !(any is NSNull) else { return nil }
        let object = try JSONObject(any, component: "normalizer")
        switch object.type {
        case "Sequence":
            return .sequence(try object.array("normalizers").compactMap { try parse($0) })
        case "Prepend": return .prepend(scalarValues(try object.string("prepend")))
        case "Replace":
            return .replace(pattern: scalarValues(try object.stringPattern("pattern")),
                            content: scalarValues(try object.string("content")))
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "Strip": return .strip(left: object.bool("strip_left", default: true), right: object.bool("strip_right", default: true))
        case "BertNormalizer": return .bert(BertNormalization(object))
        case "StripAccents": return .stripAccents
        default:
            throw DataError.unsupportedTokenizerFeature(component: "normalizer", detail: "type \(object.type)")
        }
    }

    func apply(_ text: inout AlignedText) {
        switch self {
        case .sequence(let normalizers): for normalizer in normalizers { normalizer.apply(&text) }
        case .prepend(let prefix): text.prepend(prefix)
        case .replace(let pattern, let content): text.replace(pattern, with: content)
        case .nfc: text.compose(compatibility: false)
        case .nfd: text.decompose(compatibility: false)
        case .nfkc: text.compose(compatibility: true)
        case .nfkd: text.decompose(compatibility: true)
        case .lowercase: text.lowercaseScalars()
        case .bert(let bert): bert.apply(&text)
        case .stripAccents: text.filterScalars { !FrozenUnicode.isCombiningMark9($0) }
        case .strip(let left, let right):
            var lower = 0, upper = text.count
            if left { while lower < upper && isWhitespaceScalar(text.scalars[lower]) { lower += 1 } }
            if right { while upper > lower && isWhitespaceScalar(text.scalars[upper - 1]) { upper -= 1 } }
            if lower != 0 || upper != text.count {
                let atStart = text.isAtInputStart
                text = text.slice(lower..<upper)
                text.isAtInputStart = atStart
            }
        }
    }
}

// MARK: - Character classes (the GPT-2 regex's \s, \p{L}, \p{N})

@inline(__always) func isWhitespaceScalar(_ c: UInt32) -> Bool {
    if c < 0x80 { return c == 0x20 || (c >= 0x09 && c <= 0x0D) }
    return Unicode.Scalar(c)?.properties.isWhitespace ?? false
}

@inline(__always) func isLetterScalar(_ c: UInt32) -> Bool {
    if c < 0x80 { return (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A }
    guard let scalar = Unicode.Scalar(c) else { return false }
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumberScalar(_ c: UInt32) -> Bool {
    if c < 0x80 { return c >= 0x30 && c <= 0x39 }
    guard let scalar = Unicode.Scalar(c) else { return false }
    switch scalar.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

/// The pre-tokenization regexes of GPT-2, Llama 3 and Qwen 2/3, matched by hand (same leftmost-first
/// alternation semantics as Oniguruma / fancy-regex).
enum SplitRegex {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// Llama 3's with numbers one digit at a time (`\p{N}` for `\p{N}{1,3}`): Qwen 2 / 2.5 / 3.
    case qwen2
    /// GPT-4o's (o200k; SplitRegexGPT4o.swift): Phi-4-mini, Llama 4.
    case gpt4o

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Length of the contraction (`'s`, `'re`, ...) at `i`, or 0.
    @inline(__always)
    static func contractionLength(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, caseInsensitive: Bool) -> Int {
        let n = s.count
        guard s[i] == 0x27, i + 1 < n else { return 0 }
        func lower(_ c: UInt32) -> UInt32 { caseInsensitive && c >= 0x41 && c <= 0x5A ? c | 0x20 : c }
        let c1 = lower(s[i + 1])
        if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return 2 }  // s t m d
        guard i + 2 < n else { return 0 }
        let c2 = lower(s[i + 2])
        if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return 3 }  // re ve ll
        return 0
    }

    /// The ranges of the matches; together they cover `s` (every alternative set ends in `\s+`).
    func split(_ s: UnsafeBufferPointer<UInt32>) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        let n = s.count
        var i = 0
        @inline(__always) func isOther(_ c: UInt32) -> Bool {
            !isWhitespaceScalar(c) && !isLetterScalar(c) && !isNumberScalar(c)
        }
        while i < n {
            let end: Int
            switch self {
            case .gpt2: end = matchGPT2(s, i, isOther)
            case .llama3: end = matchLlama3(s, i, isOther, maxDigits: 3)
            case .qwen2: end = matchLlama3(s, i, isOther, maxDigits: 1)
            case .gpt4o: end = matchGPT4o(s, i, isOther)
            }
            pieces.append(i..<end)
            i = end
        }
        return pieces
    }

    func whitespaceMatch(_ s: UnsafeBufferPointer<UInt32>, _ i: Int) -> Int {
        // \s+(?!\S) then \s+
        let n = s.count
        var k = i
        while k < n && isWhitespaceScalar(s[k]) { k += 1 }
        if k == n { return n }
        return k - i > 1 ? k - 1 : k
    }

    private func matchGPT2(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ isOther: (UInt32) -> Bool) -> Int {
        let n = s.count
        let contraction = SplitRegex.contractionLength(s, i, caseInsensitive: false)
        if contraction > 0 { return i + contraction }
        let j = s[i] == 0x20 ? i + 1 : i
        if j < n {
            let c = s[j]
            var k = j
            if isLetterScalar(c) {
                while k < n && isLetterScalar(s[k]) { k += 1 }
                return k
            }
            if isNumberScalar(c) {
                while k < n && isNumberScalar(s[k]) { k += 1 }
                return k
            }
            if isOther(c) {
                while k < n && isOther(s[k]) { k += 1 }
                return k
            }
        }
        if isWhitespaceScalar(s[i]) { return whitespaceMatch(s, i) }
        return i + 1  // unreachable: every scalar is whitespace, letter, number or other
    }

    private func matchLlama3(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ isOther: (UInt32) -> Bool, maxDigits: Int) -> Int {
        let n = s.count
        let contraction = SplitRegex.contractionLength(s, i, caseInsensitive: true)
        if contraction > 0 { return i + contraction }
        let c = s[i]
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if isLetterScalar(c) {
            var k = i
            while k < n && isLetterScalar(s[k]) { k += 1 }
            return k
        }
        if c != 0x0D && c != 0x0A && !isNumberScalar(c) && i + 1 < n && isLetterScalar(s[i + 1]) {
            var k = i + 1
            while k < n && isLetterScalar(s[k]) { k += 1 }
            return k
        }
        // \p{N}{1,3} (Qwen: \p{N})
        if isNumberScalar(c) {
            var k = i
            while k < n && k - i < maxDigits && isNumberScalar(s[k]) { k += 1 }
            return k
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let j = c == 0x20 ? i + 1 : i
        if j < n && isOther(s[j]) {
            var k = j
            while k < n && isOther(s[k]) { k += 1 }
            while k < n && (s[k] == 0x0D || s[k] == 0x0A) { k += 1 }
            return k
        }
        return matchLineBreaksOrWhitespace(s, i)
    }

    /// `\s*[\r\n]+|\s+(?!\S)|\s+` at i (the last alternatives of the Llama 3 / Qwen / GPT-4o regexes).
    func matchLineBreaksOrWhitespace(_ s: UnsafeBufferPointer<UInt32>, _ i: Int) -> Int {
        let n = s.count
        // \s*[\r\n]+ : the longest whitespace run ending in a line break (backtracking keeps the last \r\n)
        if isWhitespaceScalar(s[i]) {
            var k = i
            var lastBreakEnd = -1
            while k < n && isWhitespaceScalar(s[k]) {
                if s[k] == 0x0D || s[k] == 0x0A { lastBreakEnd = k + 1 }
                k += 1
            }
            if lastBreakEnd > 0 { return lastBreakEnd }
            return whitespaceMatch(s, i)
        }
        return i + 1  // unreachable: every scalar is whitespace, letter, number or other
    }
}

// MARK: - Pre-tokenizers

/// The GPT-2 byte-to-character table: printable bytes map to themselves, the others to U+0100 onwards.
enum ByteLevelAlphabet {
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse table indexed by scalar value (all byte characters are below U+0144); -1 where none.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in byteToScalar.enumerated() { table[Int(scalar)] = Int16(byte) }
        return table
    }()
}

enum MetaspacePrependScheme: String { case always, first, never }

indirect enum PreTokenizer {
    case sequence([PreTokenizer])
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case metaspace(replacement: UInt32, prependScheme: MetaspacePrependScheme, split: Bool)
    case split(SplitRegex, invert: Bool)
    /// `Split` on a plain string (Gemma's `" "`, MergedWithPrevious).
    case splitString([UInt32], behavior: SplitBehavior)
    case digits(individual: Bool)
    case bert, whitespace, whitespaceSplit

    static func parse(_ any: Any?) throws -> PreTokenizer? {
        guard let any, !(any is NSNull) else { return nil }
        let object = try JSONObject(any, component: "pre_tokenizer")
        switch object.type {
        case "Sequence":
            return .sequence(try object.array("pretokenizers").compactMap { try parse($0) })
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: object.bool("add_prefix_space", default: true),
                              useRegex: object.bool("use_regex", default: true))
        case "Metaspace":
            let replacement = try object.string("replacement").unicodeScalars
            guard replacement.count == 1, let scalar = replacement.first else {
                throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "Metaspace replacement must be one character")
            }
            var scheme = MetaspacePrependScheme.always
            if let name = object.values["prepend_scheme"] as? String {
                guard let parsed = MetaspacePrependScheme(rawValue: name) else {
                    throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Metaspace prepend_scheme \(name)")
                }
                scheme = parsed
            } else if !object.bool("add_prefix_space", default: true) {
                scheme = .never
            }
            return .metaspace(replacement: scalar.value, prependScheme: scheme, split: object.bool("split", default: true))
        case "Split":
            let behavior = object.values["behavior"] as? String ?? ""
            if let pattern = object.values["pattern"] as? [String: Any], let string = pattern["String"] as? String {
                guard let parsed = SplitBehavior(rawValue: behavior) else {
                    throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Split behavior \(behavior)")
                }
                guard !string.isEmpty else {
                    throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "pre_tokenizer Split has an empty string pattern")
                }
                if object.bool("invert", default: false) {
                    throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Split with invert true")
                }
                return .splitString(scalarValues(string), behavior: parsed)
            }
            guard let pattern = object.values["pattern"] as? [String: Any], let regex = pattern["Regex"] as? String else {
                throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Split without a regex or string pattern")
            }
            let known: SplitRegex
            switch regex {
            case SplitRegex.gpt2Pattern: known = .gpt2
            case SplitRegex.llama3Pattern: known = .llama3
            case SplitRegex.qwen2Pattern: known = .qwen2
            case SplitRegex.gpt4oPattern: known = .gpt4o
            default:
                throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer",
                    detail: "Split regex \(regex) (only the GPT-2, Llama 3, Qwen 2 and GPT-4o regexes are implemented)")
            }
            guard behavior == "Isolated" else {
                throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Split behavior \(behavior)")
            }
            let invert = object.bool("invert", default: false)
            if invert {
                throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "Split with invert true")
            }
            return .split(known, invert: false)
        case "Digits":
            return .digits(individual: object.bool("individual_digits", default: false))
        case "BertPreTokenizer": return .bert
        case "Whitespace": return .whitespace
        case "WhitespaceSplit": return .whitespaceSplit
        default:
            throw DataError.unsupportedTokenizerFeature(component: "pre_tokenizer", detail: "type \(object.type)")
        }
    }

    /// True when the model sees GPT-2 byte characters (decides nothing else).
    var isByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case .sequence(let items): return items.contains { $0.isByteLevel }
        default: return false
        }
    }

    /// Splits (and rewrites) the pieces of `input`; the output is one text with its piece ranges.
    func apply(_ input: PreTokenized) -> PreTokenized {
        switch self {
        case .sequence(let items):
            var current = input
            for item in items { current = item.apply(current) }
            return current
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out = PreTokenized(text: AlignedText(), pieces: [])
            out.text.isAtInputStart = input.text.isAtInputStart
            out.text.reserveCapacity(input.text.count + input.text.count / 4)
            out.pieces.reserveCapacity(input.text.count / 3)
            let text = input.text
            for piece in input.pieces where !piece.isEmpty {
                if addPrefixSpace && text.scalars[piece.lowerBound] != 0x20 {
                    var prefixed = text.slice(piece)
                    prefixed.prepend([0x20])
                    PreTokenizer.appendByteLevel(prefixed, 0..<prefixed.count, useRegex: useRegex, to: &out)
                } else {
                    PreTokenizer.appendByteLevel(text, piece, useRegex: useRegex, to: &out)
                }
            }
            return out
        case .metaspace(let replacement, let scheme, let split):
            var out = PreTokenized(text: AlignedText(), pieces: [])
            out.text.isAtInputStart = input.text.isAtInputStart
            let text = input.text
            for piece in input.pieces where !piece.isEmpty {
                let pieceStart = out.text.count
                let atInputStart = text.isAtInputStart && piece.lowerBound == 0
                let prepend = scheme == .always || (scheme == .first && atInputStart)
                let first = text.scalars[piece.lowerBound]
                if prepend && first != replacement && first != 0x20 {
                    out.text.append(replacement, start: text.starts[piece.lowerBound], end: text.ends[piece.lowerBound])
                }
                for i in piece {
                    let scalar = text.scalars[i] == 0x20 ? replacement : text.scalars[i]
                    out.text.append(scalar, start: text.starts[i], end: text.ends[i])
                }
                if split {
                    // Pieces start at each replacement character (MergedWithNext).
                    var start = pieceStart
                    for i in (pieceStart + 1)..<max(out.text.count, pieceStart + 1) where out.text.scalars[i] == replacement {
                        out.pieces.append(start..<i)
                        start = i
                    }
                    if start < out.text.count { out.pieces.append(start..<out.text.count) }
                } else {
                    out.pieces.append(pieceStart..<out.text.count)
                }
            }
            return out
        case .split(let regex, _):
            var out = PreTokenized(text: input.text, pieces: [])
            for piece in input.pieces where !piece.isEmpty {
                let ranges = input.text.scalars[piece].withUnsafeBufferPointer { regex.split($0) }
                for range in ranges where !range.isEmpty {
                    out.pieces.append((piece.lowerBound + range.lowerBound)..<(piece.lowerBound + range.upperBound))
                }
            }
            return out
        case .splitString(let pattern, let behavior):
            var out = PreTokenized(text: input.text, pieces: [])
            for piece in input.pieces where !piece.isEmpty {
                out.pieces += behavior.apply(PreTokenizer.occurrences(of: pattern, in: input.text.scalars, piece), within: piece)
            }
            return out
        case .digits(let individual):
            var out = PreTokenized(text: input.text, pieces: [])
            let scalars = input.text.scalars
            func isDigit(_ c: UInt32) -> Bool { c >= 0x30 && c <= 0x39 }
            for piece in input.pieces where !piece.isEmpty {
                var start = piece.lowerBound
                var i = piece.lowerBound
                while i < piece.upperBound {
                    if isDigit(scalars[i]) {
                        if start < i { out.pieces.append(start..<i) }
                        var k = i + 1
                        if !individual { while k < piece.upperBound && isDigit(scalars[k]) { k += 1 } }
                        out.pieces.append(i..<k)
                        start = k
                        i = k
                    } else {
                        i += 1
                    }
                }
                if start < piece.upperBound { out.pieces.append(start..<piece.upperBound) }
            }
            return out
        case .bert: return WhitespaceSplitting.bert(input)
        case .whitespace: return WhitespaceSplitting.whitespace(input)
        case .whitespaceSplit: return WhitespaceSplitting.whitespaceSplit(input)
        }
    }

    /// Non-overlapping occurrences of `pattern` in `scalars[range]`, leftmost first.
    static func occurrences(of pattern: [UInt32], in scalars: [UInt32], _ range: Range<Int>) -> [Range<Int>] {
        var found: [Range<Int>] = []
        var i = range.lowerBound
        while i + pattern.count <= range.upperBound {
            if scalars[i..<(i + pattern.count)].elementsEqual(pattern) {
                found.append(i..<(i + pattern.count))
                i += pattern.count
            } else {
                i += 1
            }
        }
        return found
    }

    /// Appends the GPT-2 byte characters of `text[range]` to `out`, split by the GPT-2 regex or whole.
    static func appendByteLevel(_ text: AlignedText, _ range: Range<Int>, useRegex: Bool, to out: inout PreTokenized) {
        let table = ByteLevelAlphabet.byteToScalar
        var utf8: [UInt8] = []
        utf8.reserveCapacity(4)
        func emit(_ sub: Range<Int>) {
            let start = out.text.count
            for i in sub {
                let scalar = text.scalars[i]
                if scalar < 0x80 {
                    out.text.append(table[Int(scalar)], start: text.starts[i], end: text.ends[i])
                } else {
                    utf8.removeAll(keepingCapacity: true)
                    AlignedText.appendUTF8(scalar, to: &utf8)
                    for byte in utf8 { out.text.append(table[Int(byte)], start: text.starts[i], end: text.ends[i]) }
                }
            }
            out.pieces.append(start..<out.text.count)
        }
        guard useRegex else { emit(range); return }
        let ranges = text.scalars[range].withUnsafeBufferPointer { SplitRegex.gpt2.split($0) }
        for sub in ranges where !sub.isEmpty {
            emit((range.lowerBound + sub.lowerBound)..<(range.lowerBound + sub.upperBound))
        }
    }
}

/// What `Split` does with the matches of its pattern (`SplitDelimiterBehavior` in `tokenizers`).
enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// The pieces of `piece` given the ranges of the matches inside it.
    func apply(_ matches: [Range<Int>], within piece: Range<Int>) -> [Range<Int>] {
        // The whole piece as alternating (range, isMatch) parts, as `tokenizers` builds them.
        var parts: [(range: Range<Int>, isMatch: Bool)] = []
        var position = piece.lowerBound
        for match in matches {
            if match.lowerBound > position { parts.append((position..<match.lowerBound, false)) }
            parts.append((match, true))
            position = match.upperBound
        }
        if position < piece.upperBound { parts.append((position..<piece.upperBound, false)) }
        var out: [Range<Int>] = []
        var previousMatch = false
        switch self {
        case .removed:
            return parts.filter { !$0.isMatch }.map(\.range)
        case .isolated:
            return parts.map(\.range)
        case .mergedWithPrevious:
            for part in parts {
                if part.isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<part.range.upperBound
                } else {
                    out.append(part.range)
                }
                previousMatch = part.isMatch
            }
        case .mergedWithNext:
            for part in parts.reversed() {
                if part.isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = part.range.lowerBound..<last.upperBound
                } else {
                    out.append(part.range)
                }
                previousMatch = part.isMatch
            }
            out.reverse()
        case .contiguous:
            for (index, part) in parts.enumerated() {
                if index > 0 && part.isMatch == previousMatch, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<part.range.upperBound
                } else {
                    out.append(part.range)
                }
                previousMatch = part.isMatch
            }
        }
        return out
    }
}

/// Pre-tokenizer output: one text and the ranges of its pieces (each piece is one BPE word).
struct PreTokenized {
    var text: AlignedText
    var pieces: [Range<Int>]
}

// MARK: - Decoders

indirect enum TokenDecoder {
    case sequence([TokenDecoder])
    case byteLevel
    case replace(pattern: [UInt32], content: [UInt32])
    case byteFallback
    case fuse
    case strip(content: UInt32, start: Int, stop: Int)
    case metaspace(replacement: UInt32, prependScheme: MetaspacePrependScheme)
    case wordPiece(prefix: String, cleanup: Bool)

    static func parse(_ any: Any?) throws -> TokenDecoder? {
        guard let any, !(any is NSNull) else { return nil }
        let object = try JSONObject(any, component: "decoder")
        switch object.type {
        case "Sequence": return .sequence(try object.array("decoders").compactMap { try parse($0) })
        case "ByteLevel": return .byteLevel
        case "Replace":
            return .replace(pattern: scalarValues(try object.stringPattern("pattern")),
                            content: scalarValues(try object.string("content")))
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Strip":
            guard let content = try object.string("content").unicodeScalars.first else {
                throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "Strip decoder content is empty")
            }
            return .strip(content: content.value, start: object.int("start", default: 0), stop: object.int("stop", default: 0))
        case "Metaspace":
            let replacement = try object.string("replacement").unicodeScalars.first?.value ?? 0x2581
            let scheme = MetaspacePrependScheme(rawValue: object.values["prepend_scheme"] as? String ?? "always") ?? .always
            return .metaspace(replacement: replacement, prependScheme: scheme)
        case "WordPiece":
            return .wordPiece(prefix: object.values["prefix"] as? String ?? "##", cleanup: object.bool("cleanup", default: true))
        default:
            throw DataError.unsupportedTokenizerFeature(component: "decoder", detail: "type \(object.type)")
        }
    }

    /// One decoding step over the token strings (`decode_chain` in `tokenizers`).
    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let items):
            var current = tokens
            for item in items { current = item.decodeChain(current) }
            return current
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                let before = bytes.count
                var allMapped = true
                for scalar in token.unicodeScalars {
                    let value = Int(scalar.value)
                    if value < ByteLevelAlphabet.scalarToByte.count, ByteLevelAlphabet.scalarToByte[value] >= 0 {
                        bytes.append(UInt8(ByteLevelAlphabet.scalarToByte[value]))
                    } else {
                        allMapped = false
                        break
                    }
                }
                if !allMapped {
                    bytes.removeSubrange(before...)
                    bytes.append(contentsOf: token.utf8)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .replace(let pattern, let content):
            return tokens.map { token in
                var text = AlignedText()
                for scalar in token.unicodeScalars { text.append(scalar.value, start: 0, end: 0) }
                text.replace(pattern, with: content)
                return stringFromScalars(text.scalars)
            }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let string = String(validatingUTF8Bytes: pending) {
                    out.append(string)
                } else {
                    out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = TokenDecoder.byteToken(token) {
                    pending.append(byte)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let scalars = scalarValues(token)
                var startCut = 0
                for i in 0..<min(start, scalars.count) {
                    if scalars[i] == content { startCut = i + 1 } else { break }
                }
                var stopCut = scalars.count
                for i in 0..<min(stop, scalars.count - startCut) {
                    let index = scalars.count - i - 1
                    if scalars[index] == content { stopCut = index } else { break }
                }
                return stringFromScalars(scalars[startCut..<stopCut])
            }
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { index, token in
                var out: [UInt32] = []
                for scalar in token.unicodeScalars {
                    if scalar.value == replacement {
                        if index == 0 && scheme != .never { continue }
                        out.append(0x20)
                    } else {
                        out.append(scalar.value)
                    }
                }
                return stringFromScalars(out)
            }
        case .wordPiece(let prefix, let cleanup):
            return TokenDecoder.decodeWordPiece(tokens, prefix: prefix, cleanup: cleanup)
        }
    }

    /// The byte of a `<0xNN>` token.
    static func byteToken(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, utf8[0] == 0x3C, utf8[1] == 0x30, utf8[2] == 0x78, utf8[5] == 0x3E else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
    }
}

func stringFromScalars<S: Sequence>(_ scalars: S) -> String where S.Element == UInt32 {
    var view = String.UnicodeScalarView()
    for value in scalars { view.append(Unicode.Scalar(value) ?? "\u{FFFD}") }
    return String(view)
}

extension String {
    /// Strict UTF-8 decoding: nil when `bytes` is not valid UTF-8.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var view = String.UnicodeScalarView()
        loop: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): view.append(scalar)
            case .emptyInput: break loop
            case .error: return nil
            }
        }
        self = String(view)
    }
}

// MARK: - Post-processor

/// `TemplateProcessing`, `BertProcessing`, `RobertaProcessing` (and the id-neutral `ByteLevel`) as
/// special-token templates, each piece with its type id.
struct PostProcessor {
    enum Piece { case special([Int32]), sequenceA, sequenceB }
    var single: [(Piece, Int32)] = [(.sequenceA, 0)]
    var pair: [(Piece, Int32)] = [(.sequenceA, 0), (.sequenceB, 1)]
    /// What `add_special_tokens=False` gives: the sequences with the type ids TemplateProcessing
    /// assigns, all 0 for RobertaProcessing, else 0 for A and 1 for B.
    var plainSingle: [(Piece, Int32)] = [(.sequenceA, 0)]
    var plainPair: [(Piece, Int32)] = [(.sequenceA, 0), (.sequenceB, 1)]
    /// RobertaProcessing's `trim_offsets`: each token's offsets lose the spaces at its edges (`Ġ` or
    /// whitespace); the value is its `add_prefix_space` (a first token keeps one added space).
    var trimOffsetsAddPrefixSpace: Bool? = nil

    static func parse(_ any: Any?) throws -> PostProcessor {
        guard let any, !(any is NSNull) else { return PostProcessor() }
        let object = try JSONObject(any, component: "post_processor")
        switch object.type {
        case "ByteLevel": return PostProcessor()
        case "Sequence":
            let processors = try object.array("processors").map { try parse($0) }
            let templated = processors.filter { $0.single.count > 1 || $0.pair.count > 2 }
            if templated.count > 1 {
                throw DataError.unsupportedTokenizerFeature(component: "post_processor", detail: "Sequence with more than one template")
            }
            var combined = templated.first ?? PostProcessor()
            combined.trimOffsetsAddPrefixSpace = processors.lazy.compactMap(\.trimOffsetsAddPrefixSpace).first
            return combined
        case "BertProcessing", "RobertaProcessing":
            func token(_ key: String) throws -> Int32 {
                guard let pair = object.values[key] as? [Any], pair.count == 2, pair[0] is String, let id = pair[1] as? NSNumber else {
                    throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor.\(key) must be [token, id]")
                }
                return id.int32Value
            }
            let cls = PostProcessor.Piece.special([try token("cls")]), sep = PostProcessor.Piece.special([try token("sep")])
            var processor = PostProcessor()
            if object.type == "BertProcessing" {
                // [CLS] A [SEP] B [SEP], B and its [SEP] of type 1.
                processor.single = [(cls, 0), (.sequenceA, 0), (sep, 0)]
                processor.pair = [(cls, 0), (.sequenceA, 0), (sep, 0), (.sequenceB, 1), (sep, 1)]
            } else {
                // <s> A </s></s> B </s>, every type id 0.
                processor.single = [(cls, 0), (.sequenceA, 0), (sep, 0)]
                processor.pair = [(cls, 0), (.sequenceA, 0), (sep, 0), (sep, 0), (.sequenceB, 0), (sep, 0)]
                processor.plainPair = [(.sequenceA, 0), (.sequenceB, 0)]
                if object.bool("trim_offsets", default: true) {
                    processor.trimOffsetsAddPrefixSpace = object.bool("add_prefix_space", default: true)
                }
            }
            return processor
        case "TemplateProcessing":
            var specials: [String: [Int32]] = [:]
            if let map = object.values["special_tokens"] as? [String: Any] {
                for (key, value) in map {
                    guard let entry = value as? [String: Any], let ids = entry["ids"] as? [NSNumber] else {
                        throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor.special_tokens.\(key) has no ids")
                    }
                    specials[key] = ids.map { $0.int32Value }
                }
            }
            func template(_ key: String) throws -> [(Piece, Int32)] {
                try object.array(key).map { item in
                    guard let item = item as? [String: Any] else {
                        throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor.\(key) item is not an object")
                    }
                    if let special = item["SpecialToken"] as? [String: Any], let id = special["id"] as? String {
                        guard let ids = specials[id] else {
                            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor uses undeclared special token \(id)")
                        }
                        return (.special(ids), (special["type_id"] as? NSNumber)?.int32Value ?? 0)
                    }
                    if let sequence = item["Sequence"] as? [String: Any], let id = sequence["id"] as? String {
                        return (id == "A" ? .sequenceA : .sequenceB, (sequence["type_id"] as? NSNumber)?.int32Value ?? 0)
                    }
                    throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor.\(key) item \(item)")
                }
            }
            let single = try template("single"), pair = try template("pair")
            func plain(_ template: [(Piece, Int32)]) -> [(Piece, Int32)] {
                template.filter { if case .special = $0.0 { return false } else { return true } }
            }
            return PostProcessor(single: single, pair: pair, plainSingle: plain(single), plainPair: plain(pair))
        default:
            throw DataError.unsupportedTokenizerFeature(component: "post_processor", detail: "type \(object.type)")
        }
    }
}
