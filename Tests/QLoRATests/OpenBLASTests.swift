import Testing
@testable import QLoRA

@Suite struct OpenBLASTests {
    @Test func loadedKernelMatchesTheCPU() throws {
        let blas = try OpenBLAS.ensureLoaded()
        let cpu = CPUFeatures.current
        // The trap: Debian's OpenBLAS falls back to the SSE3 Prescott kernel on CPUs it does not know.
        if cpu.hasAVX512 || cpu.hasAVX2 {
            #expect(!["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Barcelona"].contains(blas.corename),
                    "loaded \(blas.corename) on a CPU with \(cpu.hasAVX512 ? "AVX-512" : "AVX2")")
        }
        if case .chosen(let name) = blas.choice {
            #expect(blas.corename == name)
        }
    }

    @Test func preferredCoretypeFollowsFlags() {
        let avx512 = CPUFeatures(flags: ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"], modelName: "x")
        let avx2 = CPUFeatures(flags: ["avx2", "fma"], modelName: "x")
        #expect(OpenBLAS.preferredCoretype(for: avx512) == "SkylakeX")
        #expect(OpenBLAS.preferredCoretype(for: avx2) == "Haswell")
        #expect(OpenBLAS.preferredCoretype(for: CPUFeatures(flags: ["sse3"], modelName: "x")) == nil)
    }

    @Test func sgemmMatchesNaiveProduct() {
        let m = 5, n = 7, k = 3
        let a = (0..<(m * k)).map { Float($0 % 5) - 2 }
        let b = (0..<(k * n)).map { Float($0 % 3) * 0.5 }
        var c = [Float](repeating: 1, count: m * n)
        Blas.sgemm(&c, ldc: n, a, lda: k, b, ldb: n, m: m, n: n, k: k, alpha: 1, beta: 0)
        for i in 0..<m { for j in 0..<n {
            var s: Float = 0
            for p in 0..<k { s += a[i * k + p] * b[p * n + j] }
            #expect(c[i * n + j] == s)
        } }
    }

    @Test func parsesCpuinfo() {
        let text = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512f\n\nprocessor\t: 1\nflags\t: sse\n"
        let cpu = CPUFeatures.parse(cpuinfo: text)
        #expect(cpu.modelName == "Test CPU")
        #expect(cpu.flags.contains("avx512f") && !cpu.flags.contains("sse"))
    }

    /// A missing library is an error with the install command (never a crash): `ensureLoaded` reports it,
    /// and every command calls it before any GEMM.
    @Test func aMissingLibraryIsAClearError() {
        do {
            _ = try OpenBLAS.load(candidates: ["/nonexistent/libopenblas.so.0"])
            Issue.record("loading a nonexistent library succeeded")
        } catch let error as RuntimeError {
            #expect("\(error)".contains("apt-get install -y libopenblas-dev"), "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
