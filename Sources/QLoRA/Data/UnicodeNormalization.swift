import Foundation

// Character-level normalizations as `tokenizers` does them: one input scalar at a time, each output
// aligned to the scalar it came from (NormalizedString's alignments), so offsets stay exact.
//
// `tokenizers` takes character classes from two frozen crates, not from the Rust standard library:
// `unicode_categories` (Unicode 8.0: BertNormalizer's control and nonspacing-mark tests,
// BertPreTokenizer's punctuation) and `unicode-normalization-alignments` (Unicode 9.0: NFD/NFKD and
// StripAccents' combining marks). A character assigned later is unassigned to them: it is never
// stripped, dropped, decomposed or treated as punctuation. Lowercasing is Rust's `char::to_lowercase`
// (current Unicode, context-free: no final sigma), which is `lowercaseMapping`.

enum FrozenUnicode {
    /// Whether `c` was assigned by Unicode `major.minor`.
    @inline(__always) static func assigned(_ c: Unicode.Scalar, by major: Int, _ minor: Int) -> Bool {
        guard let age = c.properties.age else { return false }
        return age.major < major || (age.major == major && age.minor <= minor)
    }

    /// CJK Unified Ideographs (letters without decomposition in every Unicode version): the common
    /// non-ASCII case answered without a property lookup.
    @inline(__always) static func isUnifiedIdeograph(_ c: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(c) || (0x3400...0x4DBF).contains(c) || (0x20000...0x2A6DF).contains(c)
            || (0x2A700...0x2EBEF).contains(c) || (0x30000...0x3134F).contains(c)
    }

    /// `unicode_categories`' is_other (Cc, Cf, Co; its unassigned table is empty) at Unicode 8.0.
    static func isOther8(_ c: UInt32) -> Bool {
        if c < 0x20 || c == 0x7F { return true }
        if c < 0x80 || isUnifiedIdeograph(c) { return false }
        guard let scalar = Unicode.Scalar(c), assigned(scalar, by: 8, 0) else { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .privateUse, .surrogate: return true
        default: return false
        }
    }

    /// `unicode_categories`' is_mark_nonspacing (Mn) at Unicode 8.0.
    static func isNonspacingMark8(_ c: UInt32) -> Bool {
        guard c >= 0x300, !isUnifiedIdeograph(c), let scalar = Unicode.Scalar(c), assigned(scalar, by: 8, 0) else { return false }
        return scalar.properties.generalCategory == .nonspacingMark
    }

    /// `unicode_categories`' is_punctuation (Pc Pd Ps Pe Pi Pf Po) at Unicode 8.0.
    static func isPunctuation8(_ c: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(c), c < 0x80 || assigned(scalar, by: 8, 0) else { return false }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// `unicode-normalization-alignments`' is_combining_mark (Mn Mc Me) at Unicode 9.0.
    static func isCombiningMark9(_ c: UInt32) -> Bool {
        guard c >= 0x300, let scalar = Unicode.Scalar(c), assigned(scalar, by: 9, 0) else { return false }
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return true
        default: return false
        }
    }

    /// Canonical combining class at Unicode 9.0 (0 for later characters).
    static func combiningClass9(_ c: UInt32) -> UInt8 {
        guard c >= 0x300, !isUnifiedIdeograph(c), let scalar = Unicode.Scalar(c), assigned(scalar, by: 9, 0) else { return 0 }
        return scalar.properties.canonicalCombiningClass.rawValue
    }

    /// The full canonical (or compatibility) decomposition of one scalar, at Unicode 9.0.
    static func decomposition(_ c: UInt32, compatibility: Bool, into out: inout [UInt32]) {
        // Nothing below U+00A0 decomposes (canonically below U+00C0).
        guard c >= 0xA0, !isUnifiedIdeograph(c) else { out.append(c); return }
        let key = c | (compatibility ? 0x8000_0000 : 0)
        decompositionLock.lock()
        let cached = decompositionCache[key]
        decompositionLock.unlock()
        if let cached { out.append(contentsOf: cached); return }
        var result: [UInt32]
        if let scalar = Unicode.Scalar(c), assigned(scalar, by: 9, 0) {
            let string = String(Character(scalar))
            let decomposed = compatibility ? string.decomposedStringWithCompatibilityMapping : string.decomposedStringWithCanonicalMapping
            result = decomposed.unicodeScalars.map(\.value)
        } else {
            result = [c]
        }
        out.append(contentsOf: result)
        decompositionLock.lock()
        if decompositionCache.count < 65_536 { decompositionCache[key] = result }
        decompositionLock.unlock()
    }

    /// Foundation's decomposition of one character costs a String round trip: texts repeat their
    /// characters, so each is decomposed once per process.
    nonisolated(unsafe) private static var decompositionCache: [UInt32: [UInt32]] = [:]
    private static let decompositionLock = NSLock()
}

extension AlignedText {
    /// NFD / NFKD: each scalar replaced by its decomposition, then combining marks put in canonical order.
    mutating func decompose(compatibility: Bool) {
        guard scalars.contains(where: { $0 >= 0xA0 }) else { return }
        var out = AlignedText()
        out.isAtInputStart = isAtInputStart
        out.reserveCapacity(count + count / 8)
        var pieces: [UInt32] = []
        for i in 0..<count {
            pieces.removeAll(keepingCapacity: true)
            FrozenUnicode.decomposition(scalars[i], compatibility: compatibility, into: &pieces)
            for piece in pieces { out.append(piece, start: starts[i], end: ends[i]) }
        }
        out.reorderCombiningMarks()
        self = out
    }

    /// NFC / NFKC: the decomposition above, then canonical composition per grapheme cluster (composition
    /// never crosses one; Foundation's own NFKC misses compositions its compatibility step makes
    /// possible, e.g. ｶﾞ -> ガ). A cluster holding a character newer than Unicode 9.0 stays decomposed,
    /// as `tokenizers` cannot compose it either. Outputs are aligned to their whole cluster.
    mutating func compose(compatibility: Bool) {
        decompose(compatibility: compatibility)
        mapClusters { cluster in
            if cluster.unicodeScalars.contains(where: { !FrozenUnicode.assigned($0, by: 9, 0) }) { return cluster }
            return cluster.precomposedStringWithCanonicalMapping
        }
    }

    /// Canonical ordering: each run of non-starters stably sorted by combining class.
    mutating func reorderCombiningMarks() {
        var i = 0
        while i < count {
            guard FrozenUnicode.combiningClass9(scalars[i]) != 0 else { i += 1; continue }
            var end = i + 1
            while end < count && FrozenUnicode.combiningClass9(scalars[end]) != 0 { end += 1 }
            if end - i > 1 {
                let order = (i..<end).sorted { a, b in
                    let ca = FrozenUnicode.combiningClass9(scalars[a]), cb = FrozenUnicode.combiningClass9(scalars[b])
                    return ca != cb ? ca < cb : a < b
                }
                let s = order.map { scalars[$0] }, st = order.map { starts[$0] }, en = order.map { ends[$0] }
                scalars.replaceSubrange(i..<end, with: s)
                starts.replaceSubrange(i..<end, with: st)
                ends.replaceSubrange(i..<end, with: en)
            }
            i = end
        }
    }

    /// Keeps the scalars for which `keep` holds.
    mutating func filterScalars(_ keep: (UInt32) -> Bool) {
        guard let firstDropped = scalars.firstIndex(where: { !keep($0) }) else { return }
        var write = firstDropped
        for read in firstDropped..<count where keep(scalars[read]) {
            scalars[write] = scalars[read]; starts[write] = starts[read]; ends[write] = ends[read]
            write += 1
        }
        scalars.removeSubrange(write...); starts.removeSubrange(write...); ends.removeSubrange(write...)
    }

    /// Each scalar's full lowercase mapping (Rust's `char::to_lowercase`).
    mutating func lowercaseScalars() {
        var needsMapping = false
        for i in 0..<count {
            let c = scalars[i]
            if c < 0x80 {
                if c >= 0x41 && c <= 0x5A { scalars[i] = c | 0x20 }
            } else if !needsMapping, let scalar = Unicode.Scalar(c), scalar.properties.changesWhenLowercased {
                needsMapping = true
            }
        }
        guard needsMapping else { return }
        var out = AlignedText()
        out.isAtInputStart = isAtInputStart
        out.reserveCapacity(count)
        for i in 0..<count {
            let c = scalars[i]
            guard c >= 0x80, let scalar = Unicode.Scalar(c), scalar.properties.changesWhenLowercased else {
                out.append(c, start: starts[i], end: ends[i]); continue
            }
            for lower in scalar.properties.lowercaseMapping.unicodeScalars { out.append(lower.value, start: starts[i], end: ends[i]) }
        }
        self = out
    }
}
