import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// End-to-end checks against PyTorch + transformers + PEFT (+ bitsandbytes) on the tiny Llama:
/// logits, loss, hidden states, LoRA gradients, AdamW step 1 state and the parameters after 3 steps.
@Suite struct ModelReferenceTests {
    /// How each reference case was produced (see Fixtures/tiny-llama-cases/README.md).
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var modelDir: String
        var format: BaseWeightFormat
        var precision: ComputePrecision
        /// The references computed in fp32 with bf16-rounded weights: the fp32 kernel does exactly that.
        var kernel: GemmKernel = .fp32
        var clip: Double? = nil
        /// Tolerances: fp32 cases are tight; bf16/NF4 ones are explained in docs/testing.md.
        var logitsTolerance: Float = 1e-4
        var lossTolerance: Float = 1e-5
        var gradTolerance: Float = 1e-5
        var paramTolerance: Float = 1e-5
        var description: String { kernel == .fp32 ? name : "\(name) on \(kernel.rawValue)" }
    }

    static let nf4 = BaseWeightFormat.quantized(QuantizationOptions())

    static let cases: [Case] = [
        Case(name: "untied_fp32", modelDir: "tiny-llama/untied-fp32", format: .dense32, precision: .fp32),
        Case(name: "tied_fp32", modelDir: "tiny-llama/tied-fp32", format: .dense32, precision: .fp32),
        Case(name: "untied_fp32_rslora", modelDir: "tiny-llama/untied-fp32", format: .dense32, precision: .fp32),
        Case(name: "untied_fp32_qv_layer1", modelDir: "tiny-llama/untied-fp32", format: .dense32, precision: .fp32),
        Case(name: "untied_fp32_clip", modelDir: "tiny-llama/untied-fp32", format: .dense32, precision: .fp32, clip: 1.0),
        // NF4 quantized on load, dequantized to fp32: the same weights the reference dequantized.
        Case(name: "untied_nf4", modelDir: "tiny-llama/untied-fp32", format: nf4, precision: .fp32),
        Case(name: "untied_nf4_bf16w", modelDir: "tiny-llama/untied-fp32", format: nf4, precision: .bf16),
        // bitsandbytes' own checkpoint; its base matmul ran in bf16 (inputs and outputs rounded),
        // ours keeps fp32 activations with bf16 weights. The reference README measured this very gap
        // between bnb and untied_nf4_bf16w: logits 0.039, loss 2.3e-3, grads 2.4e-3, step-3 params 5.7e-3.
        Case(name: "untied_qlora_bnb", modelDir: "tiny-llama/untied-nf4", format: nf4, precision: .bf16,
             logitsTolerance: 0.1, lossTolerance: 5e-3, gradTolerance: 5e-3, paramTolerance: 1e-2),
        // The same on the bf16 GEMM (SIMD where the CPU has it, else its bit-identical twin): activations
        // rounded to bf16 as bnb's matmul does. Measured: step-1 loss 1.5e-4 from bnb (fp32 kernel 2.3e-3),
        // logits 0.036 (0.039), grads 1.8e-3 (2.4e-3); docs/testing.md.
        Case(name: "untied_qlora_bnb", modelDir: "tiny-llama/untied-nf4", format: nf4, precision: .bf16,
             kernel: GemmKernel.hardwareHasBF16 ? .bf16 : .bf16Reference,
             logitsTolerance: 0.1, lossTolerance: 5e-3, gradTolerance: 5e-3, paramTolerance: 1e-2),
    ]

    struct Loaded {
        var model: LlamaModel
        var lora: LoRAAdapters
        var reference: SafeTensorsFile
        var inputIDs: [Int32]
        var labels: [Int32]
    }

    static func load(_ c: Case) throws -> Loaded {
        let model = try LlamaLoader.load(directory: FixturePaths.url(c.modelDir), format: c.format, precision: c.precision)
        model.useKernel(c.kernel)
        let caseDir = FixturePaths.url("tiny-llama-cases/\(c.name)")
        // The clip case reuses untied_fp32's initial adapter.
        var initDir = caseDir.appendingPathComponent("adapter_init")
        if !FileManager.default.fileExists(atPath: initDir.path) {
            initDir = FixturePaths.url("tiny-llama-cases/untied_fp32/adapter_init")
        }
        let config = try PEFTAdapterIO.loadConfig(directory: initDir)
        let lora = try LoRAAdapters(modelConfig: model.config, config: config, training: true)
        try PEFTAdapterIO.loadWeights(into: lora, directory: initDir)
        var reference = try SafeTensorsFile(path: caseDir.appendingPathComponent("tensors.safetensors").path)
        if !reference.contains("input_ids") {
            reference = try SafeTensorsFile(path: FixturePaths.url("tiny-llama-cases/untied_fp32/tensors.safetensors").path)
        }
        let caseTensors = try SafeTensorsFile(path: caseDir.appendingPathComponent("tensors.safetensors").path)
        return Loaded(model: model, lora: lora, reference: caseTensors,
                      inputIDs: try reference.integers("input_ids").map { Int32($0) },
                      labels: try reference.integers("labels").map { Int32($0) })
    }

    @Test(arguments: cases)
    func forwardMatchesTransformers(_ c: Case) throws {
        let loaded = try Self.load(c)
        let executor = LlamaExecutor(model: loaded.model, lora: loaded.lora, shape: .init(batch: 2, seqLen: 12, training: false))
        try executor.forward(inputIDs: loaded.inputIDs, batch: 2, seqLen: 12)
        var logits = [Float](repeating: 0, count: 2 * 12 * loaded.model.config.vocabSize)
        logits.withUnsafeMutableBufferPointer { executor.logits(into: $0.baseAddress!) }
        let reference = loaded.reference
        guard reference.contains("logits") else { return }   // clip case: identical to untied_fp32
        let expectedLogits = try reference.floats("logits")
        let result = compare(logits, expectedLogits, tolerance: c.logitsTolerance)
        #expect(result.maxDiff <= c.logitsTolerance, "\(c.name) logits: \(result.report)")
        let final = Array(UnsafeBufferPointer(start: executor.hiddenState(2), count: 2 * 12 * 96))
        let hidden = compare(final, try reference.floats("hidden_states.2"), tolerance: c.logitsTolerance)
        #expect(hidden.maxDiff <= c.logitsTolerance, "\(c.name) final hidden: \(hidden.report)")
        let loss = executor.loss(labels: loaded.labels)
        let expectedLoss = try reference.floats("loss")[0]
        #expect(loss.count == 16)
        #expect(abs(Float(loss.sum / Double(loss.count)) - expectedLoss) <= c.lossTolerance,
                "\(c.name) loss \(loss.sum / Double(loss.count)) vs \(expectedLoss)")
    }

    @Test(arguments: cases, [false, true])
    func gradientsAndAdamWMatchPEFT(_ c: Case, checkpointing: Bool) throws {
        let loaded = try Self.load(c)
        let executor = LlamaExecutor(model: loaded.model, lora: loaded.lora,
                                     shape: .init(batch: 2, seqLen: 12, gradientCheckpointing: checkpointing))
        let parameters = loaded.lora.parameters
        var optimizer = AdamW(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
        let reference = loaded.reference
        let metaURL = FixturePaths.url("tiny-llama-cases/\(c.name)/meta.json")
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: metaURL)) as! [String: Any]
        let losses = (meta["losses_before_step_1_2_3_and_after_3"] as! [NSNumber]).map(\.floatValue)

        for step in 1...3 {
            parameters.zeroGradients()
            let loss = try executor.lossAndGradients(inputIDs: loaded.inputIDs, labels: loaded.labels, batch: 2, seqLen: 12)
            let mean = Float(loss.sum / Double(loss.count))
            #expect(abs(mean - losses[step - 1]) <= c.lossTolerance * Float(step),
                    "\(c.name) step \(step) loss \(mean) vs \(losses[step - 1])")
            if step == 1, reference.contains("grad." + parameters.entries[0].key) {
                for entry in parameters.entries {
                    let grad = parameters.values(entry, section: 1)
                    let result = compare(grad, try reference.floats("grad." + entry.key), tolerance: c.gradTolerance)
                    #expect(result.maxDiff <= c.gradTolerance, "\(c.name) grad \(entry.key): \(result.report)")
                }
            }
            if let clip = c.clip { GradientClipping.clip(parameters, maxNorm: clip) }
            optimizer.update(parameters)
            if step == 1 {
                for entry in parameters.entries where reference.contains("step1_exp_avg." + entry.key) {
                    let m = parameters.values(entry, section: 2)
                    let v = parameters.values(entry, section: 3)
                    let expectedM = try reference.floats("step1_exp_avg." + entry.key)
                    let expectedV = try reference.floats("step1_exp_avg_sq." + entry.key)
                    // exp_avg = 0.1 g: relative to the gradient scale.
                    let mResult = compare(m, expectedM, tolerance: c.gradTolerance * 0.1 + 1e-9)
                    #expect(mResult.maxDiff <= c.gradTolerance * 0.1 + 1e-9, "\(c.name) exp_avg \(entry.key): \(mResult.report)")
                    let vScale = expectedV.map(abs).max() ?? 1
                    let vResult = compare(v, expectedV, tolerance: max(1e-4 * vScale, 1e-12))
                    #expect(vResult.maxDiff <= max(c.gradTolerance * 10 * vScale.squareRoot(), 1e-4 * vScale, 1e-12),
                            "\(c.name) exp_avg_sq \(entry.key): \(vResult.report)")
                }
            }
        }
        for entry in parameters.entries where reference.contains("step3." + entry.key) {
            let p = parameters.values(entry)
            let expected = try reference.floats("step3." + entry.key)
            // AdamW moves an element with |grad| near rounding noise by up to lr per step in either
            // direction; such elements are compared with 3 * lr slack (see docs/testing.md).
            var worst: Float = 0
            var worstIndex = 0
            for i in p.indices {
                let d = abs(p[i] - expected[i])
                if d > worst { worst = d; worstIndex = i }
            }
            let noisy = (0..<p.count).filter { abs(p[$0] - expected[$0]) > c.paramTolerance }.count
            #expect(noisy <= max(2, p.count / 200) && worst <= max(3.1e-3, c.paramTolerance),
                    "\(c.name) step3 \(entry.key): \(noisy) elements beyond \(c.paramTolerance), worst \(worst) at \(worstIndex)")
        }
    }
}
