/// Tokenized examples by index, wherever they live: in memory (`InMemoryExamples`) or in a mapped
/// token file (`TokenFile`). The batcher reads rows through this, so it never needs them all at once.
public protocol TokenizedExampleSource: AnyObject {
    var exampleCount: Int { get }
    func length(ofExample index: Int) -> Int
    /// The example's final id (its length is at least 1).
    func lastID(ofExample index: Int) -> Int32
    /// Copies ids and labels of positions `range` of example `index` (within its length).
    func copy(example index: Int, range: Range<Int>, ids: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>)
    /// Called after each batch: a mapped source gives back the pages it read.
    func releaseResidentPages()
    /// Bytes this source holds in memory for indexing (not its mapped contents).
    var indexBytes: Int { get }
}

/// Examples held as arrays (tests, small evaluations).
public final class InMemoryExamples: TokenizedExampleSource {
    public let examples: [TokenizedExample]

    public init(_ examples: [TokenizedExample]) { self.examples = examples }

    public var exampleCount: Int { examples.count }
    public func length(ofExample index: Int) -> Int { examples[index].inputIDs.count }
    public func lastID(ofExample index: Int) -> Int32 { examples[index].inputIDs.last! }
    public func copy(example index: Int, range: Range<Int>, ids: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>) {
        let example = examples[index]
        for (k, t) in range.enumerated() {
            ids[k] = example.inputIDs[t]
            labels[k] = example.labels[t]
        }
    }
    public func releaseResidentPages() {}
    public var indexBytes: Int { examples.reduce(0) { $0 + 8 * $1.inputIDs.count } }
}
