import Foundation

/// The mutations: byte-level ones for any file, field-aware ones from a `FileStructure` (lengths,
/// counts, offsets, dimensions), header rewrites for safetensors, token-level ones for JSON text.
public enum Mutator {
    public enum Format: Sendable { case safetensors, gguf, json, jsonl, binary }

    static let interesting64: [UInt64] = [0, 1, 2, 7, 8, 31, 32, 255, 256, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
                                          1 << 40, 1 << 62, 1 << 63, UInt64.max, UInt64.max - 7]
    static let interestingNumbers = ["0", "-1", "1", "-100", "2147483647", "2147483648", "4294967296", "9223372036854775807",
                                     "9223372036854775808", "18446744073709551615", "1e308", "-1e308", "1e999", "1.5", "-0",
                                     "NaN", "Infinity", "1000000000000000", "65536", "3", "null", "true", "\"7\"", "[]", "{}"]
    static let badUTF8: [[UInt8]] = [[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0x80], [0x00]]
    static let nanPatterns32: [UInt32] = [0x7FC0_0000, 0x7F80_0000, 0xFF80_0000, 0xFFFF_FFFF, 0x0000_0001, 0x7F7F_FFFF]

    public static func mutate(_ input: [UInt8], format: Format, structure: FileStructure, rng: inout FuzzRandom) -> (bytes: [UInt8], what: String) {
        var bytes = input
        // One to three stacked mutations; the description names each.
        let rounds = rng.chance(0.7) ? 1 : 1 + rng.below(3)
        var what: [String] = []
        for _ in 0..<rounds {
            what.append(once(&bytes, format: format, structure: structure, rng: &rng))
        }
        return (bytes, what.joined(separator: " + "))
    }

    static func once(_ bytes: inout [UInt8], format: Format, structure: FileStructure, rng: inout FuzzRandom) -> String {
        var options: [(Double, (inout [UInt8], inout FuzzRandom) -> String)] = [
            (3, { b, r in flipBits(&b, &r) }),
            (2, { b, r in truncate(&b, structure: structure, &r) }),
            (1, { b, r in setBytes(&b, &r) }),
            (1, { b, r in spliceBytes(&b, &r) }),
        ]
        if !structure.fields.isEmpty { options.append((4, { b, r in overwriteField(&b, structure: structure, &r) })) }
        if !structure.dataRanges.isEmpty { options.append((1.5, { b, r in nonFinite(&b, structure: structure, &r) })) }
        switch format {
        case .safetensors: options.append((5, { b, r in rewriteSafetensorsHeader(&b, &r) }))
        case .json: options += [(5, { b, r in jsonToken(&b, &r) }), (1, { b, r in badText(&b, &r) })]
        case .jsonl: options += [(4, { b, r in jsonToken(&b, &r) }), (2, { b, r in jsonlLine(&b, &r) }), (1, { b, r in badText(&b, &r) })]
        case .gguf, .binary: break
        }
        let total = options.reduce(0) { $0 + $1.0 }
        var x = Double(rng.next() >> 11) / Double(1 << 53) * total
        for (weight, body) in options {
            if x < weight { return body(&bytes, &rng) }
            x -= weight
        }
        return options[0].1(&bytes, &rng)
    }

    // MARK: - Byte level

    static func flipBits(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        guard !b.isEmpty else { return "flip (empty)" }
        let n = 1 + r.below(8)
        for _ in 0..<n { b[r.below(b.count)] ^= UInt8(1) << UInt8(r.below(8)) }
        return "flip \(n) bits"
    }

    static func truncate(_ b: inout [UInt8], structure: FileStructure, _ r: inout FuzzRandom) -> String {
        let cut: Int
        if !structure.boundaries.isEmpty, r.chance(0.8) {
            let boundary = r.pick(structure.boundaries)
            cut = max(0, min(b.count, boundary + (r.chance(0.5) ? 0 : r.below(3) - 1)))
        } else {
            cut = r.below(b.count + 1)
        }
        b.removeSubrange(min(cut, b.count)...)
        return "truncate at \(cut)"
    }

    static func setBytes(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        guard !b.isEmpty else { return "set (empty)" }
        let n = 1 + r.below(4)
        for _ in 0..<n { b[r.below(b.count)] = r.pick([0, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0x0A, 0x7B, 0x2C]) }
        return "set \(n) bytes"
    }

    static func spliceBytes(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        guard !b.isEmpty else { return "splice (empty)" }
        let at = r.below(b.count)
        let length = min(b.count - at, 1 + r.below(64))
        switch r.below(3) {
        case 0:
            b.removeSubrange(at..<(at + length))
            return "delete \(length) at \(at)"
        case 1:
            let from = r.below(b.count - length + 1)
            b.insert(contentsOf: Array(b[from..<(from + length)]), at: at)
            return "duplicate \(length) at \(at)"
        default:
            b.insert(contentsOf: (0..<length).map { _ in UInt8(truncatingIfNeeded: r.next()) }, at: at)
            return "insert \(length) random at \(at)"
        }
    }

    static func overwriteField(_ b: inout [UInt8], structure: FileStructure, _ r: inout FuzzRandom) -> String {
        let field = r.pick(structure.fields)
        guard field.offset + field.width <= b.count else { return "field beyond end" }
        let old: UInt64 = b.withUnsafeBytes { raw in
            field.width == 8 ? raw.loadUnaligned(fromByteOffset: field.offset, as: UInt64.self).littleEndian
                : UInt64(raw.loadUnaligned(fromByteOffset: field.offset, as: UInt32.self).littleEndian)
        }
        var value: UInt64
        switch r.below(5) {
        case 0: value = old &+ 1
        case 1: value = old &- 1
        case 2: value = old &* 2 &+ UInt64(r.below(3))
        case 3: value = UInt64(b.count) &+ UInt64(r.below(3)) &- 1
        default: value = r.pick(interesting64)
        }
        if field.kind == .headerLength, r.chance(0.3) { value = r.pick([1 << 63, UInt64.max, 100_000_001, old &+ 1, old &- 1]) }
        if field.width == 8 {
            withUnsafeBytes(of: value.littleEndian) { src in for i in 0..<8 { b[field.offset + i] = src[i] } }
        } else {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian) { src in for i in 0..<4 { b[field.offset + i] = src[i] } }
        }
        return "\(field.kind) at \(field.offset): \(old) -> \(field.width == 8 ? value : UInt64(UInt32(truncatingIfNeeded: value)))"
    }

    static func nonFinite(_ b: inout [UInt8], structure: FileStructure, _ r: inout FuzzRandom) -> String {
        let range = r.pick(structure.dataRanges)
        let n = 1 + r.below(8)
        for _ in 0..<n {
            let at = range.lowerBound + r.below(max(1, range.count - 3)) & ~1
            guard at + 4 <= b.count else { continue }
            let pattern = r.pick(nanPatterns32)
            withUnsafeBytes(of: pattern.littleEndian) { src in for i in 0..<4 { b[at + i] = src[i] } }
        }
        return "\(n) NaN/Inf patterns"
    }

    // MARK: - safetensors header

    /// Rewrites one tensor entry (offsets reversed / overlapping / huge, shapes that overflow or do not
    /// match the bytes, other dtypes, missing fields) or the metadata, then re-serializes the header.
    static func rewriteSafetensorsHeader(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        let s = FileStructure.safetensors(b)
        guard let range = s.safetensorsHeader,
              var object = (try? JSONSerialization.jsonObject(with: Data(b[range]))) as? [String: Any] else { return "header unparsable" }
        let names = object.keys.filter { $0 != "__metadata__" }.sorted()
        guard !names.isEmpty else { return "no tensors" }
        let name = r.pick(names)
        guard var entry = object[name] as? [String: Any] else { return "entry not an object" }
        func pair(_ value: Any?) -> [Int] { (value as? [Int]).flatMap { $0.count == 2 ? $0 : nil } ?? [0, 0] }
        let offsets = pair(entry["data_offsets"])
        let other = pair((object[r.pick(names)] as? [String: Any])?["data_offsets"])
        var what = ""
        switch r.below(14) {
        case 0: entry["data_offsets"] = [offsets[1], offsets[0]]; what = "reversed offsets"
        case 1: entry["data_offsets"] = [other[0], other[1]]; what = "offsets of another tensor"
        case 2: entry["data_offsets"] = [offsets[0], offsets[1] &+ 1 &+ r.below(8)]; what = "offsets one past"
        case 3: entry["data_offsets"] = [offsets[0], Int.max]; what = "end Int.max"
        case 4: entry["data_offsets"] = [-1, offsets[1]]; what = "negative begin"
        case 5: entry["shape"] = [1 << 62, 4]; what = "shape product overflows"
        case 6: entry["shape"] = [Int(Int32.max), Int(Int32.max), Int(Int32.max)]; what = "shape product overflows (3 dims)"
        case 7: entry["shape"] = ((entry["shape"] as? [Int]) ?? []) + [2]; what = "extra dimension"
        case 8: entry["shape"] = [-4]; what = "negative dimension"
        case 9: entry["dtype"] = r.pick(["F64", "I8", "U8", "BOOL", "F8_E4M3", "I64", "F4", "X9", "f32", ""]); what = "dtype \(entry["dtype"]!)"
        case 10: entry.removeValue(forKey: r.pick(["dtype", "shape", "data_offsets"])); what = "field removed"
        case 11: entry["shape"] = [1.5, 2]; what = "fractional dimension"
        case 12: object["__metadata__"] = r.pick([["format": 5] as [String: Any], ["x": ["y"]], [:]]); what = "metadata changed"
        default: entry["data_offsets"] = [offsets[0], offsets[0]]; entry["shape"] = [0]; what = "empty tensor"
        }
        object[name] = entry
        guard var header = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "unserializable" }
        while header.count % 8 != 0 { header.append(0x20) }
        var out = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { for i in 0..<8 { out[i] = $0[i] } }
        out += header
        out += b[range.upperBound...]
        b = out
        return "header: '\(name)' \(what)"
    }

    // MARK: - Text

    /// Replaces one number, string or value token of JSON text by another of an interesting kind.
    static func jsonToken(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        guard !b.isEmpty else { return "json (empty)" }
        let start = r.below(b.count)
        // Find the next number or string token from a random place.
        guard let at = (start..<b.count).first(where: { b[$0] == UInt8(ascii: "\"") || (b[$0] >= 0x30 && b[$0] <= 0x39) || b[$0] == UInt8(ascii: "-") }) else {
            return "json (no token)"
        }
        var end = at + 1
        if b[at] == UInt8(ascii: "\"") {
            while end < b.count, b[end] != UInt8(ascii: "\"") { end += b[end] == UInt8(ascii: "\\") ? 2 : 1 }
            end = min(b.count, end + 1)
        } else {
            while end < b.count, (b[end] >= 0x30 && b[end] <= 0x39) || [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "-"), UInt8(ascii: "+")].contains(b[end]) { end += 1 }
        }
        let replacement: [UInt8]
        switch r.below(5) {
        case 0, 1: replacement = Array(r.pick(interestingNumbers).utf8)
        case 2: replacement = Array("\"\(r.pick(["", "x", "\\ud800", "\\u0000", "llama", "q_proj", "F32", "all-linear", "gguf", "{{"]))\"".utf8)
        case 3: replacement = Array("\"".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 1 << (10 + r.below(8))) + Array("\"".utf8)
        default: replacement = Array(String(repeating: "[", count: 1 + r.below(600)).utf8)
        }
        b.replaceSubrange(at..<end, with: replacement)
        return "json token at \(at) -> \(replacement.count > 24 ? "\(replacement.count) bytes" : String(decoding: replacement, as: UTF8.self))"
    }

    /// Invalid UTF-8 or a very long line somewhere in the text.
    static func badText(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        let at = r.below(b.count + 1)
        if r.chance(0.6) {
            b.insert(contentsOf: r.pick(badUTF8), at: at)
            return "invalid UTF-8 at \(at)"
        }
        b.insert(contentsOf: [UInt8](repeating: UInt8(ascii: "z"), count: 1 << (12 + r.below(9))), at: at)
        return "long run at \(at)"
    }

    /// JSONL-specific: a line replaced, duplicated, emptied, joined or made huge.
    static func jsonlLine(_ b: inout [UInt8], _ r: inout FuzzRandom) -> String {
        var lines = b.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        guard !lines.isEmpty else { return "jsonl (empty)" }
        let i = r.below(lines.count)
        switch r.below(6) {
        case 0: lines[i] = Array(r.pick(["[]", "null", "{}", "{\"text\": 5}", "{\"input_ids\": [1e300]}", "{\"input_ids\": [-5, 3]}",
                                         "{\"input_ids\": [1, 2], \"labels\": [1]}", "{\"messages\": [{\"role\": 1}]}", "{\"messages\": []}",
                                         "{\"prompt\": \"a\"}", "{\"input_ids\": [99999999999]}", "{\"input_ids\": []}"]).utf8)
        case 1: lines.insert(lines[i], at: i)
        case 2: lines[i] = []
        case 3: if i + 1 < lines.count { lines[i] += lines.remove(at: i + 1) }
        case 4: lines[i] = Array("{\"text\": \"".utf8) + [UInt8](repeating: UInt8(ascii: "w"), count: 1 << (14 + r.below(7))) + Array("\"}".utf8)
        default: lines[i] = Array("\r".utf8) + lines[i] + Array("\r".utf8)
        }
        b = Array(lines.joined(separator: [0x0A]))
        return "jsonl line \(i + 1) changed"
    }
}
