import Foundation
import QLoRA

/// Human-readable numbers for the CLI.
enum Formatting {
    static func bytes(_ n: Int) -> String {
        let value = Double(n)
        if n >= 1 << 30 { return String(format: "%.2f GiB", value / 1_073_741_824) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", value / 1_048_576) }
        if n >= 1 << 10 { return String(format: "%.1f KiB", value / 1024) }
        return "\(n) B"
    }

    static func count(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return "\(n)"
    }

    static var isTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

    /// A one-line training progress report: a bar on a terminal (rewritten in place), plain lines otherwise.
    static func progressLine(_ r: StepReport, label: String) -> String {
        let width = 24
        let filled = r.maxSteps > 0 ? min(width, width * r.step / r.maxSteps) : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        return String(format: "%@ %@ %d/%d  loss %.4f  lr %.2e  |g| %.2f  %.0f tok/s  rss %@",
                      label, bar, r.step, r.maxSteps, r.loss, r.learningRate, r.gradNorm, r.tokensPerSecond,
                      bytes(r.residentBytes))
    }

    /// Prints progress every step on a terminal (in place), every `every` steps otherwise.
    static func reportProgress(_ r: StepReport, label: String, every: Int) {
        if isTerminal {
            print("\r" + progressLine(r, label: label), terminator: r.step == r.maxSteps ? "\n" : "")
            fflush(stdout)
        } else if r.step % max(1, every) == 0 || r.step == r.maxSteps || r.step == 1 {
            print(progressLine(r, label: label))
        }
    }

    static func memoryTable(_ breakdown: MemoryBreakdown) -> String {
        var lines: [String] = []
        for category in MemoryCategory.allCases where breakdown[category] > 0 {
            lines.append("  \(category.rawValue.padding(toLength: 22, withPad: " ", startingAt: 0)) \(bytes(breakdown[category]))")
        }
        lines.append("  \("total".padding(toLength: 22, withPad: " ", startingAt: 0)) \(bytes(breakdown.total))")
        return lines.joined(separator: "\n")
    }
}
