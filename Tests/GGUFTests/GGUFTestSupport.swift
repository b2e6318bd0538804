import Foundation

/// The file at `relative` under Fixtures/ (e.g. "gguf-blocks/Q4_K.blocks"), found by walking up from this
/// file to the package root.
func ggufFixturePath(_ relative: String) -> String {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        let fixtures = url.appendingPathComponent("Fixtures")
        if FileManager.default.fileExists(atPath: fixtures.path) { return fixtures.appendingPathComponent(relative).path }
        url.deleteLastPathComponent()
    }
    return "Fixtures/\(relative) (no Fixtures directory above \(#filePath))"
}

/// SplitMix64: a seeded generator, so property tests draw the same cases on every run.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
