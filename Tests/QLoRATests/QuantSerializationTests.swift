import Foundation
import SafeTensors
import Testing
@testable import QLoRA

@Suite("Quant bitsandbytes serialization")
struct QuantSerializationTests {
    @Test func pythonReprOfFloat32ValuesMatchesCPython() throws {
        let json = try QuantFixtures.json("python_float_repr.json")
        let cases = json["cases"] as! [[String: String]]
        #expect(cases.count > 2000)
        var wrong: [String] = []
        for c in cases {
            let value = Float(bitPattern: UInt32(c["bits"]!, radix: 16)!)
            let got = PythonFloat.repr(Double(value))
            if got != c["repr"]! { wrong.append("\(c["bits"]!): \(got) vs \(c["repr"]!)") }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(5))")
    }

    @Test func quantStateJSONOfEveryTinyLlamaTensor() throws {
        let fp32 = try QuantFixtures.open("untied-fp32/model.safetensors")
        let nf4 = try QuantFixtures.open("untied-nf4/model.safetensors")
        let weights = BitsAndBytesFormat.quantizedWeightNames(nf4.names)
        #expect(weights.count == 14)
        for name in weights {
            let info = try fp32.info(name)
            let q = try QuantizedTensor.quantize(try fp32.rawBytes(name).baseAddress!, dtype: .F32, shape: info.shape)
            let expected = Array(try nf4.rawBytes(name + ".quant_state.bitsandbytes__nf4"))
            #expect(BitsAndBytesFormat.quantStateJSON(q) == expected,
                    "\(name): \(String(decoding: BitsAndBytesFormat.quantStateJSON(q), as: UTF8.self))")
        }
    }

    @Test func loadsBitsAndBytesCheckpointAndDequantizesLikeOurQuantizer() throws {
        let fp32 = try QuantFixtures.open("untied-fp32/model.safetensors")
        let loaded = try BitsAndBytesFormat.loadAll(file: try QuantFixtures.open("untied-nf4/model.safetensors"))
        #expect(loaded.count == 14)
        for (name, q) in loaded {
            let info = try fp32.info(name)
            let ours = try QuantizedTensor.quantize(try fp32.rawBytes(name).baseAddress!, dtype: .F32, shape: info.shape)
            #expect(q.shape == info.shape && q.originalDType == .F32 && q.blocksize == 64 && q.quantType == .nf4)
            #expect(q.packed == ours.packed && q.absmax == ours.absmax, "\(name)")
            #expect(bitMismatches(q.dequantized(), ours.dequantized()) == nil, "\(name)")
        }
    }

    @Test func loadsLinear4bitStateDictMatchingReferenceCase() throws {
        let file = try QuantFixtures.open("linear4bit_state_dict.safetensors")
        let q = try BitsAndBytesFormat.load(weightName: "weight", path: file.path, names: Set(file.names)) {
            (try file.info($0), try file.rawBytes($0))
        }
        let reference = try QuantFixtures.open("weight_32x128_f32.safetensors")
        #expect(q.shape == [32, 128])
        #expect(bitMismatches(q.dequantized(), try reference.floats("dequant_f32")) == nil)
    }

    @Test func tensorsRoundTripWithoutDoubleQuantAndFP4() throws {
        var rng = SeededGenerator(seed: 5)
        let values = (0..<(33 * 70)).map { _ in Float.random(in: -1...1, using: &rng) }
        for (quantType, doubleQuant) in [(QuantType.fp4, true), (.nf4, false), (.fp4, false)] {
            let q = try QuantizedTensor.quantize(values, shape: [33, 70], quantType: quantType, blocksize: 128, doubleQuant: doubleQuant)
            let tensors = BitsAndBytesFormat.tensors(q, weightName: "m.weight")
            let path = NSTemporaryDirectory() + "quant-roundtrip-\(getpid())-\(quantType)-\(doubleQuant).safetensors"
            defer { unlink(path) }
            try SafeTensorsWriter.write(path: path, tensors: tensors, metadata: ["format": "pt"])
            let loaded = try BitsAndBytesFormat.loadAll(file: try SafeTensorsFile(path: path))
            let back = try #require(loaded["m.weight"])
            #expect(back.packed == q.packed && back.absmax == q.absmax && back.quantType == quantType && back.blocksize == 128)
            #expect(bitMismatches(back.dequantized(), q.dequantized()) == nil)
        }
    }

    @Test func loaderNamesTheBadTensor() throws {
        let nf4 = try QuantFixtures.open("untied-nf4/model.safetensors")
        let weight = "model.layers.0.self_attn.q_proj.weight"
        var names = Set(nf4.names)
        names.remove(weight + ".nested_absmax")
        #expect(throws: QuantError.missingTensor(path: nf4.path, tensor: weight + ".nested_absmax")) {
            try BitsAndBytesFormat.load(weightName: weight, path: nf4.path, names: names) { (try nf4.info($0), try nf4.rawBytes($0)) }
        }
        // absmax of another tensor: wrong size
        let other = "model.layers.0.mlp.down_proj.weight.absmax"
        #expect(throws: QuantError.shapeMismatch(tensor: weight + ".absmax", expected: "U8 [144]", actual: "U8 [396]")) {
            try BitsAndBytesFormat.load(weightName: weight, path: nf4.path, names: Set(nf4.names)) { name in
                let actual = name == weight + ".absmax" ? other : name
                return (try nf4.info(actual), try nf4.rawBytes(actual))
            }
        }
    }

    @Test func pythonJSONRoundTripsConfigFormatting() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: QuantFixtures.path("untied-nf4/config.json")))
        let parsed = try PythonJSON.parse(data)
        #expect(parsed.render(indent: 2, sortKeys: true) + "\n" == String(decoding: data, as: UTF8.self))
        let tricky = try PythonJSON.parse(Data(#"{"b": [1, -1, 2.50, 1e-05], "a": {"é": "x\ny\u00e9\ud83d\ude00"}, "c": []}"#.utf8))
        #expect(tricky.render(indent: nil, sortKeys: true) == #"{"a": {"\u00e9": "x\ny\u00e9\ud83d\ude00"}, "b": [1, -1, 2.50, 1e-05], "c": []}"#)
    }
}
