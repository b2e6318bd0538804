import CQLoRAKernels
import Testing
@testable import QLoRA

/// The decode matrix-vector kernels (CQLoRAKernels/Gemv.c): every SIMD level bit-identical to the scalar
/// twin, and the twin equal to the dot products of the weights the tile path writes (within fp32 rounding).
@Suite struct KernelGemvTests {
    static var levels: [Int32] { Array(0...qlora_kernels_best_level()) }

    /// Dot products in Double of the weights `writeTile` writes.
    static func reference(_ weight: any FrozenWeight, x: [Float], precision: ComputePrecision) -> [Double] {
        var tile = [Float](repeating: 0, count: weight.outFeatures * weight.inFeatures)
        tile.withUnsafeMutableBufferPointer { weight.writeTile(rows: 0..<weight.outFeatures, into: $0.baseAddress!, precision: precision) }
        return (0..<weight.outFeatures).map { r in
            (0..<weight.inFeatures).reduce(0.0) { $0 + Double(tile[r * weight.inFeatures + $1]) * Double(x[$1]) }
        }
    }

    static func expectNear(_ y: [Float], _ reference: [Double], _ what: String) {
        let scale = reference.map(abs).max() ?? 1
        let worst = zip(y, reference).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(worst <= 1e-5 * max(1, scale), "\(what): worst \(worst), scale \(scale)")
    }

    @Test(arguments: [(QuantType.nf4, 64, true), (.fp4, 64, false), (.nf4, 128, true), (.nf4, 32, false)])
    func fourBitLevelsAgreeBitForBit(_ type: QuantType, _ blocksize: Int, _ doubleQuant: Bool) throws {
        var random = KernelRandom(seed: 21)
        for (o, i) in [(1, 256), (7, 576), (33, 1536)] where i % blocksize == 0 {
            let weight = try QuantizedWeight.quantize(random.floats(o * i), shape: [o, i],
                                                      options: QuantizationOptions(quantType: type, blocksize: blocksize, doubleQuant: doubleQuant))
            let x = random.floats(i, -2, 2)
            for precision in [ComputePrecision.fp32, .bf16] {
                #expect(weight.hasMatrixVector(precision: precision))
                var results: [[Float]] = []
                for level in Self.levels {
                    var y = [Float](repeating: .nan, count: o)
                    y.withUnsafeMutableBufferPointer {
                        weight.tensor.matrixVector(y: $0.baseAddress!, x: x, rows: 0..<o, precision: precision.dequantPrecision, level: level)
                    }
                    results.append(y)
                }
                for (level, y) in results.enumerated() {
                    #expect(y.map(\.bitPattern) == results[0].map(\.bitPattern), "\(type) \(blocksize) \(precision) level \(level) vs scalar, \(o)x\(i)")
                }
                Self.expectNear(results[0], Self.reference(weight, x: x, precision: precision), "\(type) \(precision) \(o)x\(i)")
                // A row range reads the same rows.
                var part = [Float](repeating: .nan, count: o - o / 2)
                part.withUnsafeMutableBufferPointer { weight.matrixVector(y: $0.baseAddress!, x: x, rows: (o / 2)..<o, precision: precision) }
                #expect(part.map(\.bitPattern) == results.last!.suffix(o - o / 2).map(\.bitPattern))
            }
        }
        #expect(!(try QuantizedWeight.quantize([Float](repeating: 1, count: 2 * 96), shape: [2, 96], options: QuantizationOptions()))
                    .hasMatrixVector(precision: .bf16), "a row of 1.5 blocks has no kernel")
    }

    @Test func bf16LevelsAgreeBitForBit() {
        var random = KernelRandom(seed: 22)
        for (o, i) in [(1, 5), (9, 77), (6, 576), (3, 33)] {
            let weight = DenseBFloat16Weight(outFeatures: o, inFeatures: i, floats: random.floats(o * i))
            let x = random.floats(i, -2, 2)
            var results: [[Float]] = []
            for level in Self.levels {
                var y = [Float](repeating: .nan, count: o)
                y.withUnsafeMutableBufferPointer { qlora_gemv_bf16(level, $0.baseAddress!, x, o, i, weight.bfloat16Storage!, i) }
                results.append(y)
            }
            for (level, y) in results.enumerated() {
                #expect(y.map(\.bitPattern) == results[0].map(\.bitPattern), "bf16 level \(level) vs scalar, \(o)x\(i)")
            }
            Self.expectNear(results[0], Self.reference(weight, x: x, precision: .bf16), "bf16 \(o)x\(i)")
            #expect(weight.hasMatrixVector(precision: .bf16) && !weight.hasMatrixVector(precision: .fp16))
        }
    }

    @Test func fp32LevelsAgreeBitForBit() {
        var random = KernelRandom(seed: 25)
        for (o, i) in [(1, 5), (9, 77), (6, 576), (3, 40)] {
            let weight = DenseFloatWeight(outFeatures: o, inFeatures: i, values: random.floats(o * i))
            let x = random.floats(i, -2, 2)
            let results: [[Float]] = Self.levels.map { level in
                var y = [Float](repeating: .nan, count: o)
                y.withUnsafeMutableBufferPointer { qlora_gemv_f32(level, $0.baseAddress!, x, o, i, weight.values.baseAddress!, i) }
                return y
            }
            for (level, y) in results.enumerated() {
                #expect(y.map(\.bitPattern) == results[0].map(\.bitPattern), "fp32 level \(level) vs scalar, \(o)x\(i)")
            }
            Self.expectNear(results[0], Self.reference(weight, x: x, precision: .fp32), "fp32 \(o)x\(i)")
            #expect(weight.hasMatrixVector(precision: .fp32) && !weight.hasMatrixVector(precision: .bf16))
        }
    }

    /// x as bf16 pairs zero-padded to a multiple of 32 elements, and its values.
    static func bf16Pairs(_ x: [Float]) -> ([UInt32], [Float]) {
        let rounded = x.map(KernelBF16GemmTests.bf16)
        var words = [UInt32](repeating: 0, count: (x.count + 31) / 32 * 16)
        for (k, v) in rounded.enumerated() { words[k / 2] |= (v.bitPattern >> 16) << (k % 2 == 0 ? 0 : 16) }
        return (words, rounded)
    }

    @Test func bf16DotKernelsMatchTheirTwin() throws {
        var random = KernelRandom(seed: 24)
        let levels: [Int32] = GemmKernel.hardwareHasBF16 ? [0, 1] : [0]
        // Block sizes 32 (32-element groups) and 64+ (64-element chunks, Gemv.h); FP4; rows of zeros and of
        // values so small that the block tables take the integer rounding.
        let cases: [(Int, Int, QuantizationOptions)] = [
            (1, 64, QuantizationOptions()), (5, 576, QuantizationOptions()), (8, 1536, QuantizationOptions()),
            (7, 256, QuantizationOptions(blocksize: 32)), (3, 512, QuantizationOptions(blocksize: 128, doubleQuant: false)),
            (4, 1024, QuantizationOptions(quantType: .fp4, blocksize: 256)), (6, 192, QuantizationOptions(doubleQuant: false)),
        ]
        for (o, i, options) in cases {
            var values = random.floats(o * i)
            if o >= 6 {
                for k in 0..<i { values[k] = 0; values[i + k] *= 3e-38 }
            }
            let weight = try QuantizedWeight.quantize(values, shape: [o, i], options: options)
            let dense = DenseBFloat16Weight(outFeatures: o, inFeatures: i + 13, floats: random.floats(o * (i + 13)))
            for w in [weight, dense] as [any FrozenWeight] {
                let (pairs, xValues) = Self.bf16Pairs(random.floats(w.inFeatures, -2, 2))
                let results: [[Float]] = levels.map { level in
                    var y = [Float](repeating: .nan, count: o)
                    y.withUnsafeMutableBufferPointer {
                        w.matrixVectorBF16(y: $0.baseAddress!, ldy: o, x: pairs, ldx: pairs.count, vectors: 1, rows: 0..<o, level: level)
                    }
                    return y
                }
                // Three vectors at once: each bit-identical to its own call.
                let others = (0..<2).map { _ in Self.bf16Pairs(random.floats(w.inFeatures, -2, 2)).0 }
                let stacked = pairs + others.joined()
                for level in levels {
                    var y = [Float](repeating: .nan, count: 3 * o)
                    y.withUnsafeMutableBufferPointer {
                        w.matrixVectorBF16(y: $0.baseAddress!, ldy: o, x: stacked, ldx: pairs.count, vectors: 3, rows: 0..<o, level: level)
                    }
                    for v in 0..<3 {
                        var single = [Float](repeating: .nan, count: o)
                        let x = v == 0 ? pairs : others[v - 1]
                        single.withUnsafeMutableBufferPointer {
                            w.matrixVectorBF16(y: $0.baseAddress!, ldy: o, x: x, ldx: x.count, vectors: 1, rows: 0..<o, level: level)
                        }
                        #expect(Array(y[(v * o)..<((v + 1) * o)]).map(\.bitPattern) == single.map(\.bitPattern),
                                "\(type(of: w)) vector \(v) of 3 at level \(level)")
                    }
                }
                for (level, y) in results.enumerated() {
                    #expect(y.map(\.bitPattern) == results[0].map(\.bitPattern), "\(type(of: w)) bf16 dot level \(level) vs twin, \(o)x\(w.inFeatures)")
                }
                Self.expectNear(results[0], Self.reference(w, x: xValues, precision: .bf16), "\(type(of: w)) bf16 dot \(o)x\(w.inFeatures)")
            }
        }
    }

    /// BaseLinear's one-row forward (the decode path) against its many-row GEMM on the same row.
    @Test func oneRowForwardMatchesTheGemm() throws {
        var random = KernelRandom(seed: 23)
        let (o, i) = (150, 192)
        let weight = try QuantizedWeight.quantize(random.floats(o * i), shape: [o, i], options: QuantizationOptions())
        let linear = BaseLinear(weight: weight, precision: .bf16)
        let x = random.floats(2 * i)
        let floats = GemmWorkspace.floats(rows: 2, maxInFeatures: i, tileRows: 64)
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        let workspace = GemmWorkspace(base: buffer, floats: floats, tileRows: 64)
        // fp32 activations on the fp32 kernel, bf16 ones on the bf16 kernels: the same numbers both ways.
        for kernel in [GemmKernel.fp32, .bf16Reference] + (GemmKernel.hardwareHasBF16 ? [.bf16] : []) {
            linear.kernel = kernel
            var one = [Float](repeating: 0, count: o), two = [Float](repeating: 0, count: 2 * o)
            one.withUnsafeMutableBufferPointer { linear.forward(y: $0.baseAddress!, x: x, rows: 1, workspace: workspace) }
            two.withUnsafeMutableBufferPointer { linear.forward(y: $0.baseAddress!, x: x, rows: 2, workspace: workspace) }
            expectClose(one, Array(two[0..<o]), tolerance: 1e-5, "one row vs GEMM on \(kernel)")
        }
    }
}
