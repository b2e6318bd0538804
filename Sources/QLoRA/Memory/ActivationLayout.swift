/// Where every activation and scratch buffer of a forward/backward pass lives in the activation arena.
/// The SAME function lays out the arena the executor allocates and counts the bytes the memory plan
/// reports, so plan and measurement cannot drift apart.
///
/// Region names start with `saved.` (activations kept from forward for backward) or `work.`
/// (workspace: dequant tiles, attention scratch, logits chunk, activation gradients).
///
/// Dims: B batch, T sequence, N = B*T, C hidden, F intermediate, H query heads, KV key/value heads,
/// D head dim, V vocab, r LoRA rank.
public struct ActivationLayout {
    public struct Shape: Sendable, Equatable {
        public var batch: Int
        public var seqLen: Int
        public var gradientCheckpointing: Bool
        /// Rows of W dequantized per tile; 0 = automatic (`automaticTileRows`).
        public var tileRows: Int
        /// Rows of the lm_head + loss computed at once (the full logits are never materialized).
        public var logitsChunkRows: Int
        /// False for inference: no gradient buffers.
        public var training: Bool

        public init(batch: Int, seqLen: Int, gradientCheckpointing: Bool = false, tileRows: Int = 0,
                    logitsChunkRows: Int = 64, training: Bool = true) {
            self.batch = batch
            self.seqLen = seqLen
            self.gradientCheckpointing = gradientCheckpointing
            self.tileRows = tileRows
            self.logitsChunkRows = logitsChunkRows
            self.training = training
        }
    }

    /// Offsets of one decoder layer's buffers. With gradient checkpointing every field but `x` is shared
    /// by all layers (recomputed in backward).
    public struct LayerSlots {
        public var x = 0        /// (N, C) layer input
        public var rstd1 = 0    /// (N)
        public var h1 = 0       /// (N, C) input_layernorm output (shared workspace, recomputed in backward)
        public var q = 0        /// (N, H*D) after RoPE (with q/k norm: normed, then roped; shared, recomputed from qProj)
        public var k = 0        /// (N, KV*D) after RoPE (likewise)
        /// (N, H*D) / (N, KV*D) projection outputs: with q/k norm (Qwen3) the norms' saved inputs, else q and k.
        public var qProj = 0
        public var kProj = 0
        /// (N*H) / (N*KV) rstd of the per-head q/k norms, -1 without them.
        public var qNormRstd = -1
        public var kNormRstd = -1
        public var v = 0        /// (N, KV*D)
        public var rowStats = 0 /// (B, H, T, 2) softmax max and sum per query row
        public var attn = 0     /// (N, H*D) attention output, o_proj input
        public var xMid = 0     /// (N, C) x + attention
        /// Sandwich norms (Gemma 3): (N, C) o_proj / down_proj outputs (the post-norms' inputs) and
        /// (N) their rstd; -1 without them.
        public var attnOut = -1
        public var rstdPostAttention = -1
        public var mlpOut = -1
        public var rstdPostMLP = -1
        public var rstd2 = 0    /// (N)
        public var h2 = 0       /// (N, C) post_attention_layernorm output (same buffer as h1)
        public var gate = 0     /// (N, F)
        public var up = 0       /// (N, F)
        public var act = 0      /// (N, F) silu(gate) * up, down_proj input (shared workspace, recomputed)
        /// (N, r) LoRA intermediate per projection, -1 where not adapted.
        public var loraT = [Int](repeating: -1, count: Projection.allCases.count)
    }

    public let shape: Shape
    public var layers: [LayerSlots] = []
    public var xFinal = 0       /// (N, C) last layer output
    public var rstdFinal = 0    /// (N)
    public var hFinal = 0       /// (N, C) final norm output
    // Workspace
    /// The GEMM workspace (GemmWorkspace): the one dequantization tile (tileRows, maxIn), its rows split
    /// across threads, or the bf16 kernel's panels and packed activations, whichever is larger.
    public var tile = 0
    public var tileFloats = 0
    /// Rows per tile after resolving the automatic choice.
    public var tileRows = 0
    public var attentionScratch = 0
    public var logits = 0           /// (logitsChunkRows, V)
    public var cappedLogits = -1    /// (logitsChunkRows, V) with a final logit soft-cap in training
    public var dResidual = 0        /// (N, C)
    public var dHidden = 0          /// (N, C)
    public var dAttn = 0            /// (N, H*D)
    public var dQ = 0, dK = 0, dV = 0
    public var dAct = 0, dGate = 0, dUp = 0   /// (N, F)
    public var dLoRA = 0            /// (N, r)
    /// Phi-3's fused projections: (N, q+2kv or 2F) the qkv_proj / gate_up_proj output before it is split
    /// into q, k, v (gate, up), and in backward their gradients stacked for the one fused backward; -1 otherwise.
    public var fused = -1
    public var dropScratch = -1     /// (N, maxIn) when dropout > 0

    /// Reserves every region in `arena` (which may stay unallocated, to count only).
    public init(arena: FloatArena, config: LlamaConfig, lora: LoRAConfig?, shape: Shape) {
        self.shape = shape
        let n = shape.batch * shape.seqLen
        let c = config.hiddenSize, f = config.intermediateSize
        let qd = config.queryDim, kvd = config.keyValueDim
        let rowStatsCount = Attention.rowStatsCount(batch: shape.batch, seqLen: shape.seqLen, heads: config.numAttentionHeads)
        let maxIn = max(c, qd, f)

        func reserveInternals(_ slots: inout LayerSlots, _ prefix: String, layer: Int?) {
            slots.rstd1 = arena.reserve(prefix + "rstd1", n)
            if config.qkNorm {
                // What backward needs of the q/k norms is their input and rstd; their roped output is
                // recomputed from these (cheap, no GEMM) into one buffer shared by all layers.
                slots.qProj = arena.reserve(prefix + "qProj", n * qd)
                slots.qNormRstd = arena.reserve(prefix + "qNormRstd", n * config.numAttentionHeads)
                slots.kProj = arena.reserve(prefix + "kProj", n * kvd)
                slots.kNormRstd = arena.reserve(prefix + "kNormRstd", n * config.numKeyValueHeads)
            } else {
                slots.q = arena.reserve(prefix + "q", n * qd)
                slots.k = arena.reserve(prefix + "k", n * kvd)
                slots.qProj = slots.q
                slots.kProj = slots.k
            }
            slots.v = arena.reserve(prefix + "v", n * kvd)
            slots.rowStats = arena.reserve(prefix + "attentionRowStats", rowStatsCount)
            slots.attn = arena.reserve(prefix + "attn", n * qd)
            slots.xMid = arena.reserve(prefix + "xMid", n * c)
            if config.sandwichNorms {
                slots.attnOut = arena.reserve(prefix + "attnOut", n * c)
                slots.rstdPostAttention = arena.reserve(prefix + "rstdPostAttention", n)
                slots.mlpOut = arena.reserve(prefix + "mlpOut", n * c)
                slots.rstdPostMLP = arena.reserve(prefix + "rstdPostMLP", n)
            }
            slots.rstd2 = arena.reserve(prefix + "rstd2", n)
            slots.gate = arena.reserve(prefix + "gate", n * f)
            slots.up = arena.reserve(prefix + "up", n * f)
            if let lora {
                for projection in config.layerProjections {
                    let adapted = layer.map { lora.adapts(layer: $0, linear: projection.moduleName) }
                        ?? lora.resolvedTargets.contains(projection.moduleName)
                    if adapted { slots.loraT[projection.rawValue] = arena.reserve(prefix + "lora.\(projection.moduleName)", n * lora.r) }
                }
            }
        }

        if shape.gradientCheckpointing && shape.training {
            // Only each layer's input is kept; one shared set of internals is recomputed per layer.
            var shared = LayerSlots()
            reserveInternals(&shared, "work.recompute.", layer: nil)
            for i in 0..<config.numHiddenLayers {
                var slots = shared
                slots.x = arena.reserve("saved.layer\(i).x", n * c)
                if let lora {
                    for projection in config.layerProjections where !lora.adapts(layer: i, linear: projection.moduleName) {
                        slots.loraT[projection.rawValue] = -1
                    }
                }
                layers.append(slots)
            }
        } else if shape.training {
            for i in 0..<config.numHiddenLayers {
                var slots = LayerSlots()
                slots.x = arena.reserve("saved.layer\(i).x", n * c)
                reserveInternals(&slots, "saved.layer\(i).", layer: i)
                layers.append(slots)
            }
        } else {
            // Inference: two alternating inputs and one shared set of internals.
            var shared = LayerSlots()
            reserveInternals(&shared, "work.layer.", layer: nil)
            let ping = arena.reserve("work.x0", n * c), pong = arena.reserve("work.x1", n * c)
            for i in 0..<config.numHiddenLayers {
                var slots = shared
                slots.x = i % 2 == 0 ? ping : pong
                layers.append(slots)
            }
        }
        // The normed layer inputs and the SwiGLU product are cheap to recompute from what is saved (x and
        // rstd; gate and up), so one shared buffer of each serves every layer, forward and backward.
        let normed = arena.reserve("work.normed", n * c)
        let product = arena.reserve("work.act", n * f)
        for i in layers.indices {
            layers[i].h1 = normed
            layers[i].h2 = normed
            layers[i].act = product
        }
        if config.fusedProjections {
            let widest = config.layerProjections.filter { !$0.fusedParts.isEmpty }.map { config.shape(of: $0).outFeatures }.max()!
            fused = arena.reserve("work.fused", n * widest)
        }
        if config.qkNorm {
            let q = arena.reserve("work.qkNormed.q", n * qd), k = arena.reserve("work.qkNormed.k", n * kvd)
            for i in layers.indices {
                layers[i].q = q
                layers[i].k = k
            }
        }
        xFinal = arena.reserve("saved.final.x", n * c)
        rstdFinal = arena.reserve("saved.final.rstd", n)
        hFinal = arena.reserve("saved.final.h", n * c)

        tileRows = shape.tileRows > 0 ? shape.tileRows : Self.automaticTileRows(maxInFeatures: maxIn)
        tileFloats = GemmWorkspace.floats(rows: n, maxInFeatures: maxIn, tileRows: tileRows)
        tile = arena.reserve("work.tile", tileFloats)
        attentionScratch = arena.reserve("work.attentionScratch", Attention.scratchCount(
            batch: shape.batch, seqLen: shape.seqLen, heads: config.numAttentionHeads,
            kvHeads: config.numKeyValueHeads, headDim: config.headDim))
        logits = arena.reserve("work.logits", min(shape.logitsChunkRows, n) * config.vocabSize)
        if config.finalLogitSoftcap != nil && shape.training {
            // The capped logits of a chunk, which the cap's backward reads after the loss overwrote `logits`.
            cappedLogits = arena.reserve("work.cappedLogits", min(shape.logitsChunkRows, n) * config.vocabSize)
        }
        if shape.training {
            dResidual = arena.reserve("work.grad.residual", n * c)
            dHidden = arena.reserve("work.grad.hidden", n * c)
            dAttn = arena.reserve("work.grad.attn", n * qd)
            dQ = arena.reserve("work.grad.q", n * qd)
            dK = arena.reserve("work.grad.k", n * kvd)
            dV = arena.reserve("work.grad.v", n * kvd)
            dAct = arena.reserve("work.grad.act", n * f)
            dGate = arena.reserve("work.grad.gate", n * f)
            dUp = arena.reserve("work.grad.up", n * f)
            if let lora { dLoRA = arena.reserve("work.grad.lora", n * lora.r) }
        }
        // LoRA dropout is a training-time mask; inference (eval, generate) runs without it, as PEFT in eval mode.
        if shape.training, let lora, lora.loraDropout > 0 { dropScratch = arena.reserve("work.dropout", n * maxIn) }
    }

    /// Rows per dequantized tile when not set: as many as fit 8 MiB, between 256 and 1024. Bigger tiles
    /// mean fewer GEMM calls, so OpenBLAS repacks the activations less often (SmolLM2-135M, 256 tokens:
    /// 156 tok/s at 256 rows, 185 at 512, 194 at 1024); the cap keeps the buffer small for wide models.
    public static func automaticTileRows(maxInFeatures: Int) -> Int {
        min(1024, max(256, (8 << 20) / 4 / max(1, maxInFeatures) / 64 * 64))
    }

    /// Floats of saved activations and of workspace, as reserved.
    public static func counts(config: LlamaConfig, lora: LoRAConfig?, shape: Shape) -> (saved: Int, workspace: Int) {
        let arena = FloatArena()
        _ = ActivationLayout(arena: arena, config: config, lora: lora, shape: shape)
        return (arena.floats(prefix: "saved."), arena.floats(prefix: "work."))
    }
}
