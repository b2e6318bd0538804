import Foundation
import Testing
@testable import QLoRA

@Suite("Quant torch float32 mean")
struct QuantTorchMeanTests {
    let file = try! QuantFixtures.open("offset_cases.safetensors")

    @Test(arguments: [1, 2])
    func prefixSumsAndMeansBitExact(threads: Int) throws {
        let x = try file.floats("x")
        let lengths = try file.integers("lengths")
        let sums = try file.floats(threads == 1 ? "sum_1thread" : "sum_2threads")
        let means = try file.floats(threads == 1 ? "mean_1thread" : "mean_2threads")
        var gotSums: [Float] = [], gotMeans: [Float] = []
        x.withUnsafeBufferPointer { buffer in
            for n in lengths {
                let prefix = UnsafeBufferPointer(rebasing: buffer[0..<n])
                gotSums.append(TorchFloat32Sum.sum(prefix, threads: threads))
                gotMeans.append(TorchFloat32Sum.mean(prefix, threads: threads))
            }
        }
        #expect(bitMismatches(gotSums, sums) == nil, "sums, \(threads) thread(s)")
        #expect(bitMismatches(gotMeans, means) == nil, "means, \(threads) thread(s)")
    }

    /// hash(n)[i] = (2^23 + (h >> 9)) * 2^-27, h = (i * 2654435761) mod 2^32: lengths up to 40M.
    @Test(arguments: [1, 2])
    func hashSumsAndMeansBitExact(threads: Int) throws {
        let lengths = try file.integers("hash_lengths")
        let sums = try file.floats(threads == 1 ? "hash_sum_1thread" : "hash_sum_2threads")
        let means = try file.floats(threads == 1 ? "hash_mean_1thread" : "hash_mean_2threads")
        let longest = lengths.max()!
        let values = [Float](unsafeUninitializedCapacity: longest) { buffer, count in
            for i in 0..<longest {
                let h = UInt32(truncatingIfNeeded: UInt64(i) &* 2654435761)
                buffer[i] = Float(bitPattern: UInt32(127 - 27 + 23) << 23 | (h >> 9))   // (2^23 + m) * 2^-27
            }
            count = longest
        }
        #expect(values[0] == 0.0625 && values[1] < 0.125)
        var gotSums: [Float] = [], gotMeans: [Float] = []
        values.withUnsafeBufferPointer { buffer in
            for n in lengths {
                let prefix = UnsafeBufferPointer(rebasing: buffer[0..<n])
                gotSums.append(TorchFloat32Sum.sum(prefix, threads: threads))
                gotMeans.append(TorchFloat32Sum.mean(prefix, threads: threads))
            }
        }
        #expect(bitMismatches(gotSums, sums) == nil, "hash sums, \(threads) thread(s)")
        #expect(bitMismatches(gotMeans, means) == nil, "hash means, \(threads) thread(s)")
    }
}
