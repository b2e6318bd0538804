import Foundation
import GGUF
import SafeTensors

/// What `qlora inspect x.gguf` shows: version, metadata (long arrays summarized), tensors with their
/// ggml type, row-major shape and bytes, and totals per type with bits per parameter.
struct GGUFInspectReport {
    let file: GGUFFile

    init(path: String) throws { file = try GGUFFile(path: path) }

    /// (type name, tensors, parameters, bytes) per type, largest first.
    var totals: [(type: String, tensors: Int, parameters: Int, bytes: Int)] {
        var byType: [String: (Int, Int, Int)] = [:]
        for t in file.tensors {
            let old = byType[t.typeName] ?? (0, 0, 0)
            byType[t.typeName] = (old.0 + 1, old.1 + t.elementCount, old.2 + t.byteCount)
        }
        return byType.map { ($0.key, $0.value.0, $0.value.1, $0.value.2) }.sorted { $0.bytes > $1.bytes }
    }

    var text: String {
        var out = "\(file.path): GGUF version \(file.version), \(file.tensors.count) tensors, \(file.metadata.count) metadata keys, "
            + "alignment \(file.alignment), \(Formatting.bytes(file.fileSize))\n\nmetadata:\n"
        for key in file.metadataKeys { out += "  \(key) = \(file.metadata[key]!.summary)\n" }
        out += "\ntensors (name, type, shape, bytes):\n"
        let width = file.tensors.map(\.name.count).max() ?? 0
        for t in file.tensors {
            let name = t.name.padding(toLength: width, withPad: " ", startingAt: 0)
            out += "  \(name)  \(t.typeName.padding(toLength: 7, withPad: " ", startingAt: 0)) \(t.shape)  \(t.byteCount)"
            out += t.type?.isSupported == false || t.type == nil ? "  (not supported)\n" : "\n"
        }
        out += "\ntotals:\n"
        for row in totals {
            let bits = row.parameters > 0 ? String(format: "%.2f", Double(row.bytes * 8) / Double(row.parameters)) : "-"
            out += "  \(row.type): \(row.tensors) tensors, \(Formatting.count(row.parameters)) parameters, \(Formatting.bytes(row.bytes)), \(bits) bits/param\n"
        }
        return out
    }

    var json: JSONValue {
        func int(_ n: Int) -> JSONValue { .unsignedInteger(UInt64(n)) }
        func value(_ v: GGUFValue) -> JSONValue {
            switch v {
            case .string(let s): return .string(s)
            case .bool(let b): return .bool(b)
            case .float32(let f): return .number(Double(f))
            case .float64(let d): return .number(d)
            case .array(let items):
                // Vocabularies are long: their length and first entries.
                if items.count > 64 { return .object([("length", int(items.count)), ("first", .array((0..<8).map { value(items[$0]) }))]) }
                return .array(items.values.map(value))
            default:
                if let i = v.int { return i >= 0 ? int(i) : .number(Double(i)) }
                if case .uint64(let u) = v { return .unsignedInteger(u) }
                return .null
            }
        }
        return .object([
            ("path", .string(file.path)), ("format", .string("gguf")), ("version", int(Int(file.version))),
            ("alignment", int(file.alignment)), ("file_bytes", int(file.fileSize)),
            ("metadata", .object(file.metadataKeys.map { ($0, value(file.metadata[$0]!)) })),
            ("tensors", .array(file.tensors.map { t in
                .object([("name", .string(t.name)), ("type", .string(t.typeName)), ("shape", .array(t.shape.map(int))),
                         ("bytes", int(t.byteCount)), ("parameters", int(t.elementCount)),
                         ("supported", .bool(t.type?.isSupported ?? false))])
            })),
            ("totals", .array(totals.map { row in
                .object([("type", .string(row.type)), ("tensors", int(row.tensors)), ("parameters", int(row.parameters)),
                         ("bytes", int(row.bytes))])
            })),
        ])
    }
}
