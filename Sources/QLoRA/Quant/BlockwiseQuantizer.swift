import Dispatch
import SafeTensors

/// How the 8-bit absmax codes of double quantization are rounded.
public enum AbsmaxRounding: String, Sendable, CaseIterable {
    /// bitsandbytes 0.50.x CPU kernel: a 65536-bin lookup table (what its CPU checkpoints hold; default).
    case cpuLUT
    /// Nearest code, ties to the lower one (bitsandbytes' pure-torch backend; the CUDA kernel also rounds to nearest).
    case nearest
}

/// Double-quantized absmax: 8-bit codes into `DynamicMap8`, one float32 `nestedAbsmax` per
/// `nestedBlocksize` codes, and the float32 `offset` (torch's mean of the absmax) added back.
public struct DoubleQuantizedAbsmax: Sendable, Equatable {
    public var codes: [UInt8]
    public var nestedAbsmax: [Float]
    public var offset: Float
    public var nestedBlocksize: Int

    public init(codes: [UInt8], nestedAbsmax: [Float], offset: Float, nestedBlocksize: Int = 256) {
        self.codes = codes
        self.nestedAbsmax = nestedAbsmax
        self.offset = offset
        self.nestedBlocksize = nestedBlocksize
    }

    /// absmax_rec[b] = fp32(fp32(map[q8[b]] * nestedAbsmax[b / 256]) + offset): two roundings, no FMA.
    @inline(__always)
    public func reconstructed(_ block: Int) -> Float {
        let product = DynamicMap8.values[Int(codes[block])] * nestedAbsmax[block / nestedBlocksize]
        return product + offset
    }
}

/// bitsandbytes-exact blockwise 4-bit quantization and 8-bit double quantization of the statistics.
///
/// Rules (float32 arithmetic, one rounding per operation): the tensor is flattened row-major and cut
/// into blocks of `blocksize` consecutive elements (not row-aligned; the last may be partial);
/// absmax = max|x| per block. Full blocks scale by `x * fp32(1/absmax)`, a partial tail block by a true
/// division `x / absmax`; absmax is clamped to >= 1e-38 for the scaling (an all-zero full block stores 0,
/// an all-zero tail stores 1e-38); s is clamped to [-1, 1]; the code is the number of codebook midpoints
/// strictly below s. Packing: byte j = code[2j] << 4 | code[2j+1]; odd n pads with the code of 0.0.
public enum BlockwiseQuantizer {
    public static let minimumAbsmax: Float = 1e-38

    /// Throws unless `blocksize` is a power of two in 32...4096.
    public static func validate(blocksize: Int) throws {
        guard blocksize >= 32, blocksize <= 4096, blocksize & (blocksize - 1) == 0 else {
            throw QuantError.badBlocksize(blocksize)
        }
    }

    public static func blockCount(elements n: Int, blocksize: Int) -> Int { (n + blocksize - 1) / blocksize }

    /// Quantizes `count` elements of `input` (F32, BF16 or F16, little-endian) into
    /// `packed` /// (ceil(n/2)) and `absmax` /// (nb). Blocks are split over `threads` threads;
    /// the result does not depend on the thread count.
    public static func quantize(packed: UnsafeMutablePointer<UInt8>, absmax: UnsafeMutablePointer<Float>,
                                input: UnsafeRawPointer, dtype: DType, count n: Int,
                                blocksize: Int, codebook: Codebook4, threads: Int = 1) {
        let nb = blockCount(elements: n, blocksize: blocksize)
        let jobs = max(1, min(threads, nb / 64))
        let perJob = (nb + jobs - 1) / jobs
        let work = { (job: Int) in
            let first = job * perJob, last = min(nb, first + perJob)
            guard first < last else { return }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: blocksize) { scratch in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: blocksize + 1) { codes in
                    for b in first..<last {
                        let start = b * blocksize
                        let length = min(blocksize, n - start)
                        let x: UnsafePointer<Float>
                        switch dtype {
                        case .F32:
                            x = input.assumingMemoryBound(to: Float.self) + start
                        case .BF16:
                            let h = input.assumingMemoryBound(to: UInt16.self) + start
                            for i in 0..<length { scratch[i] = Float(bitPattern: UInt32(h[i]) << 16) }
                            x = UnsafePointer(scratch.baseAddress!)
                        default:
                            let h = input.assumingMemoryBound(to: UInt16.self) + start
                            for i in 0..<length { scratch[i] = HalfFloat.toFloat(h[i]) }
                            x = UnsafePointer(scratch.baseAddress!)
                        }
                        absmax[b] = quantizeBlock(packed: packed + start / 2, codes: codes.baseAddress!,
                                                  x: x, length: length, isFull: length == blocksize, codebook: codebook)
                    }
                }
            }
        }
        if jobs == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: jobs, execute: work) }
    }

    /// One block; returns the absmax to store. `codes` has room for length + 1.
    @inline(__always)
    static func quantizeBlock(packed: UnsafeMutablePointer<UInt8>, codes: UnsafeMutablePointer<UInt8>,
                              x: UnsafePointer<Float>, length: Int, isFull: Bool, codebook: Codebook4) -> Float {
        // max|x| on the bit patterns: for non-NaN floats the order of |x| equals the integer order of
        // (bits & 0x7fffffff), and an integer max reduction vectorizes (a float one does not, NaN rules).
        let bits = UnsafeRawPointer(x).assumingMemoryBound(to: UInt32.self)
        var amaxBits: UInt32 = 0
        for i in 0..<length { amaxBits = max(amaxBits, bits[i] & 0x7fff_ffff) }
        let amax = Float(bitPattern: amaxBits)
        let clamped = amax > minimumAbsmax ? amax : minimumAbsmax
        let m = Midpoints15(codebook.midpoints)
        if isFull {
            m.codes(codes, x, length, multiplyingBy: 1 / clamped)
        } else {
            for i in 0..<length { codes[i] = m.bucket(x[i] / clamped) }
        }
        if length & 1 == 1 { codes[length] = m.bucket(0) }
        if !codebook.isSorted {   // FP4: sorted index -> nibble
            for i in 0..<(length + (length & 1)) { codes[i] = codebook.nibbleOfSorted[Int(codes[i])] }
        }
        for j in 0..<((length + 1) / 2) { packed[j] = codes[2 * j] << 4 | codes[2 * j + 1] }
        return isFull ? amax : clamped
    }

    /// The 15 midpoints held in locals, so the counting loop keeps them in registers and vectorizes.
    /// Clamping s to [-1, 1] first would not change the count: every midpoint lies inside (-1, 1).
    struct Midpoints15 {
        let m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14: Float

        init(_ m: [Float]) {
            (m0, m1, m2, m3, m4, m5, m6, m7) = (m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7])
            (m8, m9, m10, m11, m12, m13, m14) = (m[8], m[9], m[10], m[11], m[12], m[13], m[14])
        }

        /// codes[i] = bucket(x[i] * scale) for i < n: the hot loop (vectorized).
        @inline(never)
        func codes(_ codes: UnsafeMutablePointer<UInt8>, _ x: UnsafePointer<Float>, _ n: Int, multiplyingBy scale: Float) {
            let (m0, m1, m2, m3, m4, m5, m6, m7) = (self.m0, self.m1, self.m2, self.m3, self.m4, self.m5, self.m6, self.m7)
            let (m8, m9, m10, m11, m12, m13, m14) = (self.m8, self.m9, self.m10, self.m11, self.m12, self.m13, self.m14)
            for i in 0..<n {
                let s = x[i] * scale
                var c = below(m0, s) &+ below(m1, s) &+ below(m2, s) &+ below(m3, s) &+ below(m4, s)
                c &+= below(m5, s) &+ below(m6, s) &+ below(m7, s) &+ below(m8, s) &+ below(m9, s)
                c &+= below(m10, s) &+ below(m11, s) &+ below(m12, s) &+ below(m13, s) &+ below(m14, s)
                codes[i] = UInt8(truncatingIfNeeded: c)
            }
        }

        /// 1 if m < s else 0, branch-free: in IEEE arithmetic (with subnormals) m - s is negative exactly
        /// when m < s and zero only when m == s, so the sign bit of the difference is the comparison.
        /// (A plain `m < s ? 1 : 0` is turned into a branchy decision tree by LLVM and does not vectorize.)
        @inline(__always)
        func below(_ m: Float, _ s: Float) -> UInt32 { (m - s).bitPattern >> 31 }

        /// Number of midpoints strictly below s.
        @inline(__always)
        func bucket(_ s: Float) -> UInt8 {
            var c = below(m0, s) &+ below(m1, s) &+ below(m2, s) &+ below(m3, s) &+ below(m4, s)
            c &+= below(m5, s) &+ below(m6, s) &+ below(m7, s) &+ below(m8, s) &+ below(m9, s)
            c &+= below(m10, s) &+ below(m11, s) &+ below(m12, s) &+ below(m13, s) &+ below(m14, s)
            return UInt8(truncatingIfNeeded: c)
        }
    }

    /// Double quantization of `absmax`: offset = torch's float32 mean (with `meanThreads` threads, as
    /// torch.get_num_threads()), a = absmax - offset, blocks of `nestedBlocksize`, nested absmax =
    /// max|a|, 8-bit codes by `rounding`.
    public static func doubleQuantize(absmax: [Float], rounding: AbsmaxRounding = .cpuLUT,
                                      nestedBlocksize: Int = 256, meanThreads: Int = 2) -> DoubleQuantizedAbsmax {
        let n = absmax.count
        let offset = TorchFloat32Sum.mean(absmax, threads: meanThreads)
        let a = absmax.map { $0 - offset }
        let nn = (n + nestedBlocksize - 1) / nestedBlocksize
        var codes = [UInt8](repeating: 0, count: n)
        var nested = [Float](repeating: 0, count: nn)
        let lut = DynamicMap8.cpuLUT
        for k in 0..<nn {
            let range = (k * nestedBlocksize)..<min(n, (k + 1) * nestedBlocksize)
            var amax: Float = 0
            for i in range { amax = max(amax, abs(a[i])) }
            nested[k] = amax
            switch rounding {
            case .cpuLUT:
                guard amax != 0 else { continue }        // all-zero nested block: codes 0
                let inverse = 1 / amax
                for i in range {
                    let s = min(max(a[i] * inverse, -1), 1)
                    let t = (s + 1) * 0.5
                    let index = Int((Double(t) * 65535 + 0.5).rounded(.towardZero))   // exact in Double
                    codes[i] = lut[index]
                }
            case .nearest:
                let clamped = max(amax, minimumAbsmax)
                let isFull = range.count == nestedBlocksize
                let inverse = 1 / clamped
                for i in range {
                    let scaled = isFull ? a[i] * inverse : a[i] / clamped
                    codes[i] = DynamicMap8.nearestCode(min(max(scaled, -1), 1))
                }
            }
        }
        return DoubleQuantizedAbsmax(codes: codes, nestedAbsmax: nested, offset: offset, nestedBlocksize: nestedBlocksize)
    }
}
