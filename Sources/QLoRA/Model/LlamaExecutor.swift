/// Runs a LlamaModel (+ optional LoRA adapters) forward and backward on batches up to a fixed size,
/// in one activation arena laid out up front by ActivationLayout: nothing allocates per step.
///
/// Dims: B batch, T sequence, N = B*T, C hidden, F intermediate, H heads, KV kv heads, D head dim, V vocab.
public final class LlamaExecutor {
    public let model: LlamaModel
    public let lora: LoRAAdapters?
    /// Weight gradients of every tensor (full fine-tuning), nil when only adapters train.
    public let gradients: ModelGradients?
    public let shape: ActivationLayout.Shape
    public let arena: FloatArena
    public let layout: ActivationLayout
    /// (N) position of each row; (N) shifted targets.
    private let positions: UnsafeMutablePointer<Int32>
    private let targets: UnsafeMutablePointer<Int32>
    private let ids: UnsafeMutablePointer<Int32>
    /// The RoPE tables of the layers (Gemma 3: global and local; LongRoPE: short and long factors).
    private let rope: LayerRoPE
    /// The projections reading the attention's and the MLP's normed inputs (the config's lists, built once).
    private let attentionInputs: [Projection], mlpInputs: [Projection]
    /// Seed of the current step's dropout masks (forward and recompute must agree).
    public var dropoutSeed: UInt64 = 0
    /// False while evaluating during training: LoRA dropout is off, as in transformers' eval mode.
    public var appliesDropout = true
    /// Batch of the last forward.
    public private(set) var batch = 0
    public private(set) var seqLen = 0

    /// With adapters that have modules_to_save, the executor runs the model with their trainable
    /// embed_tokens / lm_head and (when training) accumulates their gradients.
    public init(model: LlamaModel, lora: LoRAAdapters?, gradients: ModelGradients? = nil, shape: ActivationLayout.Shape) {
        let model = lora?.applied(to: model) ?? model
        self.model = model
        self.lora = lora
        self.gradients = gradients ?? (shape.training ? lora?.moduleGradients : nil)
        self.shape = shape
        let arena = FloatArena()
        layout = ActivationLayout(arena: arena, config: model.config, lora: lora?.config, shape: shape)
        arena.allocate()
        self.arena = arena
        let n = shape.batch * shape.seqLen
        positions = .allocate(capacity: n)
        targets = .allocate(capacity: n)
        ids = .allocate(capacity: n)
        positions.initialize(repeating: 0, count: n)
        targets.initialize(repeating: -100, count: n)
        ids.initialize(repeating: 0, count: n)
        rope = LayerRoPE(config: model.config, maxPositions: max(shape.seqLen, 1))
        attentionInputs = model.config.attentionInputProjections
        mlpInputs = model.config.mlpInputProjections
    }

    /// Bytes the executor holds outside its arena: 3 Int32 per row (ids, positions, shifted targets) and
    /// the RoPE tables (cos and sin, T x R/2 each, plus R/2 inverse frequencies; one set per distinct
    /// RoPE of the layers, two for LongRoPE past its original length). Shared with the plan.
    public static func auxiliaryBytes(config: LlamaConfig, shape: ActivationLayout.Shape) -> Int {
        3 * shape.batch * shape.seqLen * 4 + LayerRoPE.bytes(config: config, maxPositions: max(shape.seqLen, 1))
    }

    deinit {
        positions.deallocate()
        targets.deallocate()
        ids.deallocate()
    }

    @inline(__always) private func p(_ offset: Int) -> UnsafeMutablePointer<Float> { arena.pointer(offset) }

    private var workspace: GemmWorkspace { GemmWorkspace(base: p(layout.tile), floats: layout.tileFloats, tileRows: layout.tileRows) }

    // MARK: - Forward

    /// Runs the decoder on `inputIDs` (B, T) and leaves the final normed hidden states in place.
    public func forward(inputIDs: [Int32], batch b: Int, seqLen t: Int) throws {
        guard b <= shape.batch, t <= shape.seqLen, inputIDs.count == b * t else {
            throw ModelError.batchTooLarge(rows: b, seqLen: t, maxRows: shape.batch, maxSeqLen: shape.seqLen)
        }
        let config = model.config
        for (i, id) in inputIDs.enumerated() where id < 0 || Int(id) >= config.vocabSize {
            throw ModelError.tokenOutOfRange(id: Int(id), vocab: config.vocabSize, position: i)
        }
        batch = b
        seqLen = t
        let n = b * t
        for i in 0..<n {
            ids[i] = inputIDs[i]
            positions[i] = Int32(i % t)
        }
        model.embedTokens.gather(out: p(layout.layers[0].x), ids: ids, rows: n)
        model.scaleEmbeddings(p(layout.layers[0].x), rows: n)
        for layer in 0..<config.numHiddenLayers {
            let output = layer + 1 < config.numHiddenLayers ? layout.layers[layer + 1].x : layout.xFinal
            forwardLayer(layer, output: p(output))
        }
        model.rmsNorm(out: p(layout.hFinal), rstd: p(layout.rstdFinal), x: p(layout.xFinal), weight: model.norm, rows: n)
    }

    /// Base linear + LoRA branch of one projection. Without `baseNeeded` (a recompute whose output is
    /// thrown away) only the LoRA branch runs, for the intermediate its backward reads.
    private func project(_ layer: Int, _ projection: Projection, y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                         slots: ActivationLayout.LayerSlots, rows n: Int, baseNeeded: Bool = true) {
        if baseNeeded {
            model.layers[layer].linear(projection).forward(y: y, x: x, rows: n, workspace: workspace)
        }
        if let adapter = lora?.adapters[layer][projection.rawValue] {
            StepProfiler.measure(.lora) {
                adapter.forward(y: y, t: p(slots.loraT[projection.rawValue]), x: x, rows: n,
                                maskSeed: dropoutSeed, dropScratch: appliesDropout && layout.dropScratch >= 0 ? p(layout.dropScratch) : nil)
            }
        }
    }

    /// One decoder layer from its saved input. `recompute` (checkpointing's backward) stops short of the
    /// layer's output, which backward never reads: no base down_proj GEMM, no residual add (with sandwich
    /// norms the down_proj output is the post-MLP norm's input, so that GEMM and norm still run).
    private func forwardLayer(_ layer: Int, output: UnsafeMutablePointer<Float>, recompute: Bool = false) {
        let config = model.config
        let s = layout.layers[layer]
        let n = batch * seqLen
        let c = config.hiddenSize
        let weights = model.layers[layer]
        model.rmsNorm(out: p(s.h1), rstd: p(s.rstd1), x: p(s.x), weight: weights.inputLayernorm, rows: n)
        projectQKV(layer, s, rows: n)
        normAndRotate(layer, s)
        StepProfiler.measure(.attention) { Attention.forward(out: p(s.attn), rowStats: p(s.rowStats), q: p(s.q), k: p(s.k), v: p(s.v),
                          batch: batch, seqLen: seqLen, heads: config.numAttentionHeads,
                          kvHeads: config.numKeyValueHeads, headDim: config.headDim, scale: config.attentionScale,
                          window: config.attentionWindow(layer: layer), scratch: p(layout.attentionScratch)) }
        if config.sandwichNorms {
            project(layer, .o, y: p(s.attnOut), x: p(s.attn), slots: s, rows: n)
            model.rmsNorm(out: p(s.xMid), rstd: p(s.rstdPostAttention), x: p(s.attnOut), weight: weights.norm(.postAttention)!, rows: n)
        } else {
            project(layer, .o, y: p(s.xMid), x: p(s.attn), slots: s, rows: n)
        }
        add(p(s.xMid), p(s.x), count: n * c)
        model.rmsNorm(out: p(s.h2), rstd: p(s.rstd2), x: p(s.xMid), weight: weights.preMLPNorm, rows: n)
        projectGateUp(layer, s, rows: n)
        config.activation.forward(out: p(s.act), gate: p(s.gate), up: p(s.up), count: n * config.intermediateSize)
        if config.sandwichNorms {
            project(layer, .down, y: p(s.mlpOut), x: p(s.act), slots: s, rows: n)
            model.rmsNorm(out: output, rstd: p(s.rstdPostMLP), x: p(s.mlpOut), weight: weights.norm(.postMLP)!, rows: n)
        } else {
            project(layer, .down, y: output, x: p(s.act), slots: s, rows: n, baseNeeded: !recompute)
        }
        if !recompute { add(output, p(s.xMid), count: n * c) }
    }

    /// q, k and v from h1: three projections, or Phi-3's one qkv_proj GEMM (+ one LoRA) split into them.
    private func projectQKV(_ layer: Int, _ s: ActivationLayout.LayerSlots, rows n: Int) {
        let c = model.config
        guard c.fusedProjections else {
            project(layer, .q, y: p(s.qProj), x: p(s.h1), slots: s, rows: n)
            project(layer, .k, y: p(s.kProj), x: p(s.h1), slots: s, rows: n)
            project(layer, .v, y: p(s.v), x: p(s.h1), slots: s, rows: n)
            return
        }
        project(layer, .qkv, y: p(layout.fused), x: p(s.h1), slots: s, rows: n)
        FusedRows.split(p(layout.fused), rows: n, (p(s.qProj), c.queryDim), (p(s.kProj), c.keyValueDim), (p(s.v), c.keyValueDim))
    }

    /// gate and up from h2: two projections, or Phi-3's one gate_up_proj split into them.
    private func projectGateUp(_ layer: Int, _ s: ActivationLayout.LayerSlots, rows n: Int) {
        let c = model.config
        guard c.fusedProjections else {
            project(layer, .gate, y: p(s.gate), x: p(s.h2), slots: s, rows: n)
            project(layer, .up, y: p(s.up), x: p(s.h2), slots: s, rows: n)
            return
        }
        project(layer, .gateUp, y: p(layout.fused), x: p(s.h2), slots: s, rows: n)
        FusedRows.split(p(layout.fused), rows: n, (p(s.gate), c.intermediateSize), (p(s.up), c.intermediateSize))
    }

    /// q and k as attention reads them: RoPE of the projections, after the per-head RMSNorm when the
    /// config has it (qProj / kProj -> q / k, rstd saved), in place otherwise (qProj is q).
    private func normAndRotate(_ layer: Int, _ s: ActivationLayout.LayerSlots) {
        let config = model.config, n = batch * seqLen
        if config.qkNorm {
            let weights = model.layers[layer]
            model.rmsNorm(out: p(s.q), rstd: p(s.qNormRstd), x: p(s.qProj), weight: weights.qNorm!, rows: n * config.numAttentionHeads)
            model.rmsNorm(out: p(s.k), rstd: p(s.kNormRstd), x: p(s.kProj), weight: weights.kNorm!, rows: n * config.numKeyValueHeads)
        }
        guard config.usesRoPE(layer: layer) else { return }
        let table = rope.table(layer: layer, sequenceLength: seqLen)
        table.apply(p(s.q), positions: positions, rows: n, heads: config.numAttentionHeads)
        table.apply(p(s.k), positions: positions, rows: n, heads: config.numKeyValueHeads)
    }

    @inline(__always)
    private func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    // MARK: - Loss

    /// Full logits (B*T, V) of the last forward into `out` (for evaluation, generation and tests).
    public func logits(into out: UnsafeMutablePointer<Float>) {
        model.lmHead.forward(y: out, x: p(layout.hFinal), rows: batch * seqLen, workspace: workspace)
        model.softcapLogits(out, count: batch * seqLen * model.config.vocabSize)
    }

    /// Logits (V) of the last position of the last forward (batch 1): what generation needs.
    public func lastRowLogits(into out: UnsafeMutablePointer<Float>) {
        let c = model.config.hiddenSize
        model.lmHead.forward(y: out, x: p(layout.hFinal) + (batch * seqLen - 1) * c, rows: 1, workspace: workspace)
        model.softcapLogits(out, count: model.config.vocabSize)
    }

    /// Hidden states as transformers reports them: index 0 = embeddings, i = output of layer i-1, and the
    /// last = final-normed output. Only valid without checkpointing for the inner ones.
    public func hiddenState(_ index: Int) -> UnsafePointer<Float> {
        if index == model.config.numHiddenLayers { return UnsafePointer(p(layout.hFinal)) }
        return UnsafePointer(p(layout.layers[index].x))
    }

    /// HF causal-LM shift: the target of row (b, t) is labels[b, t+1]; the last position has none.
    private func setTargets(labels: [Int32]) {
        for b in 0..<batch {
            for t in 0..<seqLen {
                targets[b * seqLen + t] = t + 1 < seqLen ? labels[b * seqLen + t + 1] : -100
            }
        }
    }

    /// Summed cross-entropy of the last forward against `labels` (B, T, unshifted, -100 ignored), and the
    /// number of counted targets; the lm_head runs in chunks, the full logits never exist at once.
    public func loss(labels: [Int32]) -> (sum: Double, count: Int) {
        lossChunks(labels: labels, gradScale: nil)
    }

    private func lossChunks(labels: [Int32], gradScale: Float?) -> (sum: Double, count: Int) {
        precondition(labels.count == batch * seqLen)
        setTargets(labels: labels)
        let n = batch * seqLen, c = model.config.hiddenSize, v = model.config.vocabSize
        let chunk = min(shape.logitsChunkRows, n)
        let logits = p(layout.logits)
        var total = 0.0, count = 0
        var r0 = 0
        if gradScale != nil { p(layout.dHidden).update(repeating: 0, count: n * c) }
        while r0 < n {
            let r1 = min(n, r0 + chunk)
            // Rows without a target contribute nothing: skip their lm_head entirely.
            if (r0..<r1).contains(where: { targets[$0] != -100 }) {
                model.lmHead.forward(y: logits, x: p(layout.hFinal) + r0 * c, rows: r1 - r0, workspace: workspace)
                let chunkCount = (r1 - r0) * v
                model.softcapLogits(logits, count: chunkCount)
                if gradScale != nil && layout.cappedLogits >= 0 { p(layout.cappedLogits).update(from: logits, count: chunkCount) }
                let result = StepProfiler.measure(.loss) {
                    CrossEntropy.forwardBackward(dlogits: gradScale == nil ? nil : logits, logits: logits, targets: targets + r0,
                                                 rows: r1 - r0, vocab: v, gradScale: gradScale ?? 0)
                }
                if gradScale != nil, let cap = model.config.finalLogitSoftcap {
                    // d(cap tanh(z / cap)) / dz = 1 - tanh^2 = 1 - (capped / cap)^2.
                    let capped = p(layout.cappedLogits)
                    for i in 0..<chunkCount { let t = capped[i] / cap; logits[i] *= 1 - t * t }
                }
                total += result.lossSum
                count += result.count
                if gradScale != nil {
                    model.lmHead.backwardInput(dx: p(layout.dHidden) + r0 * c, dy: logits, rows: r1 - r0,
                                               workspace: workspace)
                    if let dHead = gradients?.lmHead {
                        // dW (V, C) += dlogits^T (V, rows) x hFinal (rows, C)
                        Blas.sgemmParallel(dHead, ldc: c, logits, lda: v, transA: true, p(layout.hFinal) + r0 * c, ldb: c,
                                   m: v, n: c, k: r1 - r0, beta: 1)
                    }
                }
            }
            r0 = r1
        }
        return (total, count)
    }

    // MARK: - Backward

    /// Forward, loss, and backward: accumulates LoRA gradients (scaled by `gradScale`, e.g. 1 / targets)
    /// into the adapters' gradient buffers. Returns the summed loss and target count.
    public func lossAndGradients(inputIDs: [Int32], labels: [Int32], batch b: Int, seqLen t: Int,
                                 gradScale: Float? = nil) throws -> (sum: Double, count: Int) {
        precondition(shape.training, "executor was built for inference")
        try forward(inputIDs: inputIDs, batch: b, seqLen: t)
        // Mean over this batch's targets unless the caller scales (gradient accumulation).
        var scale = gradScale
        if scale == nil {
            setTargets(labels: labels)
            let valid = (0..<(b * t)).reduce(0) { $0 + (targets[$1] != -100 ? 1 : 0) }
            scale = valid > 0 ? 1 / Float(valid) : 0
        }
        let result = lossChunks(labels: labels, gradScale: scale)
        backward()
        return result
    }

    private func backward() {
        let config = model.config
        let n = batch * seqLen, c = config.hiddenSize
        let dResidual = p(layout.dResidual)
        dResidual.update(repeating: 0, count: n * c)
        model.rmsNormBackward(dx: dResidual, dWeight: gradients?.norm, dy: p(layout.dHidden), x: p(layout.xFinal),
                              weight: model.norm, rstd: p(layout.rstdFinal), rows: n)
        for layer in stride(from: config.numHiddenLayers - 1, through: 0, by: -1) {
            if shape.gradientCheckpointing {
                // Recompute this layer's internals from its saved input; its output is not needed.
                forwardLayer(layer, output: p(layout.dHidden), recompute: true)
            }
            backwardLayer(layer, sharedFresh: shape.gradientCheckpointing)
        }
        if let dEmbed = gradients?.embedTokens {
            model.scaleEmbeddings(dResidual, rows: n)
            Embedding.backward(dtable: dEmbed, dout: dResidual, ids: ids, rows: n, dim: c)
        }
    }

    /// Base input-gradient + LoRA backward of one projection: dx += dy W (+ LoRA terms).
    private func projectBackward(_ layer: Int, _ projection: Projection, dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                 x: UnsafePointer<Float>, slots: ActivationLayout.LayerSlots, rows n: Int) {
        let linear = model.layers[layer].linear(projection)
        linear.backwardInput(dx: dx, dy: dy, rows: n, workspace: workspace)
        if let dW = gradients?.layer(layer)?.linears[projection.rawValue] {
            // dW (O, I) += dy^T (O, N) x (N, I)
            Blas.sgemmParallel(dW, ldc: linear.inFeatures, dy, lda: linear.outFeatures, transA: true, x, ldb: linear.inFeatures,
                       m: linear.outFeatures, n: linear.inFeatures, k: n, beta: 1)
        }
        if let adapter = lora?.adapters[layer][projection.rawValue] {
            StepProfiler.measure(.lora) {
                adapter.backward(dx: dx, dy: dy, t: p(slots.loraT[projection.rawValue]), x: x, rows: n, maskSeed: dropoutSeed,
                                 dt: p(layout.dLoRA), dropScratch: layout.dropScratch >= 0 ? p(layout.dropScratch) : nil)
            }
        }
    }

    /// Whether the backward of this projection reads its input (for LoRA's or the weight's gradient);
    /// the input gradient alone does not need it.
    private func readsInput(_ layer: Int, _ projection: Projection) -> Bool {
        lora?.adapters[layer][projection.rawValue] != nil || gradients?.layer(layer) != nil
    }

    /// The gradient of a branch's output before its sandwich norm (Gemma 3): through the norm from the
    /// residual's gradient into dHidden (zeroed first; free there), whose norm input `x` and `rstd` the
    /// forward saved. Without sandwich norms the residual's gradient itself.
    private func sandwichBackward(_ layer: Int, _ kind: LayerNorm, x: Int, rstd: Int) -> UnsafePointer<Float> {
        let dResidual = p(layout.dResidual)
        guard let weight = model.layers[layer].norm(kind) else { return UnsafePointer(dResidual) }
        let n = batch * seqLen, dHidden = p(layout.dHidden)
        dHidden.update(repeating: 0, count: n * model.config.hiddenSize)
        model.rmsNormBackward(dx: dHidden, dWeight: gradients?.layer(layer)?.norm(kind), dy: dResidual, x: p(x),
                              weight: weight, rstd: p(rstd), rows: n)
        return UnsafePointer(dHidden)
    }

    /// On entry dResidual = dL/d(layer output); on exit dL/d(layer input). `sharedFresh`: the shared
    /// h2, gate product and normed q/k buffers still hold this layer's values (checkpointing just
    /// recomputed the layer), so they need not be recomputed again.
    private func backwardLayer(_ layer: Int, sharedFresh: Bool) {
        let config = model.config
        let s = layout.layers[layer]
        let n = batch * seqLen, f = config.intermediateSize
        let weights = model.layers[layer]
        let normGradient = { (kind: LayerNorm) in self.gradients?.layer(layer)?.norm(kind) }
        let dResidual = p(layout.dResidual), dHidden = p(layout.dHidden)

        // MLP: out = xMid + [postMLP](down(act(gate(h2)) * up(h2))). h2 and the product share workspace
        // across layers; they are recomputed only where a LoRA or weight gradient reads them.
        if !sharedFresh && mlpInputs.contains(where: { readsInput(layer, $0) }) {
            model.rmsNorm(out: p(s.h2), rstd: p(s.rstd2), x: p(s.xMid), weight: weights.preMLPNorm, rows: n)
        }
        if !sharedFresh && readsInput(layer, .down) {
            config.activation.forward(out: p(s.act), gate: p(s.gate), up: p(s.up), count: n * f)
        }
        // dL/d(down output): through the post-MLP norm (into dHidden, free until the gate/up inputs), or
        // the residual's gradient itself.
        let dDown = sandwichBackward(layer, .postMLP, x: s.mlpOut, rstd: s.rstdPostMLP)
        let dAct = p(layout.dAct), dGate = p(layout.dGate), dUp = p(layout.dUp)
        dAct.update(repeating: 0, count: n * f)
        projectBackward(layer, .down, dx: dAct, dy: dDown, x: p(s.act), slots: s, rows: n)
        dGate.update(repeating: 0, count: n * f)
        dUp.update(repeating: 0, count: n * f)
        config.activation.backward(dgate: dGate, dup: dUp, dout: dAct, gate: p(s.gate), up: p(s.up), count: n * f)
        dHidden.update(repeating: 0, count: n * config.hiddenSize)
        if config.fusedProjections {
            // One gate_up_proj backward on the stacked gradients (Phi-3).
            FusedRows.stack((dGate, f), (dUp, f), into: p(layout.fused), rows: n)
            projectBackward(layer, .gateUp, dx: dHidden, dy: p(layout.fused), x: p(s.h2), slots: s, rows: n)
        } else {
            projectBackward(layer, .gate, dx: dHidden, dy: dGate, x: p(s.h2), slots: s, rows: n)
            projectBackward(layer, .up, dx: dHidden, dy: dUp, x: p(s.h2), slots: s, rows: n)
        }
        model.rmsNormBackward(dx: dResidual, dWeight: normGradient(.preMLP), dy: dHidden, x: p(s.xMid),
                              weight: weights.preMLPNorm, rstd: p(s.rstd2), rows: n)

        // Attention: xMid = x + [postAttention](o(attn(rope(qNorm(q(h1))), rope(kNorm(k(h1))), v(h1)))),
        // the norms only where the family has them.
        let dO = sandwichBackward(layer, .postAttention, x: s.attnOut, rstd: s.rstdPostAttention)
        let dAttn = p(layout.dAttn), dQ = p(layout.dQ), dK = p(layout.dK), dV = p(layout.dV)
        dAttn.update(repeating: 0, count: n * config.queryDim)
        projectBackward(layer, .o, dx: dAttn, dy: dO, x: p(s.attn), slots: s, rows: n)
        dQ.update(repeating: 0, count: n * config.queryDim)
        dK.update(repeating: 0, count: n * config.keyValueDim)
        dV.update(repeating: 0, count: n * config.keyValueDim)
        // The normed q/k share one buffer across layers: rebuild this layer's from the saved projections.
        if config.qkNorm && !sharedFresh { normAndRotate(layer, s) }
        StepProfiler.measure(.attention) { Attention.backward(dq: dQ, dk: dK, dv: dV, dout: dAttn, q: p(s.q), k: p(s.k), v: p(s.v), rowStats: p(s.rowStats),
                           batch: batch, seqLen: seqLen, heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads,
                           headDim: config.headDim, scale: config.attentionScale, window: config.attentionWindow(layer: layer),
                           scratch: p(layout.attentionScratch)) }
        if config.usesRoPE(layer: layer) {
            let table = rope.table(layer: layer, sequenceLength: seqLen)
            table.applyBackward(dQ, positions: positions, rows: n, heads: config.numAttentionHeads)
            table.applyBackward(dK, positions: positions, rows: n, heads: config.numKeyValueHeads)
        }
        if config.qkNorm {
            // dL/d(normed q) -> dL/d(q_proj output), in place; the norm weights' gradients for full fine-tuning.
            model.rmsNormBackwardInPlace(dy: dQ, dWeight: normGradient(.query), x: p(s.qProj), weight: weights.qNorm!,
                                         rstd: p(s.qNormRstd), rows: n * config.numAttentionHeads)
            model.rmsNormBackwardInPlace(dy: dK, dWeight: normGradient(.key), x: p(s.kProj), weight: weights.kNorm!,
                                         rstd: p(s.kNormRstd), rows: n * config.numKeyValueHeads)
        }
        // h1 shares its buffer with h2, so it is always stale here.
        if attentionInputs.contains(where: { readsInput(layer, $0) }) {
            model.rmsNorm(out: p(s.h1), rstd: p(s.rstd1), x: p(s.x), weight: weights.inputLayernorm, rows: n)
        }
        dHidden.update(repeating: 0, count: n * config.hiddenSize)
        if config.fusedProjections {
            // One qkv_proj backward on the stacked gradients (Phi-3).
            FusedRows.stack((dQ, config.queryDim), (dK, config.keyValueDim), (dV, config.keyValueDim), into: p(layout.fused), rows: n)
            projectBackward(layer, .qkv, dx: dHidden, dy: p(layout.fused), x: p(s.h1), slots: s, rows: n)
        } else {
            projectBackward(layer, .q, dx: dHidden, dy: dQ, x: p(s.h1), slots: s, rows: n)
            projectBackward(layer, .k, dx: dHidden, dy: dK, x: p(s.h1), slots: s, rows: n)
            projectBackward(layer, .v, dx: dHidden, dy: dV, x: p(s.h1), slots: s, rows: n)
        }
        model.rmsNormBackward(dx: dResidual, dWeight: normGradient(.input), dy: dHidden, x: p(s.x),
                              weight: weights.inputLayernorm, rstd: p(s.rstd1), rows: n)
    }
}
