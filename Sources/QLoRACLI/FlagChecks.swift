/// Numeric options checked up front: a NaN learning rate or a zero rank fails here, naming the flag,
/// not hours later as a NaN loss or an empty matrix.
extension Arguments {
    /// An integer option that must lie in `range`; `expected` says what it is, for the message.
    func int(_ name: String, default value: Int? = nil, in range: ClosedRange<Int>, expected: String) throws -> Int? {
        guard let v = try int(name) ?? value else { return nil }
        guard range.contains(v) else { throw CLIError.badValue(command: command, option: name, value: string(name) ?? "\(v)", expected: expected) }
        return v
    }

    func int(_ name: String, default value: Int, in range: ClosedRange<Int>, expected: String) throws -> Int {
        try int(name, default: Optional(value), in: range, expected: expected)!
    }

    /// A finite number in `range` (NaN and infinities never are).
    func double(_ name: String, default value: Double? = nil, in range: ClosedRange<Double>, expected: String) throws -> Double? {
        guard let v = try double(name) ?? value else { return nil }
        guard v.isFinite, range.contains(v) else { throw CLIError.badValue(command: command, option: name, value: string(name) ?? "\(v)", expected: expected) }
        return v
    }

    func double(_ name: String, default value: Double, in range: ClosedRange<Double>, expected: String) throws -> Double {
        try double(name, default: Optional(value), in: range, expected: expected)!
    }
}

/// Limits of the shape options: far beyond what fits in memory, small enough that every size product
/// of the memory plan fits an Int (tokens per micro-batch x the widest layer x the most layers).
enum ShapeLimits {
    static let maxRank = 1 << 16
    static let maxBatch = 1 << 16
    static let maxSeqLen = 1 << 24
    static let maxTokensPerBatch = 1 << 24
    static let maxAlpha = 1e6
    static let maxSteps = 1 << 40
}
