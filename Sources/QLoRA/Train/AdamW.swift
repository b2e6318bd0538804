import Foundation

/// AdamW exactly as torch.optim.AdamW (single-tensor CPU path, decoupled weight decay, bias
/// correction). Scalars are computed in Double and rounded to Float once; one Float rounding per
/// operation, in torch's order (checked bit for bit against the reference step-1 state):
///   p *= f(1 - lr*wd); m += f(1 - b1) * (g - m); v = v*b2 + (f(1 - b2) * g) * g;
///   denom = sqrt(v) / f(sqrt(1 - b2^t)) + f(eps); p += (f(-lr / (1 - b1^t)) * m) / denom
public struct AdamW: Sendable {
    public var learningRate: Double
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    public var weightDecay: Double
    public private(set) var step = 0

    public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 0.01) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// Restores the step counter (resuming from a checkpoint).
    public mutating func restore(step: Int) { self.step = step }

    /// One update of every parameter in the arena from its gradients.
    public mutating func update(_ parameters: TrainableParameters) {
        step += 1
        let t = Double(step)
        let decay = Float(1 - learningRate * weightDecay)
        let oneMinusBeta1 = Float(1 - beta1)
        let beta2f = Float(beta2)
        let oneMinusBeta2 = Float(1 - beta2)
        let biasCorrection2Sqrt = Float((1 - pow(beta2, t)).squareRoot())
        let eps = Float(epsilon)
        let stepSize = Float(-learningRate / (1 - pow(beta1, t)))
        let p = parameters.parameters, g = parameters.gradients
        let m = parameters.expAvg, v = parameters.expAvgSq
        for i in 0..<parameters.count {
            let gi = g[i]
            let pi = p[i] * decay
            let mi = m[i] + oneMinusBeta1 * (gi - m[i])
            let vi = v[i] * beta2f + (oneMinusBeta2 * gi) * gi
            m[i] = mi
            v[i] = vi
            let denom = vi.squareRoot() / biasCorrection2Sqrt + eps
            p[i] = pi + (stepSize * mi) / denom
        }
    }
}
