import Dispatch

/// Wall time per phase of a training step (dequantization, frozen-weight GEMM, attention, the LoRA
/// branches, the softmax cross-entropy), for the benchmark's
/// breakdown. Off by default; when on, each timed region costs two clock reads. Regions are timed on
/// the calling thread (a parallel region counts its wall time once).
public enum StepProfiler {
    public enum Phase: Int, CaseIterable, Sendable {
        case dequant, gemm, attention, lora, loss
    }

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) private static var totals = [UInt64](repeating: 0, count: Phase.allCases.count)

    @inline(__always)
    public static func measure<T>(_ phase: Phase, _ body: () -> T) -> T {
        guard enabled else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        totals[phase.rawValue] &+= DispatchTime.now().uptimeNanoseconds &- start
        return result
    }

    /// Seconds per phase since the last reset.
    public static var seconds: [Phase: Double] {
        Dictionary(uniqueKeysWithValues: Phase.allCases.map { ($0, Double(totals[$0.rawValue]) / 1e9) })
    }

    public static func reset() { totals = [UInt64](repeating: 0, count: Phase.allCases.count) }
}
