import Foundation
import Testing
@testable import QLoRACLI

/// `quantize --quant` is the spelling of every command; `--quant-type` still works (deprecated).
@Suite struct QuantizeFlagTests {
    @Test func quantAndTheOldSpellingAgree() throws {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { url.deleteLastPathComponent() }
        let input = url.appendingPathComponent("Fixtures/tiny-llama/untied-fp32").path
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-qflag-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try QuantizeCommand.run([input, "--output", dir.appendingPathComponent("new").path, "--quant", "fp4"])
        _ = try QuantizeCommand.run([input, "--output", dir.appendingPathComponent("old").path, "--quant-type", "fp4"])
        let new = try Data(contentsOf: dir.appendingPathComponent("new/model.safetensors"))
        #expect(new == (try Data(contentsOf: dir.appendingPathComponent("old/model.safetensors"))))
        #expect(String(decoding: try Data(contentsOf: dir.appendingPathComponent("new/config.json")), as: UTF8.self).contains("fp4"))
        #expect(throws: CLIError.self) {
            _ = try QuantizeCommand.run([input, "--output", dir.appendingPathComponent("both").path, "--quant", "nf4", "--quant-type", "fp4"])
        }
    }
}
