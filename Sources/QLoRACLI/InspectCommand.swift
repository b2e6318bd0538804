import Foundation
import QLoRA
import SafeTensors

/// `qlora inspect <file-or-dir> [--json]`: what a safetensors checkpoint holds.
public enum InspectCommand: Command {
    public static let name = "inspect"
    public static let summary = "List a safetensors file, model directory or GGUF file: tensors, quantization, sizes"
    public static let help = """
    Usage: qlora inspect <file-or-dir> [--json]
           qlora inspect <model.gguf> [--json]

    Lists every tensor of a safetensors checkpoint with its dtype, shape and size in bytes.
    <file-or-dir> is a .safetensors file, a sharded index (model.safetensors.index.json), or a model
    directory holding model.safetensors, or model.safetensors.index.json and its shards, or a single
    other .safetensors file (such as a PEFT adapter_model.safetensors).

    bitsandbytes 4-bit weights (a U8 tensor <m>.weight with companions <m>.weight.absmax,
    .quant_map, .nested_absmax, .nested_quant_map and .quant_state.bitsandbytes__nf4 or __fp4, whose
    bytes are the quantization state as JSON) are shown as one entry each: quant type, block size,
    original shape and dtype, whether the block scales are double-quantized, and the companion
    tensors grouped under the weight.

    Totals: 4-bit weights (their bytes include every companion tensor; their parameters are the
    elements of the original shape, so bits per parameter is the real storage cost), and the other
    tensors by dtype. For a directory with a config.json, its quantization_config is shown too, and
    the model line: the model_type (\(LlamaConfig.modelTypes.joined(separator: ", "))) and the switches
    the decoder runs it with (head_dim, kv heads, q/k norm, biases, tied embeddings), or why config.json
    cannot be run.

    A .gguf file (llama.cpp's format) shows its version, metadata (long arrays summarized), every
    tensor with its ggml type (Q4_K, Q8_0, F32, ...), shape and bytes, and totals per type with bits
    per parameter; types that cannot be loaded are marked.

    Options:
      --json    Print the same information as one JSON object instead of text.

    Examples:
      qlora inspect model-nf4/
      qlora inspect adapter/adapter_model.safetensors --json
      qlora inspect SmolLM2-135M-Instruct.Q4_1.gguf
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name, valueOptions: [], flagOptions: ["json"])
        let path = try args.requirePositionals(["file-or-dir"])[0]
        if path.lowercased().hasSuffix(".gguf") {
            let report = try GGUFInspectReport(path: path)
            print(args.flag("json") ? report.json.text(indent: 2) : report.text, terminator: args.flag("json") ? "\n" : "")
            return 0
        }
        let report = try InspectReport(path: path)
        print(args.flag("json") ? report.json.text(indent: 2) : report.text, terminator: args.flag("json") ? "\n" : "")
        return 0
    }
}

/// Everything `qlora inspect` shows, computed from a checkpoint; rendered by `text` or `json`.
public struct InspectReport {
    /// One bitsandbytes 4-bit weight and its companion tensors.
    public struct QuantizedWeight {
        public var weight: TensorInfo
        /// "nf4" or "fp4" (from the quant-state tensor's name when its JSON cannot be read).
        public var quantType: String
        public var blocksize: Int?
        public var originalShape: [Int]?
        public var originalDType: String?
        public var doubleQuant: Bool
        public var nestedBlocksize: Int?
        public var nestedOffset: Double?
        /// Companions in a fixed order: absmax, quant_map, nested_absmax, nested_quant_map, quant_state.
        public var companions: [TensorInfo]
        /// Why the quant-state JSON could not be used, if it could not.
        public var stateProblem: String?

        /// Weight plus every companion.
        public var byteCount: Int { companions.reduce(weight.byteCount) { $0 + $1.byteCount } }
        /// Elements of the original shape (two per stored byte when the state is unreadable).
        public var parameterCount: Int { originalShape.map { $0.reduce(1, *) } ?? weight.byteCount * 2 }
    }

    /// Per-dtype totals of the tensors that are not part of a 4-bit weight.
    public struct DTypeTotal {
        public var dtype: DType
        public var tensorCount: Int
        public var parameterCount: Int
        public var byteCount: Int
    }

    public var path: String
    public var files: [String]
    public var metadata: [String: String]
    public var quantized: [QuantizedWeight]
    public var others: [TensorInfo]
    public var otherTotals: [DTypeTotal]
    /// config.json's quantization_config, for a directory that has one.
    public var quantizationConfig: JSONValue?
    /// For a directory with a config.json: the architecture as this decoder would run it
    /// (`LlamaConfig.architectureSummary`), or why it cannot.
    public var model: String?

    public var quantizedByteCount: Int { quantized.reduce(0) { $0 + $1.byteCount } }
    public var quantizedParameterCount: Int { quantized.reduce(0) { $0 + $1.parameterCount } }
    public var totalByteCount: Int { quantizedByteCount + otherTotals.reduce(0) { $0 + $1.byteCount } }
    public var totalParameterCount: Int { quantizedParameterCount + otherTotals.reduce(0) { $0 + $1.parameterCount } }
    public var tensorCount: Int { quantized.reduce(0) { $0 + 1 + $1.companions.count } + others.count }
    /// Storage bits per parameter of the 4-bit weights, state included (nil without any).
    public var quantizedBitsPerParameter: Double? {
        quantizedParameterCount > 0 ? Double(quantizedByteCount * 8) / Double(quantizedParameterCount) : nil
    }

    static let companionSuffixes = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"]
    static let quantStatePrefix = ".quant_state.bitsandbytes__"

    public init(path: String) throws {
        let checkpoint = try SafeTensorsCheckpoint(directory: path)
        var config: JSONValue?
        var model: String?
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            let configPath = (path as NSString).appendingPathComponent("config.json")
            if let data = FileManager.default.contents(atPath: configPath) {
                guard let parsed = try? JSONValue.parse([UInt8](data)) else {
                    throw CLIError.failed("\(configPath): not valid JSON; fix or remove it.")
                }
                config = parsed["quantization_config"]
                do {
                    model = try LlamaConfig.decode(data, path: configPath).architectureSummary
                } catch {
                    model = "not supported: \(error)"
                }
            }
        }
        try self.init(path: path, checkpoint: checkpoint, quantizationConfig: config)
        self.model = model
    }

    public init(path: String, checkpoint: SafeTensorsCheckpoint, quantizationConfig: JSONValue? = nil) throws {
        self.path = path
        self.files = checkpoint.files.map { URL(fileURLWithPath: $0.path).lastPathComponent }
        var metadata: [String: String] = [:]
        for file in checkpoint.files { metadata.merge(file.metadata) { first, _ in first } }
        self.metadata = metadata
        self.quantizationConfig = quantizationConfig

        var grouped = Set<String>()
        var quantized: [QuantizedWeight] = []
        for weight in checkpoint.tensors where weight.dtype == .U8 {
            let stateNames = ["nf4", "fp4"].map { weight.name + Self.quantStatePrefix + $0 }.filter(checkpoint.contains)
            guard stateNames.count == 1, checkpoint.contains(weight.name + ".absmax") else { continue }
            let stateName = stateNames[0]
            var entry = QuantizedWeight(weight: weight, quantType: String(stateName.dropFirst(weight.name.count + Self.quantStatePrefix.count)),
                                        doubleQuant: checkpoint.contains(weight.name + ".nested_absmax"), companions: [])
            for suffix in Self.companionSuffixes where checkpoint.contains(weight.name + suffix) {
                entry.companions.append(try checkpoint.info(weight.name + suffix))
            }
            entry.companions.append(try checkpoint.info(stateName))
            Self.readQuantState(try checkpoint.rawBytes(stateName), into: &entry)
            grouped.insert(weight.name)
            for companion in entry.companions { grouped.insert(companion.name) }
            quantized.append(entry)
        }
        self.quantized = quantized.sorted { $0.weight.name < $1.weight.name }
        self.others = checkpoint.tensors.filter { !grouped.contains($0.name) }.sorted { $0.name < $1.name }
        var totals: [DType: DTypeTotal] = [:]
        for tensor in others {
            totals[tensor.dtype, default: DTypeTotal(dtype: tensor.dtype, tensorCount: 0, parameterCount: 0, byteCount: 0)].tensorCount += 1
            totals[tensor.dtype]!.parameterCount += tensor.elementCount
            totals[tensor.dtype]!.byteCount += tensor.byteCount
        }
        self.otherTotals = totals.values.sorted { $0.byteCount != $1.byteCount ? $0.byteCount > $1.byteCount : $0.dtype.rawValue < $1.dtype.rawValue }
    }

    /// Fills the fields of the bitsandbytes quant-state JSON (quant_type, blocksize, dtype, shape,
    /// nested_blocksize, nested_offset); records what was wrong when it cannot.
    static func readQuantState(_ bytes: UnsafeRawBufferPointer, into entry: inout QuantizedWeight) {
        guard let state = try? JSONValue.parse(bytes), case .object = state else {
            entry.stateProblem = "quant-state bytes are not a JSON object"
            return
        }
        if let type = state["quant_type"]?.stringValue { entry.quantType = type }
        entry.blocksize = state["blocksize"]?.intValue
        entry.originalDType = state["dtype"]?.stringValue
        if case .array(let dims)? = state["shape"] {
            let shape = dims.compactMap(\.intValue)
            if shape.count == dims.count { entry.originalShape = shape }
        }
        entry.nestedBlocksize = state["nested_blocksize"]?.intValue
        entry.nestedOffset = state["nested_offset"]?.doubleValue
        if entry.nestedBlocksize != nil { entry.doubleQuant = true }
        var missing: [String] = []
        if entry.blocksize == nil { missing.append("blocksize") }
        if entry.originalShape == nil { missing.append("shape") }
        if entry.originalDType == nil { missing.append("dtype") }
        if !missing.isEmpty { entry.stateProblem = "quant state lacks \(missing.joined(separator: ", "))" }
    }

    // MARK: - Text

    public var text: String {
        var lines: [String] = []
        let fileList = files.count == 1 ? files[0] : "\(files.count) shards (\(files.first ?? "") ... \(files.last ?? ""))"
        lines.append("\(path): \(fileList), \(tensorCount) tensors, \(Self.bytes(totalByteCount)), \(Self.count(totalParameterCount)) parameters")
        if !metadata.isEmpty {
            lines.append("metadata: " + metadata.keys.sorted().map { "\($0)=\(metadata[$0]!)" }.joined(separator: ", "))
        }
        if let model {
            lines.append("model: \(model)")
        }
        if !quantized.isEmpty {
            lines.append("")
            lines.append("4-bit weights (bitsandbytes):")
            for q in quantized {
                let original = "\(q.originalDType ?? "?") \(q.originalShape.map(Self.shape) ?? "[?]")"
                let block = q.blocksize.map(String.init) ?? "?"
                let double = q.doubleQuant ? "yes" + (q.nestedBlocksize.map { " (nested block \($0))" } ?? "") : "no"
                lines.append("  \(q.weight.name)  \(q.quantType)  original \(original)  block \(block)  double quant \(double)  \(Self.bytes(q.byteCount))")
                lines.append("      \(q.weight.dtype.rawValue) \(Self.shape(q.weight.shape)) packed codes, \(Self.bytes(q.weight.byteCount))")
                for c in q.companions {
                    let suffix = String(c.name.dropFirst(q.weight.name.count + 1))
                    lines.append("      .\(suffix)  \(c.dtype.rawValue) \(Self.shape(c.shape)), \(Self.bytes(c.byteCount))")
                }
                if let problem = q.stateProblem { lines.append("      warning: \(problem)") }
            }
        }
        if !others.isEmpty {
            lines.append("")
            lines.append(quantized.isEmpty ? "Tensors:" : "Other tensors:")
            let nameWidth = min(others.map(\.name.count).max() ?? 0, 72)
            for t in others {
                let name = t.name.padding(toLength: max(nameWidth, t.name.count), withPad: " ", startingAt: 0)
                lines.append("  \(name)  \(t.dtype.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(Self.shape(t.shape).padding(toLength: 14, withPad: " ", startingAt: 0)) \(Self.bytes(t.byteCount))")
            }
        }
        lines.append("")
        lines.append("Totals:")
        if !quantized.isEmpty {
            let bits = quantizedBitsPerParameter.map { String(format: "%.3f", $0) } ?? "-"
            lines.append("  4-bit weights: \(Self.plural(quantized.count, "weight")) (\(Self.plural(quantized.reduce(0) { $0 + 1 + $1.companions.count }, "tensor")) with their state), \(Self.count(quantizedParameterCount)) parameters, \(Self.bytes(quantizedByteCount)), \(bits) bits/parameter")
        }
        for total in otherTotals {
            lines.append("  \(total.dtype.rawValue): \(Self.plural(total.tensorCount, "tensor")), \(Self.count(total.parameterCount)) parameters, \(Self.bytes(total.byteCount))")
        }
        lines.append("  all: \(tensorCount) tensors, \(Self.count(totalParameterCount)) parameters, \(Self.bytes(totalByteCount))")
        if let config = quantizationConfig {
            lines.append("")
            lines.append("quantization_config (config.json):")
            if case .object(let members) = config {
                for (key, value) in members { lines.append("  \(key): \(value.stringValue ?? value.text())") }
            } else {
                lines.append("  \(config.text())")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func plural(_ n: Int, _ noun: String) -> String { "\(count(n)) \(noun)\(n == 1 ? "" : "s")" }

    static func shape(_ dims: [Int]) -> String { "[" + dims.map(String.init).joined(separator: ", ") + "]" }

    static func count(_ n: Int) -> String {
        let digits = String(n)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }

    static func bytes(_ n: Int) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = -1
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit < 0 ? "\(n) B" : "\(count(n)) B (\(String(format: "%.1f", value)) \(units[unit]))"
    }

    // MARK: - JSON

    public var json: JSONValue {
        func int(_ n: Int) -> JSONValue { .unsignedInteger(UInt64(n)) }
        func shapeValue(_ dims: [Int]) -> JSONValue { .array(dims.map(int)) }
        func tensor(_ t: TensorInfo) -> JSONValue {
            .object([("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)), ("shape", shapeValue(t.shape)),
                     ("bytes", int(t.byteCount)), ("parameters", int(t.elementCount))])
        }
        let quantizedValues: [JSONValue] = quantized.map { q in
            var members: [(key: String, value: JSONValue)] = [
                ("name", .string(q.weight.name)), ("quant_type", .string(q.quantType)),
                ("blocksize", q.blocksize.map(int) ?? .null),
                ("original_shape", q.originalShape.map(shapeValue) ?? .null),
                ("original_dtype", q.originalDType.map(JSONValue.string) ?? .null),
                ("double_quant", .bool(q.doubleQuant)),
                ("nested_blocksize", q.nestedBlocksize.map(int) ?? .null),
                ("nested_offset", q.nestedOffset.map(JSONValue.number) ?? .null),
                ("parameters", int(q.parameterCount)), ("bytes", int(q.byteCount)),
                ("stored", tensor(q.weight)),
                ("companions", .array(q.companions.map(tensor))),
            ]
            if let problem = q.stateProblem { members.append(("problem", .string(problem))) }
            return .object(members)
        }
        var totals: [(key: String, value: JSONValue)] = []
        totals.append(("quantized_4bit", .object([
            ("weights", int(quantized.count)), ("parameters", int(quantizedParameterCount)), ("bytes", int(quantizedByteCount)),
            ("bits_per_parameter", quantizedBitsPerParameter.map(JSONValue.number) ?? .null),
        ])))
        totals.append(("by_dtype", .object(otherTotals.map { total in
            (total.dtype.rawValue, .object([("tensors", int(total.tensorCount)), ("parameters", int(total.parameterCount)), ("bytes", int(total.byteCount))]))
        })))
        totals.append(("tensors", int(tensorCount)))
        totals.append(("parameters", int(totalParameterCount)))
        totals.append(("bytes", int(totalByteCount)))
        return .object([
            ("path", .string(path)),
            ("files", .array(files.map(JSONValue.string))),
            ("metadata", .object(metadata.keys.sorted().map { ($0, .string(metadata[$0]!)) })),
            ("quantized_weights", .array(quantizedValues)),
            ("tensors", .array(others.map(tensor))),
            ("totals", .object(totals)),
            ("quantization_config", quantizationConfig ?? .null),
            ("model", model.map(JSONValue.string) ?? .null),
        ])
    }
}
