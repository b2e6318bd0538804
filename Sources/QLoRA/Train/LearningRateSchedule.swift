import Foundation

/// Learning-rate schedules as transformers' `get_scheduler` defines them. `step` is the number of
/// optimizer steps already taken (0 for the first update), as HF's LambdaLR sees it.
public enum LearningRateSchedule: String, Sendable, CaseIterable {
    case constant
    case constantWithWarmup = "constant_with_warmup"
    case linear
    case cosine

    /// Multiplier of the base learning rate.
    public func factor(step: Int, warmupSteps: Int, totalSteps: Int) -> Double {
        if step < warmupSteps && self != .constant {
            return Double(step) / Double(max(1, warmupSteps))
        }
        switch self {
        case .constant, .constantWithWarmup:
            return 1
        case .linear:
            return max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps)))
        case .cosine:
            let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
            return max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
