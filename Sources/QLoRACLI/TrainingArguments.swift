import QLoRA

/// The base-model and LoRA options shared by `train`, `memory` and `generate`, parsed once.
struct TrainingArguments {
    static let valueOptions: Set<String> = [
        "quant", "base-dtype", "compute-dtype", "blocksize", "rank", "alpha", "dropout", "targets", "layers", "init",
        "batch", "seq-len", "modules-to-save",
    ]
    static let flagOptions: Set<String> = ["double-quant", "rslora", "gradient-checkpointing"]

    static let helpText = """
      Base model:
        --quant nf4|fp4|none|keep   4-bit base (QLoRA, default nf4), a dense one (plain LoRA), or keep a
                                 GGUF file's own blocks (Q4_K, Q8_0, ...; the default for a .gguf model)
        --base-dtype bf16|fp32   storage of a dense base with --quant none (default bf16)
        --compute-dtype bf16|fp16|fp32   precision of the dequantized weight tiles (default bf16)
        --blocksize N            4-bit block size (default 64)
        --[no-]double-quant      quantize the absmax values too (default on)
      LoRA (PEFT semantics):
        --rank R                 (default 16)
        --alpha A                lora_alpha (default 2 * rank)
        --dropout P              lora_dropout (default 0)
        --targets LIST           comma-separated q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (Phi-3:
                                 qkv_proj,o_proj,gate_up_proj,down_proj) or all-linear (default)
        --layers LIST            layers_to_transform, e.g. 0,1,2 (default all)
        --rslora                 scale by alpha/sqrt(r) instead of alpha/r
        --init kaiming|gaussian  init_lora_weights (default kaiming: PEFT's default)
        --modules-to-save LIST   also train embed_tokens and/or lm_head in full (untied models), saved with the adapter
      Shape:
        --batch B                sequences per micro-batch (default 1)
        --seq-len T              tokens per sequence (default 512)
        --[no-]gradient-checkpointing   recompute each layer in backward (default off)
    """

    var format: BaseWeightFormat
    var precision: ComputePrecision
    var lora: LoRAConfig
    var batch: Int
    var seqLen: Int
    var gradientCheckpointing: Bool

    init(_ args: Arguments) throws {
        let command = args.command
        let model = args.string("model") ?? args.positionals.first ?? ""
        let quant = try args.choice("quant", ["nf4", "fp4", "none", "keep"], default: model.lowercased().hasSuffix(".gguf") ? "keep" : "nf4")
        let blocksize = try args.int("blocksize", default: 64)
        guard blocksize >= 32, blocksize <= 4096, blocksize & (blocksize - 1) == 0 else {
            throw CLIError.badValue(command: command, option: "blocksize", value: "\(blocksize)", expected: "a power of two from 32 to 4096")
        }
        switch quant {
        case "keep":
            format = .stored
        case "none":
            format = try args.choice("base-dtype", ["bf16", "fp32"], default: "bf16") == "fp32" ? .dense32 : .denseBF16
        default:
            format = .quantized(QuantizationOptions(quantType: quant == "fp4" ? .fp4 : .nf4, blocksize: blocksize,
                                                    doubleQuant: args.flag("double-quant", default: true)))
        }
        precision = ComputePrecision(rawValue: try args.choice("compute-dtype", ["bf16", "fp16", "fp32"], default: "bf16"))!
        let rank = try args.int("rank", default: 16, in: 1...ShapeLimits.maxRank, expected: "an integer from 1 to \(ShapeLimits.maxRank)")
        var layers: [Int]?
        if let list = args.list("layers") {
            layers = try list.map { item in
                guard let layer = Int(item) else { throw CLIError.badValue(command: command, option: "layers", value: item, expected: "layer numbers") }
                return layer
            }
        }
        lora = LoRAConfig(r: rank, loraAlpha: try args.double("alpha", default: Double(2 * rank), in: Double.leastNonzeroMagnitude...ShapeLimits.maxAlpha,
                                                             expected: "a positive number up to \(Int(ShapeLimits.maxAlpha)) (lora_alpha; the default is 2 x rank)"),
                          loraDropout: try args.double("dropout", default: 0, in: 0...0.999_999, expected: "a probability in [0, 1)"), targetModules: args.list("targets") ?? ["all-linear"],
                          layersToTransform: layers, useRSLoRA: args.flag("rslora"),
                          initLoRAWeights: try args.choice("init", ["kaiming", "gaussian"], default: "kaiming") == "gaussian" ? .gaussian : .kaiming,
                          modulesToSave: args.list("modules-to-save") ?? [])
        do { try lora.validate() } catch { throw CLIError.failed("qlora \(command): \(error)") }
        batch = try args.int("batch", default: 1, in: 1...ShapeLimits.maxBatch, expected: "an integer from 1 to \(ShapeLimits.maxBatch)")
        seqLen = try args.int("seq-len", default: 512, in: 2...ShapeLimits.maxSeqLen, expected: "an integer from 2 to \(ShapeLimits.maxSeqLen)")
        guard batch * seqLen <= ShapeLimits.maxTokensPerBatch else {
            throw CLIError.badValue(command: command, option: "batch", value: "\(batch)", expected: "at most \(ShapeLimits.maxTokensPerBatch) tokens per micro-batch (--batch x --seq-len = \(batch * seqLen)); the sizes would overflow")
        }
        gradientCheckpointing = args.flag("gradient-checkpointing")
    }
}
