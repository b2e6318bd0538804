import Foundation

/// Locates `Fixtures/` from this source file, so tests pass on any clone without ../shared.
enum FixturePaths {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
                return url.appendingPathComponent("Fixtures")
            }
            url.deleteLastPathComponent()
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }
}

/// Max abs difference and the first mismatches beyond `tolerance`, for failure messages.
func compare(_ actual: [Float], _ expected: [Float], tolerance: Float) -> (maxDiff: Float, report: String) {
    precondition(actual.count == expected.count, "length \(actual.count) vs \(expected.count)")
    var maxDiff: Float = 0
    var mismatches: [String] = []
    for i in actual.indices {
        let d = abs(actual[i] - expected[i])
        if !(d <= maxDiff) { maxDiff = d }
        if !(d <= tolerance) && mismatches.count < 5 { mismatches.append("[\(i)] \(actual[i]) vs \(expected[i])") }
    }
    return (maxDiff, "max abs diff \(maxDiff); first mismatches: \(mismatches.joined(separator: ", "))")
}
