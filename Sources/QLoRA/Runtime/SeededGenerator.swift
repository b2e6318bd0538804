/// A small, fast, seedable generator (SplitMix64). Every random choice in the library takes one of these
/// with an explicit seed: same seed, same bits.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable in Float).
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [low, high) (default [-1, 1)).
    public mutating func uniform(_ low: Float = -1, _ high: Float = 1) -> Float { low + (high - low) * nextUnitFloat() }

    /// Standard normal (Box-Muller in Double).
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-300)
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    /// A stateless draw for counter-based uses (dropout masks): uniform in [0, 1) from (seed, index).
    @inline(__always)
    public static func unitFloat(seed: UInt64, index: UInt64) -> Float {
        Float(mix(seed ^ mix(index &+ 0x632B_E59B_D9B4_E019)) >> 40) * 0x1p-24
    }
}

import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }
