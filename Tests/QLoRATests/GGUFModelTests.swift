import CQLoRAKernels
import Foundation
import GGUF
import SafeTensors
import Testing
@testable import QLoRA

/// Models and tokenizers from GGUF files against transformers loading the same files
/// (Fixtures/gguf-model, made by scripts/make-gguf-model-fixtures.py).
@Suite struct GGUFModelTests {
    static func logits(_ model: LlamaModel, ids: [Int32]) throws -> [Float] {
        let executor = LlamaExecutor(model: model, lora: nil, shape: .init(batch: 1, seqLen: ids.count, training: false))
        try executor.forward(inputIDs: ids, batch: 1, seqLen: ids.count)
        var out = [Float](repeating: 0, count: ids.count * model.config.vocabSize)
        out.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        return out
    }

    /// Kept in its blocks (Q8_0, Q4_1, Q5_0, Q5_1, Q4_0, F16 linears; q/k rows permuted by the converter)
    /// or dequantized to a dense fp32 base: the logits transformers computes from the same file.
    @Test(arguments: ["tiny-untied", "tiny-tied"], [BaseWeightFormat.stored, .dense32])
    func logitsEqualTransformers(_ name: String, _ format: BaseWeightFormat) throws {
        let reference = try SafeTensorsFile(path: FixturePaths.url("gguf-model/logits.safetensors").path)
        let ids = try reference.integers("ids").map { Int32($0) }
        let model = try LlamaLoader.load(directory: FixturePaths.url("gguf-model/\(name).gguf"), format: format, precision: .fp32)
        #expect(model.config.tieWordEmbeddings == (name == "tiny-tied"))
        let result = compare(try Self.logits(model, ids: ids), try reference.floats(name), tolerance: 1e-4)
        #expect(result.maxDiff <= 1e-4, "\(name) \(format): \(result.report)")
        if format == .stored && name == "tiny-untied" {
            // The quantized linears stay in their blocks: far fewer bytes than fp32.
            #expect(model.frozenBytes.quantized > 0 && model.frozenBytes.quantized < model.config.decoderLinearParameterCount * 2)
        }
    }

    /// A `smollm3` GGUF (llama.cpp's converter: q/k permuted as for llama; no RoPE on every 4th layer,
    /// which llama.cpp hard-codes; Q8_0 and F32 tensors; Fixtures/gguf-model/tiny-smollm3.gguf): the logits
    /// and loss of transformers' SmolLM3ForCausalLM with the same weights, kept in blocks or dense.
    @Test(arguments: [BaseWeightFormat.stored, .dense32])
    func smolLM3ModelEqualsTransformers(_ format: BaseWeightFormat) throws {
        let reference = try SafeTensorsFile(path: FixturePaths.url("gguf-model/smollm3-reference.safetensors").path)
        let model = try LlamaLoader.load(directory: FixturePaths.url("gguf-model/tiny-smollm3.gguf"), format: format, precision: .fp32)
        #expect(model.config.modelType == "smollm3")
        #expect((0..<4).map(model.config.usesRoPE(layer:)) == [true, true, true, false])
        let ids = try reference.integers("ids").map { Int32($0) }
        let result = compare(try Self.logits(model, ids: ids), try reference.floats("logits"), tolerance: 1e-4)
        #expect(result.maxDiff <= 1e-4, "\(format): \(result.report)")
    }

    /// A Llama 3.1-style GGUF: llama3 RoPE scaling stored as `rope_freqs.weight`, one divisor per frequency
    /// (Fixtures/gguf-model/tiny-rope-freqs.gguf): transformers' logits with the llama3 rope_parameters on the
    /// same weights (4.2 away from the unscaled model's); the factors survive a merged GGUF and config.json.
    @Test func ropeFrequencyFactorsAreLlama3Scaling() throws {
        let reference = try SafeTensorsFile(path: FixturePaths.url("gguf-model/rope-freqs-reference.safetensors").path)
        let url = FixturePaths.url("gguf-model/tiny-rope-freqs.gguf")
        let model = try LlamaLoader.load(directory: url, format: .dense32, precision: .fp32)
        let factors = try reference.floats("rope_factors").map(Double.init)
        #expect(model.config.ropeScaling?.shortFactor == factors && model.config.ropeScaling?.longFactor == factors)
        let ids = try reference.integers("ids").map { Int32($0) }
        let logits = try Self.logits(model, ids: ids)
        let result = compare(logits, try reference.floats("logits"), tolerance: 1e-4)
        #expect(result.maxDiff <= 1e-4, "\(result.report)")

        let path = NSTemporaryDirectory() + "rope-freqs-\(getpid())-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try GGUFModelWriter.write(model, base: try GGUFFile(path: url.path), type: .f32, to: path)
        #expect(try GGUFFile(path: path).floats("rope_freqs.weight") == (try reference.floats("rope_factors")))
        let json = try PythonJSON(LlamaWriter.minimalConfig(model.config, dtype: "float32")).render(indent: 2, sortKeys: true)
        let reread = try LlamaConfig.decode(Data(json.utf8), path: "config.json")
        // The factors are fp32 values (JSON text round trips them as such).
        #expect(reread.ropeScaling?.shortFactor.map(Float.init) == (try reference.floats("rope_factors")))
        #expect(reread.ropeScaling?.longFactor.map(Float.init) == (try reference.floats("rope_factors")))
        #expect(reread.ropeScaling?.originalMaxPositions == model.config.maxPositionEmbeddings && reread.ropeScaling?.attentionFactor == 1)
    }

    /// A rope_freqs tensor of the wrong length, or with a factor that is not positive, is refused naming it.
    @Test(arguments: [[Float](repeating: 1, count: 15), [Float](repeating: 1, count: 15) + [0], [Float](repeating: 1, count: 15) + [.nan]])
    func badRopeFrequencyFactorsAreRefused(_ factors: [Float]) throws {
        let source = try GGUFFile(path: FixturePaths.url("gguf-model/tiny-rope-freqs.gguf").path)
        var writer = GGUFWriter()
        for key in source.metadataKeys { writer.set(key, source.metadata[key]!) }
        for info in source.tensors {
            let bytes = info.name == "rope_freqs.weight" ? factors.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
                : Array(try source.data(info.name))
            writer.tensors.append(.init(name: info.name, type: info.type!, dimensions: info.name == "rope_freqs.weight" ? [factors.count] : info.dimensions, bytes: bytes))
        }
        let path = NSTemporaryDirectory() + "bad-rope-freqs-\(getpid())-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try writer.write(to: path)
        #expect { try LlamaLoader.load(directory: URL(fileURLWithPath: path), format: .dense32, precision: .fp32) } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("rope_freqs.weight")
        }
    }

    /// The memory plan of a GGUF base counts what the loader holds: linears in their blocks (`keep`) or
    /// converted to NF4, and the embedding table and untied output in their blocks either way.
    @Test(arguments: ["tiny-untied", "tiny-tied", "tiny-kquant"], [BaseWeightFormat.stored, .quantized(QuantizationOptions())])
    func memoryPlanCountsTheLoadedFrozenBytes(_ name: String, _ format: BaseWeightFormat) throws {
        let url = FixturePaths.url("gguf-model/\(name).gguf")
        let file = try GGUFFile(path: url.path)
        let config = try GGUFModelLoader.config(file)
        var options = MemoryPlan.Options(baseFormat: format, lora: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]), seqLen: 8)
        options.storedWeights = try GGUFModelLoader.storedBytes(file, config: config)
        let plan = try MemoryPlan(config: config, options: options)
        let model = try LlamaLoader.load(directory: url, format: format, precision: .bf16)
        #expect(plan.breakdown[.quantizedWeights] == model.frozenBytes.quantized, "\(name) \(format)")
        #expect(plan.breakdown[.otherFrozenWeights] == model.frozenBytes.other, "\(name) \(format)")
    }

    /// A K-quant GGUF (Q4_K, Q5_K, Q6_K and Q5_0 linears, Q4_K embeddings, Q6_K output; q/k permuted,
    /// Fixtures/gguf-model/tiny-kquant.gguf): transformers' logits, and its greedy continuation from
    /// KV-cache decoding, whose one-row products run the fused K-quant kernels.
    @Test(arguments: [BaseWeightFormat.stored, .dense32])
    func kQuantModelEqualsTransformers(_ format: BaseWeightFormat) throws {
        let reference = try SafeTensorsFile(path: FixturePaths.url("gguf-model/kquant-reference.safetensors").path)
        let model = try LlamaLoader.load(directory: FixturePaths.url("gguf-model/tiny-kquant.gguf"), format: format, precision: .fp32)
        let ids = try reference.integers("ids").map { Int32($0) }
        let result = compare(try Self.logits(model, ids: ids), try reference.floats("logits"), tolerance: 1e-4)
        #expect(result.maxDiff <= 1e-4, "\(format): \(result.report)")
        if format == .stored {
            let weights = model.layers.flatMap { $0.linears.map(\.weight) } + [model.lmHead.weight]
            let types = Set(weights.compactMap { ($0 as? GGUFWeight)?.type })
            #expect(types == [.q4_K, .q5_K, .q6_K, .q5_0])
            #expect(weights.allSatisfy { ($0 as? GGUFWeight)?.usesFusedKernel == true })
        }
        // Greedy decoding: the top two logits differ by at least min_gap at every step, far above 1e-4.
        #expect(try reference.floats("min_gap")[0] > 1e-2)
        let generator = Generator(model: model, lora: nil, maxSeqLen: 32)
        let output = try generator.generate(prompt: try reference.integers("prompt").map { Int32($0) }, maxNewTokens: 12)
        #expect(output.map(Int.init) == (try reference.integers("greedy")))
    }

    /// Decoding a K-quant GGUF through the fused kernels gives the bits of the row-group path it
    /// replaces (dequantize rows, then the dense kernels): every step's logits, fp32 and bf16 compute.
    @Test(arguments: [ComputePrecision.fp32, .bf16])
    func kQuantFusedDecodingEqualsRowGroups(_ precision: ComputePrecision) throws {
        func decode(fused: Bool) throws -> [[Float]] {
            let model = try LlamaLoader.load(directory: FixturePaths.url("gguf-model/tiny-kquant.gguf"), format: .stored, precision: precision)
            for weight in model.layers.flatMap({ $0.linears.map(\.weight) }) + [model.lmHead.weight] {
                try #require(weight as? GGUFWeight).usesFusedKernel = fused
            }
            var steps: [[Float]] = []
            _ = try Generator(model: model, lora: nil, maxSeqLen: 32).generate(prompt: [1, 37, 312, 9], maxNewTokens: 10) { steps.append($1) }
            return steps
        }
        let fused = try decode(fused: true), rowGroups = try decode(fused: false)
        #expect(fused.count == 10 && fused.map { $0.map(\.bitPattern) } == rowGroups.map { $0.map(\.bitPattern) })
    }

    /// `qlora quantize x.gguf` writes the bitsandbytes directory of exactly the NF4 weights the GGUF
    /// quantizes to on load (`--quant nf4`): the two models give bit-identical logits.
    @Test func quantizeWritesTheBitsAndBytesDirectoryOfTheGGUF() throws {
        let output = URL(fileURLWithPath: NSTemporaryDirectory() + "gguf-quantize-\(getpid())-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let input = FixturePaths.url("gguf-model/tiny-untied.gguf")
        let summary = try GGUFCheckpointQuantizer.quantize(input: input.path, output: output.path)
        #expect(summary.tensorsQuantized == 14)
        let written = try LlamaLoader.load(directory: output, format: .dense32, precision: .fp32)
        let onLoad = try LlamaLoader.load(directory: input, format: .quantized(QuantizationOptions()), precision: .fp32)
        let ids: [Int32] = [1, 17, 300, 5, 999, 42]
        // The same NF4 codes; the Q8_0 table is fp32 in the directory, so only the summation of the
        // lm_head product can differ (tiles vs the dense matrix).
        let result = compare(try Self.logits(written, ids: ids), try Self.logits(onLoad, ids: ids), tolerance: 1e-5)
        #expect(result.maxDiff <= 1e-5, "\(result.report)")
        let config = try String(contentsOf: output.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(config.contains("\"quantization_config\"") && config.contains("nf4"))
    }

    /// The LoRA GGUF llama.cpp loads: its keys, alpha (scaling x r), shapes in ggml order, A as PEFT
    /// stores it, and B with q/k rows moved exactly where the converter moved the base's rows.
    @Test func exportedAdapterIsLlamaCppsLoRAGGUF() throws {
        let config = try LlamaConfig.load(directory: FixturePaths.url("gguf-model/tiny-untied.gguf"))
        let adapters = try LoRAAdapters(modelConfig: config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj"]))
        adapters.initialize(seed: 3)
        var generator = SeededGenerator(seed: 4)
        for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
            adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() })
        }
        let path = NSTemporaryDirectory() + "adapter-\(getpid())-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try GGUFAdapterExport.writer(adapters, architecture: "llama").write(to: path)
        let file = try GGUFFile(path: path)
        #expect(file["general.type"] == .string("adapter") && file["adapter.type"] == .string("lora"))
        #expect(file["adapter.lora.alpha"] == .float32(8) && file["general.architecture"] == .string("llama"))
        #expect(file.tensors.count == 2 * 2 * config.numHiddenLayers)
        let prefix = LoRAAdapters.keyPrefix(layer: 1, projection: .q)
        let a = try file.info("blk.1.attn_q.weight.lora_a"), b = try file.info("blk.1.attn_q.weight.lora_b")
        #expect(a.dimensions == [config.hiddenSize, 4] && b.dimensions == [4, config.queryDim])
        #expect(try file.floats(a.name) == adapters.parameters.values(adapters.parameters.entry(prefix + ".lora_A.weight")!))
        let peftB = adapters.parameters.values(adapters.parameters.entry(prefix + ".lora_B.weight")!), ggufB = try file.floats(b.name)
        let rows = try #require(GGUFModelLoader.storedRows(config: config, projection: .q))
        for r in 0..<config.queryDim { #expect(Array(ggufB[(Int(rows[r]) * 4)..<(Int(rows[r]) * 4 + 4)]) == Array(peftB[(r * 4)..<(r * 4 + 4)])) }
        // v is not permuted.
        let vPrefix = LoRAAdapters.keyPrefix(layer: 0, projection: .v)
        #expect(try file.floats("blk.0.attn_v.weight.lora_b") == adapters.parameters.values(adapters.parameters.entry(vPrefix + ".lora_B.weight")!))
    }

    /// A merged model written as GGUF (q/k rows permuted back) reads back as the same model.
    @Test func mergedModelWrittenAsGGUFReadsBackTheSame() throws {
        let base = FixturePaths.url("gguf-model/tiny-untied.gguf")
        let model = try LlamaLoader.load(directory: base, format: .dense32, precision: .fp32)
        let adapters = try LoRAAdapters(modelConfig: model.config, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: ["all-linear"]))
        adapters.initialize(seed: 5)
        var generator = SeededGenerator(seed: 6)
        for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
            adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.1 })
        }
        let merged = try LoRAMerge.merge(model: model, adapters: adapters)
        let path = NSTemporaryDirectory() + "merged-\(getpid())-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try GGUFModelWriter.write(merged, base: try GGUFFile(path: base.path), type: .f32, to: path)
        let reread = try LlamaLoader.load(directory: URL(fileURLWithPath: path), format: .dense32, precision: .fp32)
        let ids: [Int32] = [1, 17, 300, 5, 999, 42]
        let expected = try Self.logits(merged, ids: ids)
        #expect(try Self.logits(reread, ids: ids) == expected)
        #expect(compare(expected, try Self.logits(model, ids: ids), tolerance: 1e-3).maxDiff > 1e-3)  // the adapter mattered
        let file = try GGUFFile(path: path)
        #expect(file["general.file_type"] == .uint32(0) && file["llama.block_count"] == .uint32(2))
    }

    /// The decode products of a GGUF weight: the tile values' dot products (fp32), and on the bf16 kernel
    /// bit for bit what the dense bf16 kernel gives on writeBFloat16's values; any row range, permuted rows.
    @Test(arguments: [("tiny-untied", "blk.0.attn_q.weight"), ("tiny-untied", "blk.1.ffn_down.weight"), ("tiny-untied", "blk.0.ffn_gate.weight"),
                      ("tiny-kquant", "blk.0.attn_q.weight"), ("tiny-kquant", "blk.0.attn_k.weight"), ("tiny-kquant", "blk.0.ffn_down.weight"),
                      ("tiny-kquant", "blk.1.attn_k.weight")])
    func matrixVectorEqualsTheTiles(_ fixture: String, _ name: String) throws {
        let file = try GGUFFile(path: FixturePaths.url("gguf-model/\(fixture).gguf").path)
        let config = try GGUFModelLoader.config(file)
        let projection: Projection? = name.contains("attn_q") ? .q : name.contains("attn_k") ? .k : nil
        let weight = try GGUFWeight(file: file, tensor: name, storedRow: projection.flatMap { GGUFModelLoader.storedRows(config: config, projection: $0) })
        let o = weight.outFeatures, i = weight.inFeatures, rows = 3..<(o - 5)
        var generator = SeededGenerator(seed: 9)
        let x = (0..<i).map { _ in generator.normal() }
        var tile = [Float](repeating: 0, count: o * i)
        weight.writeTile(rows: 0..<o, into: &tile, precision: .fp32)
        var y = [Float](repeating: .nan, count: rows.count)
        weight.matrixVector(y: &y, x: x, rows: rows, precision: .fp32)
        for (k, r) in rows.enumerated() {
            let exact = (0..<i).reduce(0.0) { $0 + Double(tile[r * i + $1]) * Double(x[$1]) }
            #expect(abs(Double(y[k]) - exact) <= 1e-4 * max(1, abs(exact)), "\(name) row \(r)")
        }
        let ldx = (i + 31) / 32 * 16, ld = (i + 1) / 2 * 2
        var pairs = [UInt32](repeating: 0, count: ldx)
        pairs.withUnsafeMutableBytes { qlora_bf16_from_f32_rows(GemmKernel.fastestLevel, $0.baseAddress!.assumingMemoryBound(to: UInt16.self), 2 * ldx, x, i, 1, i) }
        var bits = [UInt16](repeating: 0, count: o * ld)
        weight.writeBFloat16(rows: 0..<o, columns: 0..<i, into: &bits, ld: ld)
        for level in Set([Int32(0), GemmKernel.fastestLevel]).sorted() {
            var yb = [Float](repeating: .nan, count: rows.count), expected = [Float](repeating: .nan, count: rows.count)
            weight.matrixVectorBF16(y: &yb, ldy: rows.count, x: pairs, ldx: ldx, vectors: 1, rows: rows, level: level)
            bits.withUnsafeBufferPointer { qlora_gemv_bf16_bf16dot(level, &expected, pairs, rows.count, i, $0.baseAddress! + rows.lowerBound * ld, ld) }
            #expect(yb.map(\.bitPattern) == expected.map(\.bitPattern), "\(name) level \(level)")
        }
    }

    /// Without the q/k un-permutation the logits are wrong: the permutation is what the test checks.
    @Test func storedRowsInvertTheConvertersPermutation() throws {
        var config = LlamaConfig(vocabSize: 8, hiddenSize: 16, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 2,
                                 numKeyValueHeads: 1, headDim: 8)
        let rows = try #require(GGUFModelLoader.storedRows(config: config, projection: .q))
        // convert_hf_to_gguf's permute on row indices: HF row r lands at rows[r].
        let hf = Array(0..<16)
        var permuted: [Int] = []
        for h in 0..<2 { for i in 0..<4 { for j in 0..<2 { permuted.append(hf[h * 8 + j * 4 + i]) } } }
        for r in 0..<16 { #expect(permuted[Int(rows[r])] == r) }
        #expect(GGUFModelLoader.storedRows(config: config, projection: .v) == nil)
        config.modelType = "qwen2"
        #expect(GGUFModelLoader.storedRows(config: config, projection: .q) == nil)
    }

    /// The tokenizer rebuilt from GGUF metadata gives transformers' ids for the same file (and the ids of
    /// SmolLM2's own tokenizer.json), and keeps the chat template and special tokens.
    @Test func tokenizerFromMetadataEqualsTransformers() throws {
        let tokenizer = try Tokenizer(directory: FixturePaths.url("gguf-model/smollm2-tokenizer.gguf"))
        let data = try Data(contentsOf: FixturePaths.url("gguf-model/tokenizer_ids.json"))
        let cases = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["cases"] as? [[String: Any]])
        #expect(cases.count >= 40)
        for c in cases {
            let text = c["text"] as! String
            let expected = (c["transformers_gguf_ids"] as! [NSNumber]).map(\.int32Value)
            #expect(tokenizer.encode(text) == expected, "\(text.debugDescription)")
            #expect((c["tokenizer_json_ids"] as! [NSNumber]).map(\.int32Value) == expected)
        }
        #expect(tokenizer.eosToken == "<|im_end|>" || tokenizer.eosToken == "<|endoftext|>")
        #expect(tokenizer.chatTemplateSource?.contains("im_start") == true)
        #expect(tokenizer.isSpecialToken(try #require(tokenizer.tokenID("<|im_start|>"))))
        #expect(tokenizer.encode("<|im_start|>user") == [tokenizer.tokenID("<|im_start|>")!, tokenizer.tokenID("user")!])
    }
}
