/// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: the total norm is the 2-norm of
/// the per-tensor 2-norms; every gradient is multiplied by min(1, maxNorm / (total + 1e-6)).
public enum GradientClipping {
    /// Returns the total norm before clipping.
    @discardableResult
    public static func clip(_ parameters: TrainableParameters, maxNorm: Double) -> Double {
        let total = globalNorm(parameters)
        let coefficient = Float(maxNorm) / (Float(total) + Float(1e-6))
        if coefficient < 1 {
            let g = parameters.gradients
            for i in 0..<parameters.count { g[i] *= coefficient }
        }
        return total
    }

    /// sqrt(sum over tensors of ||g_t||^2), each tensor norm accumulated in Double.
    public static func globalNorm(_ parameters: TrainableParameters) -> Double {
        var sumOfSquares = 0.0
        for entry in parameters.entries {
            let g = parameters.gradient(entry)
            var s = 0.0
            for i in 0..<entry.count { s += Double(g[i]) * Double(g[i]) }
            let norm = Float(s.squareRoot())   // torch keeps each tensor norm in fp32
            sumOfSquares += Double(norm) * Double(norm)
        }
        return Double(Float(sumOfSquares.squareRoot()))
    }
}
