import Foundation
import QLoRA

/// The adapter options of `generate` and `eval`: `--adapter [NAME=]DIR[,...]` names one or more PEFT
/// adapters of the model; `--use NAME` picks one, `--weights a=0.7,b=0.3 [--combination linear|cat]`
/// combines them as PEFT's add_weighted_adapter does, `--save-combined DIR` writes that combination.
struct AdapterSelection {
    static let valueOptions: Set<String> = ["adapter", "use", "weights", "combination", "save-combined"]
    static let helpText = """
          --adapter LIST           comma-separated PEFT adapter directories, each optionally NAME=DIR
                                   (the name defaults to the directory's last component)
          --use NAME               with several adapters: the one to use
          --weights LIST           combine adapters, e.g. a=0.7,b=0.3, as PEFT's add_weighted_adapter
          --combination linear|cat linear (equal ranks, default) or cat (any ranks: r = the sum)
          --save-combined DIR      write the combined adapter there (PEFT format)
        """

    var named: [(name: String, directory: URL)] = []
    var use: String?
    var weights: [(name: String, weight: Double)] = []
    var combination = LoRACombination.linear
    var saveCombined: URL?

    init(_ args: Arguments) throws {
        let command = args.command
        for item in args.list("adapter") ?? [] {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            let directory = URL(fileURLWithPath: parts.count == 2 ? parts[1] : parts[0])
            let name = parts.count == 2 ? parts[0] : directory.lastPathComponent
            guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("adapter_config.json").path) else {
                throw CLIError.failed("qlora \(command): \(directory.path) is not a PEFT adapter (no adapter_config.json).")
            }
            guard !named.contains(where: { $0.name == name }) else {
                throw CLIError.failed("qlora \(command): two adapters are named \(name); name them with NAME=DIR.")
            }
            named.append((name, directory))
        }
        let names = named.map(\.name).joined(separator: ", ")
        use = args.string("use")
        if let use, !named.contains(where: { $0.name == use }) {
            throw CLIError.failed("qlora \(command): --use \(use): no adapter of that name; loaded: \(names.isEmpty ? "none" : names).")
        }
        for item in args.list("weights") ?? [] {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let weight = Double(parts[1]), weight.isFinite else {
                throw CLIError.badValue(command: command, option: "weights", value: item, expected: "NAME=NUMBER")
            }
            guard named.contains(where: { $0.name == parts[0] }) else {
                throw CLIError.failed("qlora \(command): --weights names \(parts[0]), which is not loaded; loaded: \(names.isEmpty ? "none" : names).")
            }
            weights.append((parts[0], weight))
        }
        combination = LoRACombination(rawValue: try args.choice("combination", LoRACombination.allCases.map(\.rawValue), default: "linear"))!
        saveCombined = args.string("save-combined").map { URL(fileURLWithPath: $0) }
        guard use == nil || weights.isEmpty else { throw CLIError.failed("qlora \(command): give --use or --weights, not both.") }
        guard saveCombined == nil || !weights.isEmpty else { throw CLIError.failed("qlora \(command): --save-combined needs --weights.") }
    }

    /// Loads one adapter, naming the directory and the model when it does not fit.
    static func load(_ directory: URL, model: URL, config: LlamaConfig, command: String) throws -> LoRAAdapters {
        do {
            return try PEFTAdapterIO.load(directory: directory, modelConfig: config)
        } catch let error as LoRAError {
            throw CLIError.failed("qlora \(command): the adapter \(directory.path) does not fit the model \(model.path) (\(config.numHiddenLayers) layers, hidden \(config.hiddenSize)): \(error)")
        }
    }

    /// The combination asked for by --weights (saved when --save-combined), or nil.
    func combined(model: URL, config: LlamaConfig, command: String) throws -> LoRAAdapters? {
        guard !weights.isEmpty else { return nil }
        let inputs = try weights.map { entry in
            (adapters: try Self.load(named.first { $0.name == entry.name }!.directory, model: model, config: config, command: command),
             weight: entry.weight)
        }
        let result: LoRAAdapters
        do {
            result = try LoRACombination.combine(inputs, as: combination, modelConfig: config)
        } catch let error as LoRAError {
            throw CLIError.failed("qlora \(command): cannot combine \(weights.map(\.name).joined(separator: ", ")): \(error)")
        }
        if let saveCombined { try PEFTAdapterIO.save(result, to: saveCombined) }
        return result
    }

    /// The one adapter `generate` runs with: the combination, the one picked by --use, the only one, or none.
    func single(model: URL, config: LlamaConfig, command: String) throws -> LoRAAdapters? {
        if let combined = try combined(model: model, config: config, command: command) { return combined }
        if let use { return try Self.load(named.first { $0.name == use }!.directory, model: model, config: config, command: command) }
        guard named.count <= 1 else {
            throw CLIError.failed("qlora \(command): \(named.count) adapters are loaded (\(named.map(\.name).joined(separator: ", "))); pick one with --use NAME or combine them with --weights.")
        }
        return try named.first.map { try Self.load($0.directory, model: model, config: config, command: command) }
    }
}
