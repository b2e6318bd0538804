import Foundation

/// The per-family arithmetic of the one decoder block that both passes share (LlamaExecutor for
/// training and evaluation, IncrementalDecoder for generation): norms with the family's eps and
/// (1 + w) offset, the embedding scale, the MLP gate and the final logit soft-cap.
extension LlamaModel {
    /// out = RMSNorm(x) with `weight` (its count is the normed width: hidden, or head_dim for q/k norms).
    @inline(__always)
    func rmsNorm(out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                 weight: UnsafeMutableBufferPointer<Float>, rows: Int) {
        RMSNorm.forward(out: out, rstd: rstd, x: x, weight: UnsafePointer(weight.baseAddress!), offset: config.normWeightOffset,
                        rows: rows, dim: weight.count, eps: config.rmsNormEps)
    }

    /// dx += the norm's input gradient; dWeight += its weight gradient (nil: frozen).
    @inline(__always)
    func rmsNormBackward(dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                         x: UnsafePointer<Float>, weight: UnsafeMutableBufferPointer<Float>, rstd: UnsafePointer<Float>, rows: Int) {
        RMSNorm.backward(dx: dx, dWeight: dWeight, dy: dy, x: x, weight: UnsafePointer(weight.baseAddress!), offset: config.normWeightOffset,
                         rstd: rstd, rows: rows, dim: weight.count)
    }

    /// The same with the input gradient written over dy.
    @inline(__always)
    func rmsNormBackwardInPlace(dy: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?, x: UnsafePointer<Float>,
                                weight: UnsafeMutableBufferPointer<Float>, rstd: UnsafePointer<Float>, rows: Int) {
        RMSNorm.backwardInPlace(dy: dy, dWeight: dWeight, x: x, weight: UnsafePointer(weight.baseAddress!), offset: config.normWeightOffset,
                                rstd: rstd, rows: rows, dim: weight.count)
    }

    /// Gemma's embedding scale, in place on (rows, C) gathered rows (and on their gradient in backward:
    /// the same factor). Nothing for the other families.
    func scaleEmbeddings(_ x: UnsafeMutablePointer<Float>, rows: Int) {
        guard let scale = config.embeddingScale else { return }
        VectorMath.scale(x, rows * config.hiddenSize, by: scale)
    }

    /// logits = cap * tanh(logits / cap) in place (`final_logit_softcapping`), as transformers computes it.
    func softcapLogits(_ logits: UnsafeMutablePointer<Float>, count: Int) {
        guard let cap = config.finalLogitSoftcap else { return }
        for i in 0..<count { logits[i] = Foundation.tanh(logits[i] / cap) * cap }
    }
}

/// Phi-3's fused projections as the block's separate buffers: a (rows, a + b [+ c]) output is split
/// into its parts row by row (q | k | v, gate | up, as transformers slices and chunks it), and the parts'
/// gradients are stacked back the same way for the one fused backward. Two or three parts, passed as
/// arguments (no array: this runs in every layer of the training step).
enum FusedRows {
    typealias Part = (pointer: UnsafeMutablePointer<Float>, width: Int)

    /// a, b [, c] (rows, width) = the fused rows' consecutive column blocks.
    static func split(_ fused: UnsafePointer<Float>, rows: Int, _ a: Part, _ b: Part, _ c: Part? = nil) {
        let stride = a.width + b.width + (c?.width ?? 0)
        for row in 0..<rows {
            let source = fused + row * stride
            (a.pointer + row * a.width).update(from: source, count: a.width)
            (b.pointer + row * b.width).update(from: source + a.width, count: b.width)
            if let c { (c.pointer + row * c.width).update(from: source + a.width + b.width, count: c.width) }
        }
    }

    /// fused (rows, a + b [+ c]) = the parts side by side.
    static func stack(_ a: Part, _ b: Part, _ c: Part? = nil, into fused: UnsafeMutablePointer<Float>, rows: Int) {
        let stride = a.width + b.width + (c?.width ?? 0)
        for row in 0..<rows {
            let target = fused + row * stride
            target.update(from: a.pointer + row * a.width, count: a.width)
            (target + a.width).update(from: b.pointer + row * b.width, count: b.width)
            if let c { (target + a.width + b.width).update(from: c.pointer + row * c.width, count: c.width) }
        }
    }
}
