/// Every trainable tensor (LoRA A/B, modules_to_save) in one flat fp32 arena:
/// [ parameters | gradients | AdamW exp_avg | AdamW exp_avg_sq ], each section laid out alike.
/// Allocated once; nothing in the training step allocates.
public final class TrainableParameters {
    public struct Entry: Sendable, Equatable {
        /// The PEFT adapter key, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
        public var key: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int
    }

    public private(set) var entries: [Entry] = []
    public let count: Int
    /// 4 sections when training (params, grads, m, v), 1 for inference.
    public let sections: Int
    private let storage: UnsafeMutablePointer<Float>

    /// Lays out `tensors` (key, shape) in the given order. Offsets are rounded to 16 floats (64 bytes).
    public init(tensors: [(key: String, shape: [Int])], withOptimizerState: Bool = true) {
        var offset = 0
        for (key, shape) in tensors {
            let n = shape.reduce(1, *)
            entries.append(Entry(key: key, shape: shape, offset: offset, count: n))
            offset += Self.padded(n)
        }
        count = offset
        sections = withOptimizerState ? 4 : 1
        storage = .allocate(capacity: max(1, count * sections))
        storage.initialize(repeating: 0, count: max(1, count * sections))
    }

    deinit { storage.deallocate() }

    /// The arena's size in floats for these shapes (shared with the memory plan).
    public static func arenaFloats(shapes: [[Int]]) -> Int { shapes.reduce(0) { $0 + padded($1.reduce(1, *)) } }

    @inline(__always) static func padded(_ n: Int) -> Int { (n + 15) & ~15 }

    public var parameters: UnsafeMutablePointer<Float> { storage }
    public var gradients: UnsafeMutablePointer<Float> { precondition(sections == 4); return storage + count }
    public var expAvg: UnsafeMutablePointer<Float> { precondition(sections == 4); return storage + 2 * count }
    public var expAvgSq: UnsafeMutablePointer<Float> { precondition(sections == 4); return storage + 3 * count }

    /// Number of trainable scalars (without padding).
    public var parameterCount: Int { entries.reduce(0) { $0 + $1.count } }
    /// Bytes of one section (parameters, or gradients, ...), padding included.
    public var sectionBytes: Int { count * 4 }

    public func entry(_ key: String) -> Entry? { entries.first { $0.key == key } }

    public func parameter(_ entry: Entry) -> UnsafeMutablePointer<Float> { storage + entry.offset }
    public func gradient(_ entry: Entry) -> UnsafeMutablePointer<Float> { gradients + entry.offset }

    public func zeroGradients() { gradients.update(repeating: 0, count: count) }

    /// A copy of one section of one tensor (tests, saving).
    public func values(_ entry: Entry, section: Int = 0) -> [Float] {
        Array(UnsafeBufferPointer(start: storage + section * count + entry.offset, count: entry.count))
    }

    public func setValues(_ entry: Entry, _ values: [Float], section: Int = 0) {
        precondition(values.count == entry.count)
        (storage + section * count + entry.offset).update(from: values, count: values.count)
    }
}
