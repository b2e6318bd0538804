import Foundation
import Testing
@testable import SafeTensors

/// Fixtures/safetensors/<name>, found by walking up from this file to the package root.
func fixturePath(_ name: String) -> String {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        let candidate = url.appendingPathComponent("Fixtures/safetensors/\(name)")
        if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
        url.deleteLastPathComponent()
    }
    return "Fixtures/safetensors/\(name) (not found)"
}

/// A fresh empty directory, removed when the returned object dies... (call `remove()` explicitly).
struct TemporaryDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "safetensors-tests-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Builds raw safetensors bytes from a header text and a data section (header padded as given).
func rawFile(header: String, data: [UInt8] = []) -> [UInt8] {
    let h = Array(header.utf8)
    var out = [UInt8](repeating: 0, count: 8)
    withUnsafeBytes(of: UInt64(h.count).littleEndian) { for i in 0..<8 { out[i] = $0[i] } }
    return out + h + data
}

/// Expects `body` to throw a SafeTensorsError for which `matches` is true; prints the error otherwise.
func expectSafeTensorsError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation,
                            _ matches: (SafeTensorsError) -> Bool) {
    do {
        try body()
        Issue.record("expected a SafeTensorsError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as SafeTensorsError {
        #expect(matches(error), "wrong error: \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a SafeTensorsError, got \(error)", sourceLocation: sourceLocation)
    }
}

func floatBytes(_ values: [Float]) -> Data {
    values.withUnsafeBytes { Data($0) }
}
