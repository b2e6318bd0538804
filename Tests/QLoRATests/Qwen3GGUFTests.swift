import Foundation
import GGUF
import SafeTensors
import Testing
@testable import QLoRA

/// Qwen3 in llama.cpp's format: the tiny Qwen3 of Fixtures/qwen3 written as a `qwen3` GGUF under
/// gguf-py's tensor names (gguf 0.19 MODEL_TENSORS[QWEN3]: blk.N.attn_q_norm / attn_k_norm beside the
/// Llama ones; no q/k permutation, as convert_hf_to_gguf's Qwen2/Qwen3 models do not permute), loaded
/// and compared with transformers' logits of the Hugging Face original.
@Suite struct Qwen3GGUFTests {
    /// llama.cpp's name of each Hugging Face tensor of a layer.
    static let layerNames = [
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    ]

    /// The fixture as a GGUF: matrices in `matrixType` (F32 or Q8_0), vectors F32, tied (no output.weight).
    static func writeGGUF(to path: String, architecture: String = "qwen3", matrixType: GGMLType = .f32) throws {
        let source = try SafeTensorsFile(path: FixturePaths.url("qwen3/model/model.safetensors").path)
        let config = try LlamaConfig.load(directory: FixturePaths.url("qwen3/model"))
        var w = GGUFWriter()
        w.set("general.architecture", .string(architecture))
        let a = architecture
        for (key, value) in [("context_length", config.maxPositionEmbeddings), ("embedding_length", config.hiddenSize),
                             ("block_count", config.numHiddenLayers), ("feed_forward_length", config.intermediateSize),
                             ("attention.head_count", config.numAttentionHeads), ("attention.head_count_kv", config.numKeyValueHeads),
                             ("attention.key_length", config.headDim), ("attention.value_length", config.headDim)] {
            w.set("\(a).\(key)", .uint32(UInt32(value)))
        }
        w.set("\(a).attention.layer_norm_rms_epsilon", .float32(config.rmsNormEps))
        w.set("\(a).rope.freq_base", .float32(Float(config.ropeTheta)))
        func add(_ name: String, _ hfName: String) throws {
            let info = try source.info(hfName)
            let values = try source.floats(hfName)
            let type: GGMLType = info.shape.count == 2 ? matrixType : .f32
            w.tensors.append(.init(name: name, type: type, dimensions: info.shape.reversed(),
                                   bytes: values.withUnsafeBufferPointer { type.quantize($0.baseAddress!, count: $0.count) }))
        }
        try add("token_embd.weight", "model.embed_tokens.weight")
        try add("output_norm.weight", "model.norm.weight")
        for layer in 0..<config.numHiddenLayers {
            for (hf, gguf) in layerNames.sorted(by: { $0.key < $1.key }) {
                try add("blk.\(layer).\(gguf).weight", "model.layers.\(layer).\(hf).weight")
            }
        }
        try w.write(to: path)
    }

    static func temporaryPath(_ tag: String) -> String {
        NSTemporaryDirectory() + "qwen3-\(tag)-\(getpid())-\(UUID().uuidString).gguf"
    }

    static func logits(_ model: LlamaModel) throws -> [Float] {
        let reference = try Qwen3ReferenceTests.reference()
        let executor = LlamaExecutor(model: model, lora: nil, shape: .init(batch: 2, seqLen: 12, training: false))
        try executor.forward(inputIDs: try Qwen3ReferenceTests.batch(reference).ids, batch: 2, seqLen: 12)
        var out = [Float](repeating: 0, count: 2 * 12 * model.config.vocabSize)
        out.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        return out
    }

    /// Loaded as stored or converted to fp32, the F32 GGUF computes transformers' logits; written back by
    /// GGUFModelWriter (merge's GGUF output), the q/k norms come along and the logits are the same.
    @Test(arguments: [BaseWeightFormat.stored, .dense32])
    func logitsEqualTransformers(_ format: BaseWeightFormat) throws {
        let path = Self.temporaryPath("f32"), written = Self.temporaryPath("written")
        defer { try? FileManager.default.removeItem(atPath: path); try? FileManager.default.removeItem(atPath: written) }
        try Self.writeGGUF(to: path)
        let model = try LlamaLoader.load(directory: URL(fileURLWithPath: path), format: format, precision: .fp32)
        #expect(model.config.qkNorm && model.config.headDim == 32 && model.config.tieWordEmbeddings)
        #expect(GGUFModelLoader.storedRows(config: model.config, projection: .q) == nil)
        let expected = try Qwen3ReferenceTests.reference().floats("base.logits")
        let logits = try Self.logits(model)
        #expect(Qwen3ReferenceTests.relativeError(logits, expected) <= Qwen3ReferenceTests.tolerance)

        try GGUFModelWriter.write(model, base: try GGUFFile(path: path), type: .f32, to: written)
        let file = try GGUFFile(path: written)
        #expect(file.contains("blk.1.attn_q_norm.weight") && file.contains("blk.1.attn_k_norm.weight"))
        let reloaded = try LlamaLoader.load(directory: URL(fileURLWithPath: written), format: format, precision: .fp32)
        #expect(try Self.logits(reloaded) == logits)
    }

    /// Q8_0 linears and embeddings kept in their blocks compute what their dequantized fp32 copy computes,
    /// and stay near transformers' fp32 logits (measured: 2.3 % relative, the Q8_0 rounding of weights
    /// with std 0.2 through two layers and the tied head).
    @Test func q8BlocksEqualTheirDequantizedCopy() throws {
        let path = Self.temporaryPath("q8")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.writeGGUF(to: path, matrixType: .q8_0)
        let url = URL(fileURLWithPath: path)
        let stored = try LlamaLoader.load(directory: url, format: .stored, precision: .fp32)
        #expect(stored.frozenBytes.quantized > 0)
        let logits = try Self.logits(stored)
        let dense = try Self.logits(try LlamaLoader.load(directory: url, format: .dense32, precision: .fp32))
        #expect(Qwen3ReferenceTests.relativeError(logits, dense) <= 1e-5)
        let error = Qwen3ReferenceTests.relativeError(logits, try Qwen3ReferenceTests.reference().floats("base.logits"))
        #expect(error > 0 && error < 5e-2, "Q8_0 relative error \(error)")
    }

    /// `qlora quantize x.gguf` of the F32 GGUF (the Hugging Face weights under llama.cpp's names) writes
    /// every tensor of bitsandbytes' own NF4 checkpoint with the same bytes, q/k norms included, and a
    /// config.json that loads as Qwen3.
    @Test func quantizedGGUFIsBitsAndBytesCheckpoint() throws {
        let path = Self.temporaryPath("to-nf4")
        let output = URL(fileURLWithPath: NSTemporaryDirectory() + "qwen3-gguf-nf4-\(getpid())-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(atPath: path); try? FileManager.default.removeItem(at: output) }
        try Self.writeGGUF(to: path)
        let summary = try GGUFCheckpointQuantizer.quantize(input: path, output: output.path)
        #expect(summary.tensorsQuantized == 14)
        let got = try SafeTensorsFile(path: output.appendingPathComponent("model.safetensors").path)
        let bnb = try SafeTensorsFile(path: FixturePaths.url("qwen3/model-nf4/model.safetensors").path)
        #expect(got.names.sorted() == bnb.names.sorted())
        for name in bnb.names {
            #expect(Array(try got.rawBytes(name)) == Array(try bnb.rawBytes(name)), "\(name)")
        }
        let config = try LlamaConfig.load(directory: output)
        #expect(config.modelType == "qwen3" && config.qkNorm && config.headDim == 32 && config.quantizationConfig != nil)
        let architectures = try JSONValue.parse(data: Data(contentsOf: output.appendingPathComponent("config.json")))["architectures"]
        #expect(architectures == .array([.string("Qwen3ForCausalLM")]))
    }

    /// q/k norm tensors in a GGUF of another architecture would be skipped: refused, by name.
    @Test func qkNormsInALlamaGGUFAreRefused() throws {
        let path = Self.temporaryPath("llama")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.writeGGUF(to: path, architecture: "llama")
        let text = Qwen3ReferenceTests.message { try LlamaLoader.load(directory: URL(fileURLWithPath: path), format: .dense32, precision: .fp32) }
        #expect(text.contains("attn_q_norm") && text.contains("qwen3"), "\(text)")
    }
}
