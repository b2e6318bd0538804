import Foundation
import SafeTensors
@testable import QLoRA

/// Locates Fixtures/nf4 from this file, walking up to the package root.
enum QuantFixtures {
    static let directory = FixturePaths.url("nf4")

    /// The tiny-llama checkpoints are shared with the model tests under Fixtures/tiny-llama.
    static func path(_ name: String) -> String {
        name.hasPrefix("untied-") ? FixturePaths.url("tiny-llama/" + name).path : directory.appendingPathComponent(name).path
    }

    static func open(_ name: String) throws -> SafeTensorsFile { try SafeTensorsFile(path: path(name)) }

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static let index: [String: Any] = try! json("index.json")
    static var caseNames: [String] { (index["cases"] as! [String: Any]).keys.sorted() }
    static func caseInfo(_ name: String) -> [String: Any] { (index["cases"] as! [String: Any])[name] as! [String: Any] }

    static func floatsFromHex(_ hex: [String]) -> [Float] {
        hex.map { Float(bitPattern: UInt32($0.dropFirst(2), radix: 16)!) }
    }

    static func bytes(_ file: SafeTensorsFile, _ name: String) throws -> [UInt8] { Array(try file.rawBytes(name)) }

    static func uint16s(_ file: SafeTensorsFile, _ name: String) throws -> [UInt16] {
        let raw = try file.rawBytes(name)
        return (0..<(raw.count / 2)).map { raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
    }
}

/// Bit-exact comparison with a message naming the first mismatches.
func bitMismatches(_ a: [Float], _ b: [Float]) -> String? {
    guard a.count == b.count else { return "count \(a.count) != \(b.count)" }
    var bad: [Int] = []
    var maxDiff: Float = 0
    for i in a.indices where a[i].bitPattern != b[i].bitPattern {
        bad.append(i)
        maxDiff = max(maxDiff, abs(a[i] - b[i]))
    }
    guard !bad.isEmpty else { return nil }
    let first = bad.prefix(5).map { "[\($0)] \(a[$0]) vs \(b[$0])" }.joined(separator: ", ")
    return "\(bad.count) of \(a.count) differ (max abs diff \(maxDiff)); first: \(first)"
}

func mismatches<T: Equatable>(_ a: [T], _ b: [T]) -> String? {
    guard a.count == b.count else { return "count \(a.count) != \(b.count)" }
    let bad = a.indices.filter { a[$0] != b[$0] }
    guard !bad.isEmpty else { return nil }
    return "\(bad.count) of \(a.count) differ; first: " + bad.prefix(5).map { "[\($0)] \(a[$0]) vs \(b[$0])" }.joined(separator: ", ")
}

/// Deterministic generator for property tests.
