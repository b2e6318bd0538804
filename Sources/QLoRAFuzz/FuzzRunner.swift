import Foundation

/// One generated input: the seed's files with one of them mutated.
public struct FuzzInput {
    public var index: Int
    public var target: FuzzTarget
    public var seedLabel: String
    public var files: [(name: String, bytes: [UInt8])]
    public var mutatedFile: String
    public var mutation: String
}

public enum FuzzOutcome: Equatable {
    case loaded
    case rejected
    /// Rejected, but the message does not say which file (or which tensor) is at fault.
    case vague(String)
}

/// Counts of a run (or part of one).
public struct FuzzCounts: Equatable {
    public var inputs = 0, loaded = 0, rejected = 0, vague = 0, crashes = 0, hangs = 0
    public init() {}

    public mutating func add(_ outcome: FuzzOutcome) {
        inputs += 1
        switch outcome {
        case .loaded: loaded += 1
        case .rejected: rejected += 1
        case .vague: rejected += 1; vague += 1
        }
    }

    public var summary: String {
        "\(inputs) inputs: \(loaded) loaded, \(rejected) rejected (\(vague) with a message that does not name the file / tensor), \(crashes) crashes, \(hangs) hangs"
    }
}

/// Generates input `index` of a run from (seed, index) alone and feeds it to its loader in-process.
/// The first `systematicCount` indexes truncate each seed file at each structural boundary in turn;
/// later ones are random mutations, targets chosen by `FuzzTarget.weight`.
public final class FuzzRunner {
    public let seed: UInt64
    public let seeds: [FuzzSeed]
    public let context: FuzzContext
    public let targets: [FuzzTarget]
    private let systematic: [(seed: Int, file: Int, cut: Int)]
    private let weighted: [(target: FuzzTarget, seeds: [Int], weight: Double)]
    private let totalWeight: Double
    private var directories: [FuzzTarget: URL] = [:]

    /// At most this many boundaries per seed file in the systematic phase (evenly spaced, the binary
    /// ones all kept), so big text files do not dominate.
    static let boundariesPerFile = 200

    public init(fixtures: URL, seed: UInt64, scratch: URL, targets: [FuzzTarget] = FuzzTarget.allCases) throws {
        self.seed = seed
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let loaded = try FuzzSeeds.load(fixtures: fixtures, scratch: scratch)
        let seeds = loaded.seeds
        self.seeds = seeds
        context = loaded.context
        self.targets = targets
        var systematic: [(Int, Int, Int)] = []
        for (s, seed) in seeds.enumerated() where targets.contains(seed.target) {
            for (m, mutable) in seed.mutable.enumerated() {
                // Every boundary of the first 64 (the header), then evenly spaced ones.
                let all = Array(Set(mutable.structure.boundaries + mutable.structure.fields.map(\.offset))).sorted()
                let step = max(1, all.count / Self.boundariesPerFile)
                let chosen = Set(all.prefix(64) + stride(from: 0, to: all.count, by: step).map { all[$0] })
                systematic += chosen.sorted().map { (s, m, $0) }
            }
        }
        self.systematic = systematic
        weighted = targets.map { target in (target, seeds.indices.filter { seeds[$0].target == target }, target.weight) }
            .filter { !$0.seeds.isEmpty }
        totalWeight = weighted.reduce(0.0) { $0 + $1.weight }
        for target in targets {
            let directory = scratch.appendingPathComponent("in-" + target.rawValue)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            directories[target] = directory
        }
    }

    public var systematicCount: Int { systematic.count }

    public func input(_ index: Int) -> FuzzInput {
        if index < systematic.count {
            let (s, m, cut) = systematic[index]
            var files = seeds[s].files
            let file = seeds[s].mutable[m].index
            files[file].bytes.removeSubrange(min(cut, files[file].bytes.count)...)
            return FuzzInput(index: index, target: seeds[s].target, seedLabel: seeds[s].label, files: files,
                             mutatedFile: files[file].name, mutation: "truncate at boundary \(cut)")
        }
        var rng = FuzzRandom(seed: seed, index: UInt64(index))
        var x = Double(rng.next() >> 11) / Double(1 << 53) * totalWeight
        var choice = weighted[weighted.count - 1]
        for entry in weighted {
            if x < entry.weight { choice = entry; break }
            x -= entry.weight
        }
        let s = rng.pick(choice.seeds)
        let seed = seeds[s]
        let mutable = rng.pick(seed.mutable)
        var files = seed.files
        let mutated = Mutator.mutate(files[mutable.index].bytes, format: mutable.format, structure: mutable.structure, rng: &rng)
        files[mutable.index].bytes = mutated.bytes
        return FuzzInput(index: index, target: seed.target, seedLabel: seed.label, files: files,
                         mutatedFile: files[mutable.index].name, mutation: mutated.what)
    }

    /// Writes the input's files into `directory` (replacing what was there).
    public func write(_ input: FuzzInput, to directory: URL) throws {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] where !input.files.contains(where: { $0.name == name }) {
            try? fm.removeItem(at: directory.appendingPathComponent(name))
        }
        for file in input.files {
            let url = directory.appendingPathComponent(file.name)
            // unlink first: a loader may still map the previous file's pages.
            unlink(url.path)
            guard fm.createFile(atPath: url.path, contents: Data(file.bytes)) else {
                throw RuntimeErrorForFuzz.cannotWrite(url.path)
            }
        }
    }

    /// Runs input `index` in this process.
    public func run(_ index: Int) throws -> (input: FuzzInput, outcome: FuzzOutcome) {
        let input = self.input(index)
        let directory = directories[input.target]!
        try write(input, to: directory)
        return (input, Self.check(input, directory: directory, context: context))
    }

    /// Loads (the outcome is `.loaded`) or judges the error message.
    static func check(_ input: FuzzInput, directory: URL, context: FuzzContext) -> FuzzOutcome {
        do {
            try TargetRunner.run(input.target, directory: directory, files: input.files.map(\.name), context: context)
            return .loaded
        } catch {
            // The message must say where: the mutated file, or (inputs of several files: a model or
            // adapter directory) the file or directory it conflicts with.
            let message = String(describing: error)
            let named = message.contains(input.mutatedFile)
                || (input.files.count > 1 && (input.files.contains { message.contains($0.name) } || message.contains(directory.path)))
            guard named else { return .vague(message) }
            if let tensor = faultyTensor(input), !message.contains(tensor.name) {
                // Some faults (offsets one past, another tensor's offsets) surface at a neighbour: any
                // tensor of the file is then the right one to name.
                let names = (try? JSONSerialization.jsonObject(with: Data(headerBytes(input.files[0].bytes)))) as? [String: Any]
                if tensor.exact || !(names?.keys.contains { $0 != "__metadata__" && message.contains("'\($0)'") } ?? false) {
                    return .vague("does not name tensor '\(tensor.name)': " + message)
                }
            }
            return .rejected
        }
    }

    /// For a single safetensors header rewrite of a one-file input, the tensor the error must name
    /// (`exact`: that tensor itself, else any tensor).
    static func faultyTensor(_ input: FuzzInput) -> (name: String, exact: Bool)? {
        guard input.target == .safetensorsFile, input.mutation.hasPrefix("header: '"), !input.mutation.contains(" + ") else { return nil }
        let rest = input.mutation.dropFirst("header: '".count)
        guard let quote = rest.firstIndex(of: "'") else { return nil }
        let what = rest[rest.index(after: quote)...]
        let exact = ["reversed offsets", "end Int.max", "negative begin", "shape product overflows", "negative dimension",
                     "fractional dimension", "field removed"].contains { what.contains($0) }
        let anyTensor = exact || ["offsets one past", "offsets of another tensor", "extra dimension"].contains { what.contains($0) }
        return anyTensor ? (String(rest[..<quote]), exact) : nil
    }

    static func headerBytes(_ bytes: [UInt8]) -> ArraySlice<UInt8> {
        guard bytes.count >= 8 else { return [] }
        let n = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        return n <= UInt64(bytes.count - 8) ? bytes[8..<(8 + Int(n))] : []
    }
}

enum RuntimeErrorForFuzz: Error, CustomStringConvertible {
    case cannotWrite(String)
    var description: String {
        switch self { case .cannotWrite(let path): "qlora-fuzz: cannot write the input file \(path)" }
    }
}
