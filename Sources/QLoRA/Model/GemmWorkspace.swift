/// Scratch memory of the frozen-weight GEMMs, a region of the activation arena (or the decoder's
/// scratch): for the fp32 kernel the dequantization tile (`tileRows` rows of W in fp32), for the bf16
/// kernel BF16Gemm's panels, staged weight rows and bf16 activations. One region serves both.
public struct GemmWorkspace {
    public let base: UnsafeMutablePointer<Float>
    public let floats: Int
    /// Rows of W per fp32 tile.
    public let tileRows: Int

    public init(base: UnsafeMutablePointer<Float>, floats: Int, tileRows: Int) {
        self.base = base
        self.floats = floats
        self.tileRows = tileRows
    }

    /// Floats to reserve for GEMMs of up to `rows` activation rows: the larger of the two kernels' needs.
    public static func floats(rows: Int, maxInFeatures: Int, tileRows: Int) -> Int {
        max(tileRows * maxInFeatures, (BF16Gemm.workspaceBytes(rows: rows, maxInFeatures: maxInFeatures) + 3) / 4)
    }

    var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(base) }
    var bytes: Int { floats * 4 }
}
