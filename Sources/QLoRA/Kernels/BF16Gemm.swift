import CQLoRAKernels

/// The frozen-weight GEMMs in bf16 with fp32 accumulation (the arithmetic of AVX512-BF16 `vdpbf16ps`,
/// Sources/CQLoRAKernels/GemmBF16.c). The weight is never written whole: each thread dequantizes the rows
/// (or the row block) one packed panel needs into a small staging buffer, packs it, and multiplies every
/// activation row with it while it is hot. bf16 weights pack straight from their storage. Activations
/// are rounded to bf16 once per GEMM. No OpenBLAS call, no repacking of anything we wrote.
///
/// Results depend only on the operands: each output is one sequential sum over K, whatever the threads,
/// the row chunks or the blocks of K.
///
/// `level` is the C kernel level (GemmKernel.level): the AVX-512 code or its scalar twin, same bits.
///
/// Dims: M activation rows, I = in features, O = out features, NR = 32 columns per panel,
/// KC = rows of W per backward block, Ip = I rounded up to even.
public enum BF16Gemm {
    static let nr = Int(QLORA_BF16_NR)
    /// Rows of W (the reduction) per block in backward.
    static let kc = 512
    private static let alignment = 64

    // MARK: - Workspace

    @inline(__always) private static func even(_ x: Int) -> Int { (x + 1) & ~1 }

    /// Elements per row of the bf16 activations and of the staged weight rows: I rounded up to even, plus
    /// 64 bytes when the row would be a multiple of 512 bytes. The micro-kernel reads 12 rows (and the
    /// packer 16) at this stride; at 8 KiB (I = 4096) they all fall in the same L1 sets and evict each
    /// other (measured on Zen 4, 4096 x 4096 NF4, 256 rows: forward 285 -> 410 GFLOP/s).
    @inline(__always) static func rowStride(_ i: Int) -> Int { even(i) % 256 == 0 ? even(i) + 32 : even(i) }
    @inline(__always) private static func aligned(_ bytes: Int) -> Int { (bytes + alignment - 1) & ~(alignment - 1) }

    /// Per thread in forward: one panel (Ip/2 x NR words) and, for weights without bf16 storage, the
    /// staged NR rows of W (NR x Ip bf16).
    private static func forwardThreadBytes(inFeatures i: Int, staged: Bool) -> Int {
        aligned(even(i) * nr * 2) + (staged ? aligned(nr * rowStride(i) * 2) : 0)
    }

    /// Per thread in backward, for `rows` activation rows: the rows' bf16 block of dy (rows x KC),
    /// the staged block of W (KC x SC), one panel (KC/2 x NR words).
    private static func backwardThreadBytes(rows: Int) -> Int {
        aligned(rows * kc * 2) + aligned(kc * stageStride * 2) + aligned(kc / 2 * nr * 4)
    }

    /// Backward stages W a KC x (up to) SC block at a time: SC = 8 panels, whole 64-element NF4 blocks,
    /// small enough that the staged block, the dy block and a panel stay in L2 together.
    static let sc = 8 * nr
    private static var stageStride: Int { rowStride(sc) }

    /// Bytes of workspace for GEMMs of up to `rows` activation rows over weights of up to `maxInFeatures`
    /// inputs, forward and backward, without splitting the rows into chunks.
    public static func workspaceBytes(rows: Int, maxInFeatures i: Int, threads: Int = Parallel.threads) -> Int {
        max(forwardWorkspaceBytes(rows: rows, inFeatures: i, threads: threads),
            backwardWorkspaceBytes(rows: rows, inFeatures: i, threads: threads))
    }

    /// Forward alone, `rows` activation rows at a time (fewer bytes make forward take the rows in chunks).
    static func forwardWorkspaceBytes(rows: Int, inFeatures i: Int, threads: Int = Parallel.threads) -> Int {
        alignment + aligned(rows * rowStride(i) * 2) + threads * forwardThreadBytes(inFeatures: i, staged: true)
    }

    /// Backward alone, `rows` activation rows at a time.
    static func backwardWorkspaceBytes(rows: Int, inFeatures i: Int, threads: Int = Parallel.threads) -> Int {
        alignment + threads * (backwardThreadBytes(rows: rows) + alignment)
    }

    /// The workspace from its first 64-byte boundary: (start, usable bytes).
    private static func alignedStart(_ base: UnsafeMutableRawPointer, bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        let skip = Int((UInt(alignment) - UInt(bitPattern: base) % UInt(alignment)) % UInt(alignment))
        return (base + skip, bytes - skip)
    }

    // MARK: - Forward

    /// y (M, O) = x (M, I) W^T, or += when `accumulate`.
    public static func forward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows m: Int, weight: any FrozenWeight,
                               accumulate: Bool = false, level: Int32, workspace: UnsafeMutableRawPointer, bytes: Int) {
        let i = weight.inFeatures, o = weight.outFeatures, pairs = even(i) / 2, ld = rowStride(i)
        guard m > 0, o > 0 else { return }
        let storage = weight.bfloat16Storage
        let panelCount = (o + nr - 1) / nr
        let threads = max(1, min(Parallel.threads, panelCount))
        // Layout: per thread [panel | staged rows], then the bf16 activations (all M rows when they fit).
        let (base, usable) = alignedStart(workspace, bytes: bytes)
        let panelBytes = aligned(pairs * nr * 4), perThread = forwardThreadBytes(inFeatures: i, staged: storage == nil)
        let a = (base + threads * perThread).assumingMemoryBound(to: UInt16.self)
        let chunk = min(m, max(0, usable - threads * perThread) / (ld * 2))
        precondition(chunk > 0, "bf16 GEMM workspace too small for one activation row")
        let aWords = UnsafeRawPointer(a).assumingMemoryBound(to: UInt32.self)
        var m0 = 0
        while m0 < m {
            let rows = min(chunk, m - m0)
            Parallel.forEachRange(rows, minimumPerChunk: 32) { r in
                qlora_bf16_from_f32_rows(level, a + r.lowerBound * ld, ld, x + (m0 + r.lowerBound) * i, i, r.count, i)
            }
            Parallel.forEach(threads) { t in
                let panel = (base + t * perThread).assumingMemoryBound(to: UInt32.self)
                let stage = (base + t * perThread + panelBytes).assumingMemoryBound(to: UInt16.self)
                for p in Parallel.range(chunk: t, of: threads, total: panelCount) {
                    let n0 = p * nr, width = min(nr, o - n0)
                    if let storage {
                        qlora_bf16_pack_transposed(level, panel, storage + n0 * i, i, width, i)
                    } else {
                        weight.writeBFloat16(rows: n0..<(n0 + width), columns: 0..<i, into: stage, ld: ld)
                        qlora_bf16_pack_transposed(level, panel, stage, ld, width, i)
                    }
                    qlora_bf16_gemm_panel(level, y + m0 * o + n0, o, aWords, ld / 2, panel, rows, pairs, width, accumulate ? 1 : 0)
                }
            }
            m0 += rows
        }
    }

    // MARK: - Backward

    /// dx (M, I) += dy (M, O) W.
    public static func backwardInput(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, rows m: Int, weight: any FrozenWeight,
                                     level: Int32, workspace: UnsafeMutableRawPointer, bytes: Int) {
        let i = weight.inFeatures, o = weight.outFeatures
        guard m > 0, i > 0, o > 0 else { return }
        let storage = weight.bfloat16Storage
        let panelCount = (i + nr - 1) / nr
        let threads = max(1, min(Parallel.threads, panelCount))
        // Layout per thread: [panel | staged block of W (KC x SC) | bf16 block of dy (chunk rows x KC)].
        let (base, usable) = alignedStart(workspace, bytes: bytes)
        let panelBytes = aligned(kc / 2 * nr * 4), stageBytes = aligned(kc * stageStride * 2)
        let chunk = min(m, max(0, usable / threads - panelBytes - stageBytes - alignment) / (kc * 2))
        precondition(chunk > 0, "bf16 GEMM workspace too small for one activation row")
        let perThread = panelBytes + stageBytes + aligned(chunk * kc * 2)
        let groupPanels = sc / nr
        Parallel.forEach(threads) { t in
            let panel = (base + t * perThread).assumingMemoryBound(to: UInt32.self)
            let stage = (base + t * perThread + panelBytes).assumingMemoryBound(to: UInt16.self)
            let block = (base + t * perThread + panelBytes + stageBytes).assumingMemoryBound(to: UInt16.self)
            let blockWords = UnsafeRawPointer(block).assumingMemoryBound(to: UInt32.self)
            let mine = Parallel.range(chunk: t, of: threads, total: panelCount)
            guard !mine.isEmpty else { return }
            var m0 = 0
            while m0 < m {
                let rows = min(chunk, m - m0)
                var k0 = 0
                while k0 < o {
                    let depth = min(kc, o - k0), pairs = (depth + 1) / 2
                    qlora_bf16_from_f32_rows(level, block, kc, dy + m0 * o + k0, o, rows, depth)
                    for g in stride(from: mine.lowerBound, to: mine.upperBound, by: groupPanels) {
                        let group = g..<min(mine.upperBound, g + groupPanels)
                        let c0 = group.lowerBound * nr, c1 = min(i, group.upperBound * nr)
                        if storage == nil {
                            weight.writeBFloat16(rows: k0..<(k0 + depth), columns: c0..<c1, into: stage, ld: stageStride)
                        }
                        for p in group {
                            let n0 = p * nr, width = min(nr, i - n0)
                            if let storage {
                                qlora_bf16_pack_rows(level, panel, storage + k0 * i + n0, i, width, depth)
                            } else {
                                qlora_bf16_pack_rows(level, panel, stage + (n0 - c0), stageStride, width, depth)
                            }
                            qlora_bf16_gemm_panel(level, dx + m0 * i + n0, i, blockWords, kc / 2, panel, rows, pairs, width, 1)
                        }
                    }
                    k0 += depth
                }
                m0 += rows
            }
        }
    }
}
