import Foundation
import GGUF
import QLoRA

/// `qlora-bench dequant --types q4_K,q8_0,...|all [--rows 128 --columns 1024]`: one thread writing tiles of
/// random GGUF blocks (GGUFWeight.writeTile, what training's tile GEMM feeds on; and writeBFloat16, the
/// bf16 kernel's panels), per block type, in G elements/s. The tile stays in L2.
enum GGUFTileBenchmark {
    static func run(_ o: [String: String]) throws {
        let rows = Int(o["rows"] ?? "128") ?? 128, columns = Int(o["columns"] ?? "1024") ?? 1024
        let repeats = Int(o["repeats"] ?? "200") ?? 200
        let blockTypes = GGMLType.supported.filter { $0.blockGeometry.elements > 1 }
        let names = o["types"] == "all" ? blockTypes.map(\.description) : (o["types"] ?? "").split(separator: ",").map(String.init)
        let types = try names.map { name in
            guard let type = blockTypes.first(where: { $0.description.lowercased() == name.lowercased() }) else {
                throw BenchError("--types takes GGML block types or all: \(blockTypes.map(\.description).joined(separator: ", ")) (got \(name))")
            }
            return type
        }
        guard rows > 0, columns > 0, columns % 256 == 0 else { throw BenchError("--columns must be a positive multiple of 256 (whole K-quant super-blocks)") }
        var writer = GGUFWriter()
        var random = SeededGenerator(seed: 18)
        for type in types {
            let (elements, blockBytes) = type.blockGeometry
            writer.tensors.append(.init(name: type.description, type: type, dimensions: [columns, rows],
                                        bytes: GGUFBlockProductBenchmark.randomBlocks(type, count: rows * columns / elements, blockBytes: blockBytes, random: &random)))
        }
        let path = NSTemporaryDirectory() + "qlora-bench-tiles-\(getpid()).gguf"
        try writer.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        let n = rows * columns
        let f32 = UnsafeMutablePointer<Float>.allocate(capacity: n)
        let bf16 = UnsafeMutablePointer<UInt16>.allocate(capacity: n + rows)
        defer { f32.deallocate(); bf16.deallocate() }
        print("dequant GGUF blocks, tile \(rows) x \(columns) = \(n) elements, 1 thread, best of \(repeats); CPU \(CPUFeatures.current.modelName)")
        print("type    bits/w   f32 G elem/s   bf16-in-f32   bf16 panel")
        for type in types {
            let weight = try GGUFWeight(file: file, tensor: type.description)
            let rates = [
                { weight.writeTile(rows: 0..<rows, into: f32, precision: .fp32) },
                { weight.writeTile(rows: 0..<rows, into: f32, precision: .bf16) },
                { weight.writeBFloat16(rows: 0..<rows, columns: 0..<columns, into: bf16, ld: columns) },
            ].map { (body: () -> Void) in Double(n) / Bench.best(repeats: repeats, body) / 1e9 }
            let bits = Double(weight.storageBytes * 8) / Double(n)
            print(String(format: "%-6@ %7.3f %14.2f %13.2f %12.2f", type.description as NSString, bits, rates[0], rates[1], rates[2]))
        }
    }
}
