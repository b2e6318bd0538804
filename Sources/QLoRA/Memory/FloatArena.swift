/// A block of fp32 memory carved into named regions once, up front. Layout first (`reserve`), then one
/// allocation; the training step only reads and writes regions, it never allocates.
/// Regions are aligned to 16 floats (64 bytes, a cache line and an AVX-512 vector).
public final class FloatArena {
    public struct Region: Sendable, Equatable {
        public var name: String
        public var offset: Int
        public var count: Int
    }

    public private(set) var regions: [Region] = []
    public private(set) var count = 0
    private var base: UnsafeMutablePointer<Float>?

    public init() {}

    deinit { base?.deallocate() }

    /// Reserves `count` floats; returns the region's offset.
    @discardableResult
    public func reserve(_ name: String, _ count: Int) -> Int {
        precondition(base == nil, "reserve after allocate")
        let offset = self.count
        regions.append(Region(name: name, offset: offset, count: count))
        self.count += (count + 15) & ~15
        return offset
    }

    /// Allocates (zeroed) memory for every reserved region.
    public func allocate() {
        precondition(base == nil)
        let n = max(count, 16)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: n)
        base!.initialize(repeating: 0, count: n)
    }

    public var isAllocated: Bool { base != nil }
    public var bytes: Int { count * 4 }

    @inline(__always)
    public func pointer(_ offset: Int) -> UnsafeMutablePointer<Float> { base! + offset }

    /// Floats reserved in regions whose names start with `prefix`.
    public func floats(prefix: String) -> Int {
        regions.filter { $0.name.hasPrefix(prefix) }.reduce(0) { $0 + (($1.count + 15) & ~15) }
    }
}
