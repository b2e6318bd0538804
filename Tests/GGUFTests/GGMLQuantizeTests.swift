import Foundation
import Testing
@testable import GGUF

/// Writing blocks: byte for byte what gguf-py's quantize writes (Fixtures/gguf-quantize), and what
/// the dequantizer reads back.
@Suite struct GGMLQuantizeTests {
    static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: ggufFixturePath("gguf-quantize/\(name)")))
    }

    @Test(arguments: [GGMLType.f16, .bf16, .q8_0, .q4_0])
    func bytesEqualGGUFPy(_ type: GGMLType) throws {
        let values = try Self.fixture("values.f32").withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let expected = [UInt8](try Self.fixture("\(type).bytes"))
        let bytes = values.withUnsafeBufferPointer { type.quantize($0.baseAddress!, count: $0.count) }
        #expect(bytes.count == expected.count)
        let first = zip(bytes, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(first == nil, "\(type): first differing byte \(first ?? -1)")
        // Round trip: the dequantizer reads the blocks back within one quantization step.
        var back = [Float](repeating: 0, count: values.count)
        bytes.withUnsafeBytes { type.dequantize(blocks: values.count / type.blockGeometry.elements, from: $0.baseAddress!, into: &back) }
        for i in 0..<values.count {
            let blockMax = values[(i / 32 * 32)..<(i / 32 * 32 + 32)].map(abs).max()!
            let step: Float
            switch type {
            case .f16: step = abs(values[i]) / 2048
            case .bf16: step = abs(values[i]) / 256
            case .q8_0: step = blockMax / 127
            default: step = blockMax / 8 * 1.01
            }
            #expect(abs(back[i] - values[i]) <= step, "\(type) [\(i)]")
        }
    }
}
