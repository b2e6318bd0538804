import Foundation

/// The two 4-bit data types of bitsandbytes.
public enum QuantType: String, Sendable, CaseIterable, Codable {
    case nf4, fp4

    /// The 16-entry codebook of this type.
    public var codebook: Codebook4 {
        switch self {
        case .nf4: return Codebook4.nf4
        case .fp4: return Codebook4.fp4
        }
    }
}

/// A 16-entry 4-bit codebook, indexed by the stored nibble, with the float32 midpoints that decide
/// the rounding (`torch.bucketize` semantics: the code is the number of midpoints strictly below the
/// scaled value, so exact ties go to the lower code).
public struct Codebook4: Sendable {
    /// The value of each nibble 0...15.
    public let values: [Float]
    /// `order`: stable argsort of `values`; `nibbleOfSorted[k]` is the nibble of the k-th smallest value.
    public let nibbleOfSorted: [UInt8]
    /// 15 thresholds `fp32(v[k] + v[k+1]) / 2` of the sorted values.
    public let midpoints: [Float]
    /// True when the values are ascending (NF4), so the sorted index is the nibble.
    public let isSorted: Bool

    public init(values: [Float]) {
        precondition(values.count == 16, "a 4-bit codebook has 16 values")
        self.values = values
        let order = values.indices.sorted { (values[$0], $0) < (values[$1], $1) }   // stable argsort
        nibbleOfSorted = order.map { UInt8($0) }
        isSorted = order == Array(0..<16)
        let sorted = order.map { values[$0] }
        midpoints = (0..<15).map { (sorted[$0] + sorted[$0 + 1]) / 2 }
    }

    /// The nibble of a scaled value `s` in [-1, 1]: `order[#(midpoints < s)]`.
    @inline(__always)
    public func nibble(for s: Float) -> UInt8 {
        var count = 0
        for m in midpoints where m < s { count += 1 }
        return nibbleOfSorted[count]
    }

    /// NormalFloat4, exactly bitsandbytes' `get_4bit_type('nf4')` (decimal literals as in its source;
    /// each is a float32 value printed as a Python float, so the conversion is exact). Sorted.
    public static let nf4 = Codebook4(values: [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ])

    /// bitsandbytes FP4 (e2m1 with its bias convention) in bit-pattern order, divided by 12 in float32.
    /// Pattern 8 (sign bit, magnitude 0) is +0.0, as in bitsandbytes' table and CPU kernel.
    public static let fp4 = Codebook4(values: [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3]
        .map { (v: Float) -> Float in v == 0 ? 0 : v / 12 })
}

/// The signed 8-bit dynamic map bitsandbytes uses to quantize the absmax statistics (double
/// quantization), and the 65536-bin lookup table of its 0.50.x CPU kernel.
public enum DynamicMap8 {
    /// 256 float32 values, sorted: `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`.
    public static let values: [Float] = generate()

    /// 255 thresholds `fp32(d[j] + d[j+1]) / 2`.
    public static let midpoints: [Float] = (0..<255).map { (values[$0] + values[$0 + 1]) / 2 }

    /// `cpuLUT[i]` = number of midpoints strictly below `fp32(-1 + fp32(fp32(2i) / 65535))`
    /// (bitsandbytes csrc/cpu_ops.cpp `build_quantize_lut`).
    public static let cpuLUT: [UInt8] = {
        let mids = midpoints
        var lut = [UInt8](repeating: 0, count: 65536)
        var k = 0
        for i in 0..<65536 {
            let v: Float = -1 + (2 * Float(i)) / 65535
            while k < 255 && mids[k] < v { k += 1 }   // v increases with i
            lut[i] = UInt8(k)
        }
        return lut
    }()

    /// The code of `s` by nearest rounding (ties to the lower code): number of midpoints strictly below s.
    @inline(__always)
    public static func nearestCode(_ s: Float) -> UInt8 {
        var lo = 0, hi = 255        // first midpoint index with midpoint >= s
        midpoints.withUnsafeBufferPointer { m in
            while lo < hi {
                let mid = (lo + hi) / 2
                if m[mid] < s { lo = mid + 1 } else { hi = mid }
            }
        }
        return UInt8(lo)
    }

    /// bitsandbytes.functional.create_dynamic_map: for exponent i = 0..<7, the means of consecutive
    /// points of `torch.linspace(0.1, 1, 2^i + 1)` (float32) scaled by ±10^(i-6) (a float32 multiply),
    /// plus 0 and 1, sorted.
    public static func generate() -> [Float] {
        var data: [Float] = []
        for i in 0..<7 {
            let boundaries = torchLinspace(start: Float(0.1 as Double), end: 1, steps: (1 << i) + 1)
            let means = (0..<(boundaries.count - 1)).map { (boundaries[$0] + boundaries[$0 + 1]) / 2 }
            let scale = Float(pow(10.0, Double(i - 6)))
            data += means.map { scale * $0 }
            data += means.map { -scale * $0 }
        }
        data.append(0)
        data.append(1)
        precondition(data.count == 256)
        return data.sorted()
    }

    /// torch.linspace in float32 on CPU (the scalar kernel, whose `start + step * i` the compiler fuses
    /// into one FMA): step = fp32(fp32(end - start) / fp32(steps - 1)); element i is
    /// fma(step, i, start) in the first half and fma(-step, steps - 1 - i, end) in the second.
    static func torchLinspace(start: Float, end: Float, steps: Int) -> [Float] {
        if steps == 1 { return [start] }
        let step = (end - start) / Float(steps - 1)
        let halfway = steps / 2
        return (0..<steps).map { i in
            i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - 1 - i))
        }
    }
}
