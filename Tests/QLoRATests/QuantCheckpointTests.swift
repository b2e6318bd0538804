import Foundation
import SafeTensors
import Testing
@testable import QLoRA

@Suite("Quant checkpoint quantizer")
struct QuantCheckpointTests {
    static func temporaryDirectory(_ tag: String) -> String {
        let path = NSTemporaryDirectory() + "qlora-quant-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Acceptance: quantizing untied-fp32 reproduces bitsandbytes' untied-nf4 byte for byte.
    @Test func reproducesBitsAndBytesCheckpointByteForByte() throws {
        let output = Self.temporaryDirectory("tiny")
        defer { try? FileManager.default.removeItem(atPath: output) }
        var events: [QuantizeEvent] = []
        let summary = try CheckpointQuantizer.quantize(input: QuantFixtures.path("untied-fp32"), output: output) { events.append($0) }
        let expected = try QuantFixtures.open("untied-nf4/model.safetensors")
        let got = try SafeTensorsFile(path: output + "/model.safetensors")
        #expect(got.names.sorted() == expected.names.sorted())
        for name in expected.names {
            #expect(Array(try got.rawBytes(name)) == Array(try expected.rawBytes(name)), "\(name)")
            #expect(try got.info(name) == expected.info(name), "\(name) layout")
        }
        #expect(got.metadata == ["format": "pt"])
        let gotBytes = try Data(contentsOf: URL(fileURLWithPath: output + "/model.safetensors"))
        let expectedBytes = try Data(contentsOf: URL(fileURLWithPath: QuantFixtures.path("untied-nf4/model.safetensors")))
        #expect(gotBytes == expectedBytes, "whole file")
        let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
        #expect(config == (try String(contentsOfFile: QuantFixtures.path("untied-nf4/config.json"), encoding: .utf8)))
        #expect(FileManager.default.contentsEqual(atPath: output + "/generation_config.json",
                                                  andPath: QuantFixtures.path("untied-fp32/generation_config.json")))
        #expect(summary.tensorsQuantized == 14 && summary.parametersQuantized == 201_216)
        #expect(summary.tensorsKept == 7)
        #expect(abs(summary.bitsPerParameter - 4.127) < 0.01)
        guard case .started(_, let toQuantize, _) = events.first, case .finished = events.last else {
            Issue.record("events: \(events)"); return
        }
        #expect(toQuantize == 14)
        #expect(events.filter { if case .quantized = $0 { return true } else { return false } }.count == 14)
    }

    @Test func bf16InputRecordsDTypeAndSkipModulesAndOptions() throws {
        // A bf16 copy of two tensors of untied-fp32 (RNE), quantized with fp4, blocksize 128, no DQ.
        let input = Self.temporaryDirectory("bf16-in"), output = Self.temporaryDirectory("bf16-out")
        defer { try? FileManager.default.removeItem(atPath: input); try? FileManager.default.removeItem(atPath: output) }
        let fp32 = try QuantFixtures.open("untied-fp32/model.safetensors")
        var tensors: [(TensorEntry, Data)] = []
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight"] {
            let info = try fp32.info(name)
            let bits = try fp32.floats(name).map { HalfFloat.bfloat16FromFloat($0) }
            tensors.append((TensorEntry(name: name, dtype: .BF16, shape: info.shape), bits.withUnsafeBytes { Data($0) }))
        }
        try SafeTensorsWriter.write(path: input + "/model.safetensors", tensors: tensors)
        try FileManager.default.copyItem(atPath: QuantFixtures.path("untied-fp32/config.json"), toPath: input + "/config.json")
        var options = QuantizeOptions()
        options.quantType = .fp4
        options.blocksize = 128
        options.doubleQuant = false
        options.computeDType = .F16
        options.skipModules = ["up_proj"]
        try CheckpointQuantizer.quantize(input: input, output: output, options: options)
        let got = try SafeTensorsFile(path: output + "/model.safetensors")
        let state = String(decoding: try got.rawBytes("model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__fp4"), as: UTF8.self)
        #expect(state == #"{"quant_type": "fp4", "blocksize": 128, "dtype": "bfloat16", "shape": [96, 96]}"#)
        #expect(try got.info("model.layers.0.mlp.up_proj.weight").dtype == .BF16)     // skipped
        #expect(try got.info("model.layers.0.self_attn.q_proj.weight.absmax").dtype == .F32)
        let config = try PythonJSON.parse(Data(contentsOf: URL(fileURLWithPath: output + "/config.json")))
        let qc = try #require(config["quantization_config"])
        #expect(qc["bnb_4bit_compute_dtype"] == .string("float16"))
        #expect(qc["bnb_4bit_quant_type"] == .string("fp4"))
        #expect(qc["bnb_4bit_use_double_quant"] == .bool(false))
        #expect(qc["llm_int8_skip_modules"] == .array([.string("up_proj")]))
        let loaded = try BitsAndBytesFormat.loadAll(file: got)
        let q = try #require(loaded["model.layers.0.self_attn.q_proj.weight"])
        let direct = try tensors[0].1.withUnsafeBytes {
            try QuantizedTensor.quantize($0.baseAddress!, dtype: .BF16, shape: [96, 96], quantType: .fp4, blocksize: 128, doubleQuant: false)
        }
        #expect(q.packed == direct.packed && q.absmax == direct.absmax && q.originalDType == .BF16)
    }

    @Test func clearErrors() throws {
        let empty = Self.temporaryDirectory("empty")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let fixture = QuantFixtures.path("untied-fp32")
        let out = empty + "/out"
        #expect(throws: QuantError.notADirectory(fixture + "/config.json")) {
            try CheckpointQuantizer.quantize(input: fixture + "/config.json", output: out)
        }
        #expect(throws: QuantError.noConfig(directory: empty)) { try CheckpointQuantizer.quantize(input: empty, output: out) }
        try FileManager.default.copyItem(atPath: fixture + "/config.json", toPath: empty + "/config.json")
        #expect(throws: QuantError.noSafeTensors(directory: empty)) { try CheckpointQuantizer.quantize(input: empty, output: out) }
        #expect(throws: QuantError.outputIsInput(fixture + "/")) { try CheckpointQuantizer.quantize(input: fixture, output: fixture + "/") }
        var options = QuantizeOptions()
        options.blocksize = 100
        #expect(throws: QuantError.badBlocksize(100)) { try CheckpointQuantizer.quantize(input: fixture, output: out, options: options) }
        // an I32 projection weight
        let ints = [Int32](repeating: 1, count: 8)
        try SafeTensorsWriter.write(path: empty + "/model.safetensors", tensors: [
            (TensorEntry(name: "model.layers.0.mlp.up_proj.weight", dtype: .I32, shape: [2, 4]), ints.withUnsafeBytes { Data($0) }),
        ])
        #expect(throws: QuantError.unsupportedDType(tensor: "model.layers.0.mlp.up_proj.weight", dtype: "I32")) {
            try CheckpointQuantizer.quantize(input: empty, output: out)
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/model.safetensors"))
    }

    @Test func selectsOnlyDecoderLinears() {
        let skip = ["lm_head"]
        #expect(CheckpointQuantizer.isQuantizable("model.layers.3.self_attn.q_proj.weight", shape: [8, 8], skipModules: skip))
        #expect(CheckpointQuantizer.isQuantizable("model.layers.3.mlp.down_proj.weight", shape: [8, 8], skipModules: skip))
        #expect(!CheckpointQuantizer.isQuantizable("model.layers.3.input_layernorm.weight", shape: [8], skipModules: skip))
        #expect(!CheckpointQuantizer.isQuantizable("model.embed_tokens.weight", shape: [8, 8], skipModules: skip))
        #expect(!CheckpointQuantizer.isQuantizable("lm_head.weight", shape: [8, 8], skipModules: skip))
        #expect(!CheckpointQuantizer.isQuantizable("model.layers.3.self_attn.q_proj.bias", shape: [8], skipModules: skip))
        #expect(!CheckpointQuantizer.isQuantizable("model.layers.3.self_attn.q_proj.weight", shape: [8, 8], skipModules: ["self_attn"]))
    }

    /// An output that cannot be written is refused before any tensor is read, in one sentence.
    @Test func unwritableOutputIsRefusedUpFront() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-file-\(UUID().uuidString)")
        try Data("x".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        var events = 0
        for output in [file.appendingPathComponent("out").path, "/proc/qlora-forbidden/out"] {
            do {
                _ = try CheckpointQuantizer.quantize(input: QuantFixtures.path("untied-fp32"), output: output, progress: { _ in events += 1 })
                Issue.record("quantizing into \(output) succeeded")
            } catch let error as QuantError {
                guard case .outputNotWritable = error else { Issue.record("unexpected \(error)"); continue }
                #expect("\(error)".contains(output) && "\(error)".contains("nothing was quantized"))
            }
        }
        #expect(events == 0, "no work before the check")
    }
}
