/// Small vector helpers shared by the kernels: reductions with 8 independent SIMD accumulators
/// (LLVM does not vectorize float reductions on its own: it may not reorder the additions) and a
/// branch-free exp that the loop vectorizer turns into AVX2 / AVX-512 code.
enum VectorMath {
    /// e^x for x in float range, max relative error about 2e-7 (Cephes' expf: exponent split with a
    /// two-part ln 2, degree-6 polynomial). Below -87.3 it returns about 1e-38 instead of a denormal or 0.
    /// Branch-free and call-free so that loops over it vectorize.
    @inline(__always)
    static func exp(_ input: Float) -> Float {
        let x = min(max(input, -87.33654), 88.72283)
        // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick (no call, vectorizes).
        let shifter: Float = 12_582_912
        let nFloat = (x * 1.442695041 + shifter) - shifter
        let r = x - nFloat * 0.693359375 + nFloat * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let expR = p * (r * r) + r + 1
        // 2^n built in the exponent bits; n is in [-126, 128) after the clamp, and 2^128 cannot occur
        // because x <= 88.72 rounds to n <= 128 only with r < 0: split the scale in two halves to be safe.
        // A NaN input (a diverging run) must come out NaN, not trap converting to an integer.
        let n = Int32(nFloat.isNaN ? 0 : nFloat)
        let half = n >> 1
        let scale1 = Float(bitPattern: UInt32(bitPattern: (half &+ 127) &<< 23))
        let scale2 = Float(bitPattern: UInt32(bitPattern: ((n &- half) &+ 127) &<< 23))
        return expR * scale1 * scale2
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
        UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Σ x[i]
    static func sum(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { acc += load8(x, i); i += 8 }
        var total = acc.sum()
        while i < count { total += x[i]; i += 1 }
        return total
    }

    /// Σ x[i]^2
    static func sumOfSquares(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { let v = load8(x, i); acc += v * v; i += 8 }
        var total = acc.sum()
        while i < count { total += x[i] * x[i]; i += 1 }
        return total
    }

    /// Σ a[i] * b[i]
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { acc += load8(a, i) * load8(b, i); i += 8 }
        var total = acc.sum()
        while i < count { total += a[i] * b[i]; i += 1 }
        return total
    }

    /// Σ a[i] * b[i] * c[i]
    static func dot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { acc += load8(a, i) * load8(b, i) * load8(c, i); i += 8 }
        var total = acc.sum()
        while i < count { total += a[i] * b[i] * c[i]; i += 1 }
        return total
    }

    /// max x[i] (count >= 1); NaN inputs are not propagated.
    static func maximum(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
        var m0 = x[0], m1 = x[0], m2 = x[0], m3 = x[0]
        var i = 0
        while i + 4 <= count {
            if x[i] > m0 { m0 = x[i] }
            if x[i + 1] > m1 { m1 = x[i + 1] }
            if x[i + 2] > m2 { m2 = x[i + 2] }
            if x[i + 3] > m3 { m3 = x[i + 3] }
            i += 4
        }
        while i < count { if x[i] > m0 { m0 = x[i] }; i += 1 }
        return max(max(m0, m1), max(m2, m3))
    }

    /// dst[i] = exp(src[i] - shift), returns Σ dst[i]. dst may equal src.
    static func expShifted(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int, shift: Float) -> Float {
        for i in 0..<count { dst[i] = exp(src[i] - shift) }
        return sum(dst, count)
    }

    /// x[i] *= factor
    @inline(__always)
    static func scale(_ x: UnsafeMutablePointer<Float>, _ count: Int, by factor: Float) {
        for i in 0..<count { x[i] *= factor }
    }
}
