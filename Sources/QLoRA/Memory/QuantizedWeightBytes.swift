/// Bytes of one 4-bit quantized weight, from its element count and the quantization options alone.
/// Mirrors `QuantizedTensor.storageBytes` / `residentBytes` (tested equal on real tensors), so the memory
/// plan needs no weights.
///
/// n elements, blocksize b, nb = ceil(n / b) blocks, nn = ceil(nb / 256) nested blocks:
/// - packed nibbles: ceil(n / 2) bytes
/// - absmax: 4 nb (plain float32), or nb u8 codes + 4 nn nested float32 absmax + 4 (the float32 offset)
/// Resident == stored: the runtime keeps only this form and computes each block's scale while dequantizing.
public enum QuantizedWeightBytes {
    /// bitsandbytes' nested block size for double quantization.
    public static let nestedBlocksize = 256

    public static func blocks(elements n: Int, blocksize: Int) -> Int { (n + blocksize - 1) / blocksize }

    /// The stored bytes (what a bitsandbytes checkpoint holds for the tensor, code tables excluded).
    public static func storage(elements n: Int, blocksize: Int, doubleQuant: Bool,
                               nestedBlocksize: Int = QuantizedWeightBytes.nestedBlocksize) -> Int {
        let packed = (n + 1) / 2
        let nb = blocks(elements: n, blocksize: blocksize)
        guard doubleQuant else { return packed + 4 * nb }
        let nn = (nb + nestedBlocksize - 1) / nestedBlocksize
        return packed + nb + 4 * nn + 4
    }

    /// Everything the tensor holds in memory: its stored form, nothing precomputed (== `storage`).
    public static func resident(elements n: Int, blocksize: Int, doubleQuant: Bool,
                                nestedBlocksize: Int = QuantizedWeightBytes.nestedBlocksize) -> Int {
        storage(elements: n, blocksize: blocksize, doubleQuant: doubleQuant, nestedBlocksize: nestedBlocksize)
    }

    public static func storage(elements n: Int, options: QuantizationOptions) -> Int {
        storage(elements: n, blocksize: options.blocksize, doubleQuant: options.doubleQuant)
    }

    public static func resident(elements n: Int, options: QuantizationOptions) -> Int {
        resident(elements: n, blocksize: options.blocksize, doubleQuant: options.doubleQuant)
    }
}
