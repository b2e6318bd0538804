import Foundation

/// Shared helpers for the benchmarks: a monotonic clock, best-of-N timing, option parsing.
enum Bench {
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Best wall time of `repeats` runs of `body` (after one warm-up run).
    static func best(repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = now()
            try body()
            best = min(best, now() - start)
        }
        return best
    }

    /// `--name value` options; anything else is an error.
    static func options(_ arguments: [String], allowed: Set<String>) throws -> [String: String] {
        var result: [String: String] = [:]
        var i = 0
        while i < arguments.count {
            let key = arguments[i]
            guard key.hasPrefix("--"), allowed.contains(String(key.dropFirst(2))), i + 1 < arguments.count else {
                throw BenchError("unknown or incomplete option \(key); allowed: \(allowed.sorted().map { "--\($0) <value>" }.joined(separator: ", "))")
            }
            result[String(key.dropFirst(2))] = arguments[i + 1]
            i += 2
        }
        return result
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
