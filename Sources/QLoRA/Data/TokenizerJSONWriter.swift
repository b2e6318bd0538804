import Foundation

/// A BPE vocabulary by id (nil for an id no token has). A Swift `[String: Int]` would merge tokens that
/// are canonically equivalent but spelled differently (Gemma has 434 such pairs, e.g. "য়" as one scalar
/// and as two), since `String` equality is canonical equivalence; this keeps every spelling.
struct TokenizerVocabulary {
    var tokens: [String?]

    init(count: Int) { tokens = [String?](repeating: nil, count: count) }
    init(tokens: [String?]) { self.tokens = tokens }
}

/// Writes a tokenizer.json object as JSON text: keys sorted, a `TokenizerVocabulary` as an object in id
/// order with every spelling kept (JSONSerialization would need a `[String: Int]`).
enum TokenizerJSONWriter {
    static func data(_ value: Any) -> Data {
        var out = ""
        write(value, to: &out)
        return Data(out.utf8)
    }

    private static func write(_ value: Any, to out: inout String) {
        switch value {
        case let vocabulary as TokenizerVocabulary:
            out += "{"
            var first = true
            for (id, token) in vocabulary.tokens.enumerated() {
                guard let token else { continue }
                if !first { out += "," }
                first = false
                writeString(token, to: &out)
                out += ":\(id)"
            }
            out += "}"
        case let object as [String: Any]:
            out += "{"
            for (index, key) in object.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }).enumerated() {
                if index > 0 { out += "," }
                writeString(key, to: &out)
                out += ":"
                write(object[key]!, to: &out)
            }
            out += "}"
        case let array as [Any]:
            out += "["
            for (index, item) in array.enumerated() {
                if index > 0 { out += "," }
                write(item, to: &out)
            }
            out += "]"
        case let string as String: writeString(string, to: &out)
        case let bool as Bool: out += bool ? "true" : "false"
        case let int as Int: out += String(int)
        case let double as Double: out += double.isFinite ? String(double) : "null"
        case let number as NSNumber: out += number.stringValue
        default: out += "null"  // NSNull
        }
    }

    private static func writeString(_ string: String, to out: inout String) {
        PythonJSON.writeString(string, to: &out, ensureASCII: false, escapeByteOrderMark: true)
    }
}
