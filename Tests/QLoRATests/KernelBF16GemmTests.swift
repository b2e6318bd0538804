import Testing
@testable import QLoRA

/// The bf16 GEMM (Kernels/BF16Gemm.swift over CQLoRAKernels/GemmBF16.c) against a naive Swift statement
/// of its arithmetic (vdpbf16ps: bf16 operands, per pair acc += hi*hi then acc += lo*lo, each one fused
/// multiply-add, denormals flushed), bit for bit; and the AVX-512 level against the scalar twin.
@Suite struct KernelBF16GemmTests {
    // MARK: - The arithmetic, written out

    static func bf16(_ x: Float) -> Float {
        let b = x.bitPattern
        if x.isNaN { return Float(bitPattern: (b | 0x0040_0000) & 0xffff_0000) }
        return Float(bitPattern: (b &+ 0x7fff &+ ((b >> 16) & 1)) & 0xffff_0000)
    }

    /// Denormal -> zero of the same sign.
    static func flush(_ x: Float) -> Float { x.isSubnormal ? Float(sign: x.sign, exponent: 0, significand: 0) : x }

    /// c (m, n) (+)= bf16(a) (m, k) bf16(b)^T where b is (n, k): one sequential sum per element.
    static func naive(a: [Float], b: [Float], m: Int, n: Int, k: Int, accumulateOnto c0: [Float]? = nil) -> [Float] {
        let a16 = a.map(bf16), b16 = b.map(bf16)
        var c = c0 ?? [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var acc = c[i * n + j]
                for p in 0..<((k + 1) / 2) {
                    let hiA: Float = 2 * p + 1 < k ? a16[i * k + 2 * p + 1] : 0
                    let hiB: Float = 2 * p + 1 < k ? b16[j * k + 2 * p + 1] : 0
                    acc = flush(flush(acc).addingProduct(flush(hiA), flush(hiB)))
                    acc = flush(acc.addingProduct(flush(a16[i * k + 2 * p]), flush(b16[j * k + 2 * p])))
                }
                c[i * n + j] = acc
            }
        }
        return c
    }

    static func transpose(_ x: [Float], rows: Int, columns: Int) -> [Float] {
        var t = [Float](repeating: 0, count: x.count)
        for r in 0..<rows { for c in 0..<columns { t[c * rows + r] = x[r * columns + c] } }
        return t
    }

    // MARK: - Weights in every storage the kernel reads

    enum Storage: String, CaseIterable, CustomStringConvertible { case fp32, bf16, nf4, fp4; var description: String { rawValue } }

    /// The weight and the fp32 values it stands for (which the kernel then rounds to bf16).
    static func weight(_ storage: Storage, out o: Int, in i: Int, values: [Float]) throws -> (any FrozenWeight, [Float]) {
        switch storage {
        case .fp32:
            return (DenseFloatWeight(outFeatures: o, inFeatures: i, values: values), values)
        case .bf16:
            return (DenseBFloat16Weight(outFeatures: o, inFeatures: i, floats: values), values.map(bf16))
        case .nf4, .fp4:
            let w = try QuantizedWeight.quantize(values, shape: [o, i], options: QuantizationOptions(quantType: storage == .nf4 ? .nf4 : .fp4))
            var dense = [Float](repeating: 0, count: o * i)
            dense.withUnsafeMutableBufferPointer { w.writeTile(rows: 0..<o, into: $0.baseAddress!, precision: .fp32) }
            return (w, dense)
        }
    }

    static func workspace(rows: Int, inFeatures: Int, outFeatures: Int) -> UnsafeMutableRawBufferPointer {
        let bytes = BF16Gemm.workspaceBytes(rows: rows, maxInFeatures: max(inFeatures, outFeatures))
        return .allocate(byteCount: bytes, alignment: 16)
    }

    static func forward(_ w: any FrozenWeight, x: [Float], rows m: Int, level: Int32, onto y0: [Float]? = nil,
                        workspaceBytes: Int? = nil) -> [Float] {
        var y = y0 ?? [Float](repeating: .nan, count: m * w.outFeatures)
        let space = workspace(rows: m, inFeatures: w.inFeatures, outFeatures: w.outFeatures)
        defer { space.deallocate() }
        y.withUnsafeMutableBufferPointer { yb in
            BF16Gemm.forward(y: yb.baseAddress!, x: x, rows: m, weight: w, accumulate: y0 != nil, level: level,
                             workspace: space.baseAddress! + 1, bytes: min(workspaceBytes ?? space.count, space.count - 1))
        }
        return y
    }

    static func backward(_ w: any FrozenWeight, dy: [Float], rows m: Int, level: Int32, onto dx0: [Float],
                         workspaceBytes: Int? = nil) -> [Float] {
        var dx = dx0
        let space = workspace(rows: m, inFeatures: w.inFeatures, outFeatures: w.outFeatures)
        defer { space.deallocate() }
        dx.withUnsafeMutableBufferPointer { db in
            BF16Gemm.backwardInput(dx: db.baseAddress!, dy: dy, rows: m, weight: w, level: level,
                                   workspace: space.baseAddress! + 1, bytes: min(workspaceBytes ?? space.count, space.count - 1))
        }
        return dx
    }

    static func expectBitEqual(_ a: [Float], _ b: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let first = zip(a, b).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(a.count == b.count && first == nil,
                "\(what): element \(first?.offset ?? -1): \(first.map { "\($0.element.0) vs \($0.element.1)" } ?? "count \(a.count) vs \(b.count)")",
                sourceLocation: sourceLocation)
    }

    /// (M, I, O): odd K, partial panels and register tiles, one K block and several in backward (KC = 512),
    /// more than one staged column group (SC = 256).
    static let shapes: [(Int, Int, Int)] = [(1, 2, 1), (13, 77, 70), (25, 64, 33), (7, 130, 601), (5, 600, 40)]

    // MARK: - Tests

    @Test(arguments: Storage.allCases)
    func twinMatchesTheWrittenOutArithmetic(_ storage: Storage) throws {
        var random = KernelRandom(seed: 7)
        for (m, i, o) in Self.shapes {
            let (w, dense) = try Self.weight(storage, out: o, in: i, values: random.floats(o * i))
            let x = random.floats(m * i, -2, 2), dy = random.floats(m * o)
            Self.expectBitEqual(Self.forward(w, x: x, rows: m, level: 0),
                                Self.naive(a: x, b: dense, m: m, n: o, k: i), "\(storage) forward \(m)x\(i)x\(o)")
            let y0 = random.floats(m * o)
            Self.expectBitEqual(Self.forward(w, x: x, rows: m, level: 0, onto: y0),
                                Self.naive(a: x, b: dense, m: m, n: o, k: i, accumulateOnto: y0), "\(storage) forward += \(m)x\(i)x\(o)")
            let dx0 = random.floats(m * i)
            Self.expectBitEqual(Self.backward(w, dy: dy, rows: m, level: 0, onto: dx0),
                                Self.naive(a: dy, b: Self.transpose(dense, rows: o, columns: i), m: m, n: i, k: o, accumulateOnto: dx0),
                                "\(storage) backward \(m)x\(i)x\(o)")
        }
    }

    @Test func resultsDoNotDependOnHowTheRowsAreChunked() throws {
        var random = KernelRandom(seed: 11)
        let (m, i, o) = (40, 96, 80)
        let (w, _) = try Self.weight(.nf4, out: o, in: i, values: random.floats(o * i))
        let x = random.floats(m * i), dy = random.floats(m * o), dx0 = random.floats(m * i)
        // Workspace for 5 (forward) and 3 (backward) rows at a time.
        let small = BF16Gemm.forwardWorkspaceBytes(rows: 5, inFeatures: i)
        Self.expectBitEqual(Self.forward(w, x: x, rows: m, level: 0, workspaceBytes: small),
                            Self.forward(w, x: x, rows: m, level: 0), "forward in chunks")
        let smallBackward = BF16Gemm.backwardWorkspaceBytes(rows: 3, inFeatures: i)
        Self.expectBitEqual(Self.backward(w, dy: dy, rows: m, level: 0, onto: dx0, workspaceBytes: smallBackward),
                            Self.backward(w, dy: dy, rows: m, level: 0, onto: dx0), "backward in chunks")
    }

    @Test(.enabled(if: GemmKernel.hardwareHasBF16, "this CPU has no AVX512-BF16; the twin is tested against the arithmetic above"),
          arguments: Storage.allCases)
    func simdMatchesTheTwinBitForBit(_ storage: Storage) throws {
        var random = KernelRandom(seed: 3)
        for (m, i, o) in Self.shapes + [(37, 160, 97)] {
            var values = random.floats(o * i)
            // Denormals, tiny and huge values, signed zeros: the flushing and rounding edges.
            for (k, special) in [Float(1e-39), -1e-40, 1e-30, -0.0, 3e38, 1.5e-38].enumerated() where k < values.count {
                values[(k * 7919) % values.count] = special
            }
            let (w, _) = try Self.weight(storage, out: o, in: i, values: values)
            var x = random.floats(m * i, -3, 3)
            for (k, special) in [Float(2e-39), -3e-41, 1e20, -0.0, 6e-39].enumerated() where k < x.count { x[(k * 104729) % x.count] = special }
            let dy = random.floats(m * o), dx0 = random.floats(m * i), y0 = random.floats(m * o)
            Self.expectBitEqual(Self.forward(w, x: x, rows: m, level: 1), Self.forward(w, x: x, rows: m, level: 0),
                                "\(storage) forward \(m)x\(i)x\(o)")
            Self.expectBitEqual(Self.forward(w, x: x, rows: m, level: 1, onto: y0), Self.forward(w, x: x, rows: m, level: 0, onto: y0),
                                "\(storage) forward += \(m)x\(i)x\(o)")
            Self.expectBitEqual(Self.backward(w, dy: dy, rows: m, level: 1, onto: dx0), Self.backward(w, dy: dy, rows: m, level: 0, onto: dx0),
                                "\(storage) backward \(m)x\(i)x\(o)")
        }
    }

    @Test func bf16StagingIsTheRoundedFloatDequantization() throws {
        var random = KernelRandom(seed: 5)
        let (o, i) = (9, 150)
        for storage in [Storage.nf4, .fp4, .fp32] {
            let (w, dense) = try Self.weight(storage, out: o, in: i, values: random.floats(o * i))
            let columns = 17..<120, rows = 2..<8, ld = 104
            var staged = [UInt16](repeating: 0xffff, count: rows.count * ld)
            staged.withUnsafeMutableBufferPointer { w.writeBFloat16(rows: rows, columns: columns, into: $0.baseAddress!, ld: ld) }
            for (r, row) in rows.enumerated() {
                for (c, column) in columns.enumerated() {
                    #expect(Float(bitPattern: UInt32(staged[r * ld + c]) << 16).bitPattern == Self.bf16(dense[row * i + column]).bitPattern,
                            "\(storage) row \(row) column \(column)")
                }
            }
        }
    }

    @Test func kernelChoiceFromTheEnvironment() throws {
        #expect(try GemmKernel.fromEnvironment([:]) == nil)
        #expect(try GemmKernel.fromEnvironment(["QLORA_KERNEL": "fp32"]) == .fp32)
        #expect(try GemmKernel.fromEnvironment(["QLORA_KERNEL": "bf16-reference"]) == .bf16Reference)
        #expect(throws: RuntimeError.self) { try GemmKernel.fromEnvironment(["QLORA_KERNEL": "avx9000"]) }
        if GemmKernel.hardwareHasBF16 {
            #expect(try GemmKernel.fromEnvironment(["QLORA_KERNEL": "bf16"]) == .bf16)
        } else {
            #expect(throws: RuntimeError.self) { try GemmKernel.fromEnvironment(["QLORA_KERNEL": "bf16"]) }
        }
        #expect(GemmKernel.bf16Reference.level == 0 && GemmKernel.fp32.usesBF16 == false)
    }
}
