/// torch's float32 `sum` / `mean` of a contiguous 1-D tensor on CPU (torch 2.x, ATen
/// `cascade_sum` in SumKernel.cpp), bit for bit: the double-quantization offset of bitsandbytes is
/// `absmax.mean()`, so a Python-compatible checkpoint needs this exact summation order.
///
/// Every addition is one float32 add. The mean is `fp32(S / fp32(n))` (a true division).
/// Threads: with T threads and n > 32768 the input is cut into k = min(T, ceil(n/32768)) chunks of
/// ceil(n/k) elements whose sums (padded with zeros to T entries) are summed by the chunk rule.
public enum TorchFloat32Sum {
    /// torch's parallel grain size.
    static let grainSize = 32768
    /// Float lanes of torch's sum kernel (256-bit vectors even on AVX-512 CPUs).
    static let lanes = 8

    /// torch.mean(x) with `threads` = torch.get_num_threads() (the reference set uses 2).
    public static func mean(_ x: UnsafeBufferPointer<Float>, threads: Int = 2) -> Float {
        sum(x, threads: threads) / Float(x.count)
    }

    public static func mean(_ x: [Float], threads: Int = 2) -> Float {
        x.withUnsafeBufferPointer { mean($0, threads: threads) }
    }

    public static func sum(_ x: [Float], threads: Int = 2) -> Float {
        x.withUnsafeBufferPointer { sum($0, threads: threads) }
    }

    /// torch.sum(x) with `threads` threads.
    public static func sum(_ x: UnsafeBufferPointer<Float>, threads: Int = 2) -> Float {
        let n = x.count
        guard n > 0, let base = x.baseAddress else { return 0 }
        if n <= grainSize || threads <= 1 { return 0 + chunkSum(base, n) }
        let k = min(threads, (n + grainSize - 1) / grainSize)
        let c = (n + k - 1) / k
        var partial = [Float](repeating: 0, count: threads)
        for t in 0..<k where t * c < n {
            partial[t] = partial[t] + chunkSum(base + t * c, min(n, (t + 1) * c) - t * c)
        }
        return partial.withUnsafeBufferPointer { 0 + chunkSum($0.baseAddress!, threads) }
    }

    /// One thread's sum of y[0..<m].
    static func chunkSum(_ y: UnsafePointer<Float>, _ m: Int) -> Float {
        if m < lanes {
            // Items of one float taken 4 at a time: one row of 4 if m >= 4, the rest added to P0.
            var p: (Float, Float, Float, Float) = (0, 0, 0, 0)
            var start = 0
            if m >= 4 { p = (0 + y[0], 0 + y[1], 0 + y[2], 0 + y[3]); start = 4 }   // a one-row cascade
            for k in start..<m { p.0 = p.0 + y[k] }
            return ((p.0 + p.1) + p.2) + p.3
        }
        let vectors = m / lanes
        let rows = m / 32                                   // G rows of 32 floats = 4 vectors each
        var columns = [Float](repeating: 0, count: 32)      // P0 | P1 | P2 | P3
        columns.withUnsafeMutableBufferPointer { out in
            if rows > 0 { cascadeColumns(out.baseAddress!, y, rows) }
            for v in (4 * rows)..<vectors {                  // leftover whole vectors go to P0
                for lane in 0..<lanes { out[lane] = out[lane] + y[v * lanes + lane] }
            }
        }
        var s: Float = 0
        for k in (vectors * lanes)..<m { s = s + y[k] }
        for lane in 0..<lanes {
            let p = ((columns[lane] + columns[8 + lane]) + columns[16 + lane]) + columns[24 + lane]
            s = s + p
        }
        return s
    }

    /// The 32 column sums of `rows` rows of 32 floats, each by ATen's multi-level cascade.
    static func cascadeColumns(_ out: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ rows: Int) {
        let W = 32
        let p = max(4, ceilLog2(rows) / 4)
        let L = 1 << p
        let fullBlocks = rows / L
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 5 * W) { scratch in
            let a0 = scratch.baseAddress!, a1 = a0 + W, a2 = a0 + 2 * W, a3 = a0 + 3 * W, t = a0 + 4 * W
            for j in 0..<(5 * W) { a0[j] = 0 }
            for b in 0..<fullBlocks {
                for j in 0..<W { t[j] = 0 }
                for r in 0..<L {
                    let row = y + (b * L + r) * W
                    for j in 0..<W { t[j] = t[j] + row[j] }
                }
                for j in 0..<W { a1[j] = a1[j] + t[j] }
                if (b + 1) % L == 0 {
                    for j in 0..<W { a2[j] = a2[j] + a1[j]; a1[j] = 0 }
                    if (b + 1) % (L * L) == 0 {
                        for j in 0..<W { a3[j] = a3[j] + a2[j]; a2[j] = 0 }
                    }
                }
            }
            for r in (fullBlocks * L)..<rows {
                let row = y + r * W
                for j in 0..<W { a0[j] = a0[j] + row[j] }
            }
            for j in 0..<W { out[j] = ((a0[j] + a1[j]) + a2[j]) + a3[j] }
        }
    }

    /// ATen's ceil_log2: 1 for x <= 2, else the bit length of x - 1.
    static func ceilLog2(_ x: Int) -> Int {
        x <= 2 ? 1 : (Int.bitWidth - (x - 1).leadingZeroBitCount)
    }
}
