import Foundation
import Testing
@testable import QLoRA

@Suite("Quant codebooks")
struct QuantCodebookTests {
    let books = try! QuantFixtures.json("codebooks.json")

    @Test func nf4CodesAndMidpointsBitEqualReference() {
        let code = QuantFixtures.floatsFromHex(books["nf4_code_hex"] as! [String])
        let mids = QuantFixtures.floatsFromHex(books["nf4_midpoints_hex"] as! [String])
        #expect(bitMismatches(Codebook4.nf4.values, code) == nil)
        #expect(bitMismatches(Codebook4.nf4.midpoints, mids) == nil)
        #expect(Codebook4.nf4.isSorted)
    }

    @Test func fp4CodesBitEqualReferenceWithPositiveZeroAtPattern8() {
        let code = QuantFixtures.floatsFromHex(books["fp4_code_hex"] as! [String])
        #expect(bitMismatches(Codebook4.fp4.values, code) == nil)
        #expect(Codebook4.fp4.values[8].bitPattern == 0)
        #expect(Codebook4.fp4.nibbleOfSorted == [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3])
        #expect(!Codebook4.fp4.isSorted)
        // s = 0 -> 0, tiny positive -> 8, tiny negative -> 0
        #expect(Codebook4.fp4.nibble(for: 0) == 0)
        #expect(Codebook4.fp4.nibble(for: 0.002) == 8)
        #expect(Codebook4.fp4.nibble(for: -0.002) == 0)
    }

    @Test func dynamicMapRegeneratedBitEqualsReference() {
        let reference = QuantFixtures.floatsFromHex(books["dynamic_map_hex"] as! [String])
        #expect(bitMismatches(DynamicMap8.generate(), reference) == nil)
        #expect(DynamicMap8.values[127] == 0 && DynamicMap8.values[255] == 1)
    }

    @Test func cpuLUTIsMonotoneAndCoversAllCodes() {
        let lut = DynamicMap8.cpuLUT
        #expect(lut.count == 65536)
        #expect(lut[0] == 0 && lut[65535] == 255)
        #expect(zip(lut, lut.dropFirst()).allSatisfy { $0 <= $1 })
        // Each bin holds the nearest code (ties lower) of its value, found here by binary search.
        let wrong = (0..<65536).filter { i in lut[i] != DynamicMap8.nearestCode(-1 + (2 * Float(i)) / 65535) }
        #expect(wrong.isEmpty, "bins \(wrong.prefix(5))")
    }

    @Test func nearestCodeTiesGoToLowerCode() {
        for j in 0..<255 {
            let m = DynamicMap8.midpoints[j]
            #expect(DynamicMap8.nearestCode(m) == UInt8(j))
            #expect(DynamicMap8.nearestCode(m.nextUp) == UInt8(j + 1))
        }
    }

    @Test func bitsPerParameterFormula() {
        let dq = QuantizedTensor.bitsPerParameter(blocksize: 64, doubleQuant: true)
        let expected: Double = 4.0 + 8.0 / 64.0 + 32.0 / 16384.0
        #expect(dq == expected)
        #expect((dq * 1000).rounded() / 1000 == 4.127)
        #expect(QuantizedTensor.bitsPerParameter(blocksize: 64, doubleQuant: false) == 4.5)
    }
}
