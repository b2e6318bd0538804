import Foundation
import SafeTensors

/// Options of `qlora quantize`.
public struct QuantizeOptions: Sendable {
    public var quantType: QuantType = .nf4
    public var blocksize: Int = 64
    public var doubleQuant: Bool = true
    public var rounding: AbsmaxRounding = .cpuLUT
    /// The compute dtype recorded in quantization_config (BF16, F16 or F32).
    public var computeDType: DType = .BF16
    /// Modules kept in full precision: a weight is skipped when any entry is a substring of its module
    /// name (transformers' rule). Embeddings and norms are never quantized anyway.
    public var skipModules: [String] = ["lm_head"]
    public var threads: Int = 2

    public init() {}
}

/// What the quantizer reports while it works (the CLI renders these; the library never prints).
public enum QuantizeEvent: Sendable {
    case started(tensors: Int, toQuantize: Int, parameters: Int)
    case quantized(name: String, index: Int, of: Int, parameters: Int)
    case writing(path: String)
    case finished(QuantizeSummary)
}

public struct QuantizeSummary: Sendable {
    public var tensorsQuantized = 0
    public var tensorsKept = 0
    public var parametersQuantized = 0
    public var parametersKept = 0
    /// Tensor data bytes of the input checkpoint and of the written model.safetensors file.
    public var bytesBefore = 0
    public var bytesAfter = 0
    /// Stored bits per quantized parameter (packed + statistics), e.g. 4.127 for NF4 + DQ at block 64.
    public var bitsPerParameter = 0.0
    public var seconds = 0.0
    /// Peak resident set (VmHWM) at the end, in bytes.
    public var peakRSSBytes = 0
    public var largestTensorBytes = 0
    public var outputDirectory = ""
}

/// Quantizes a Hugging Face checkpoint directory into the bitsandbytes 4-bit format.
///
/// Which weights: every 2-D F32/BF16/F16 tensor under `model.layers.` whose name ends in
/// `_proj.weight` (the Llama/Mistral/Qwen linears q/k/v/o/gate/up/down_proj; Phi-3's fused qkv_proj and
/// gate_up_proj, each quantized whole as bitsandbytes does), unless a skip-module
/// entry is a substring of its module name. Embeddings, lm_head and norms are copied unchanged.
///
/// Memory: the input is memory-mapped; each linear is quantized in turn and only its packed output
/// (about 1/8 of an fp32 input) is kept until the file is written; pages of the input are released
/// after use. The output layout needs every entry's size up front, and a quant state's JSON length
/// depends on the offset, so the (small) outputs are collected before the streaming write.
public enum CheckpointQuantizer {
    /// Whether `name` (with `shape`) is a Linear weight this tool quantizes.
    public static func isQuantizable(_ name: String, shape: [Int], skipModules: [String]) -> Bool {
        guard name.hasPrefix("model.layers."), name.hasSuffix("_proj.weight"), shape.count == 2 else { return false }
        let module = String(name.dropLast(".weight".count))
        return !skipModules.contains { !$0.isEmpty && module.contains($0) }
    }

    /// Files copied unchanged next to the model (tokenizer and generation settings).
    public static let companionFiles = ["generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                                        "tokenizer.model", "chat_template.jinja", "chat_template.json"]

    @discardableResult
    /// Creates `url` (and missing parents) and checks that a file can be made in it; failures become
    /// one sentence with the system's reason.
    static func prepareOutput(_ url: URL, as given: String) throws {
        var missing: [String] = []
        var probe = url.path
        var isDirectory: ObjCBool = false
        while !FileManager.default.fileExists(atPath: probe, isDirectory: &isDirectory) && probe != "/" {
            missing.append(probe)
            probe = (probe as NSString).deletingLastPathComponent
        }
        if FileManager.default.fileExists(atPath: probe), !isDirectory.boolValue {
            throw QuantError.outputNotWritable(path: given, reason: "\(probe) is a file, not a directory")
        }
        for directory in missing.reversed() where mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw QuantError.outputNotWritable(path: given, reason: "cannot create \(directory) (\(String(cString: strerror(errno))))")
        }
        let test = url.appendingPathComponent(".qlora-write-test-\(getpid())").path
        let fd = open(test, O_CREAT | O_WRONLY | O_EXCL, 0o600)
        guard fd >= 0 else { throw QuantError.outputNotWritable(path: given, reason: String(cString: strerror(errno))) }
        close(fd)
        unlink(test)
    }

    public static func quantize(input: String, output: String, options: QuantizeOptions = QuantizeOptions(),
                                progress: (QuantizeEvent) -> Void = { _ in }) throws -> QuantizeSummary {
        let start = Date()
        try BlockwiseQuantizer.validate(blocksize: options.blocksize)
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: input, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw QuantError.notADirectory(input)
        }
        let inputURL = URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath()
        let outputURL = URL(fileURLWithPath: output).standardizedFileURL.resolvingSymlinksInPath()
        guard inputURL.path != outputURL.path else { throw QuantError.outputIsInput(output) }
        // Before any work: the output directory must exist (or be creatable) and take files.
        try prepareOutput(outputURL, as: output)
        let configPath = inputURL.appendingPathComponent("config.json").path
        guard fm.fileExists(atPath: configPath) else { throw QuantError.noConfig(directory: input) }
        let contents = (try? fm.contentsOfDirectory(atPath: inputURL.path)) ?? []
        guard contents.contains(where: { $0.hasSuffix(".safetensors") }) else { throw QuantError.noSafeTensors(directory: input) }
        var config: PythonJSON
        do {
            config = try PythonJSON.parse(Data(contentsOf: URL(fileURLWithPath: configPath)))
        } catch {
            throw QuantError.badConfig(path: configPath, reason: "\(error)")
        }
        guard case .object = config else { throw QuantError.badConfig(path: configPath, reason: "the top level is not a JSON object") }
        if config["quantization_config"] != nil {
            throw QuantError.badConfig(path: configPath, reason: "the model is already quantized (config.json has quantization_config)")
        }
        guard [DType.BF16, .F16, .F32].contains(options.computeDType) else {
            throw QuantError.badConfig(path: configPath, reason: "compute dtype must be bf16, fp16 or fp32")
        }

        let checkpoint = try SafeTensorsCheckpoint(directory: inputURL.path)
        let infos = checkpoint.tensors.sorted { $0.name < $1.name }
        let targets = infos.filter { isQuantizable($0.name, shape: $0.shape, skipModules: options.skipModules) }
        for t in targets where ![DType.F32, .BF16, .F16].contains(t.dtype) {
            throw QuantError.unsupportedDType(tensor: t.name, dtype: t.dtype.rawValue)
        }
        var summary = QuantizeSummary()
        summary.bytesBefore = checkpoint.dataByteCount
        summary.largestTensorBytes = infos.map(\.byteCount).max() ?? 0
        summary.outputDirectory = outputURL.path
        progress(.started(tensors: infos.count, toQuantize: targets.count, parameters: infos.reduce(0) { $0 + $1.elementCount }))

        // 1. Quantize each linear (input pages released after use).
        var quantized: [String: QuantizedTensor] = [:]
        var storageBytes = 0
        for (index, t) in targets.enumerated() {
            let raw = try checkpoint.rawBytes(t.name)
            let q = try QuantizedTensor.quantize(raw.baseAddress!, dtype: t.dtype, shape: t.shape, quantType: options.quantType,
                                                 blocksize: options.blocksize, doubleQuant: options.doubleQuant,
                                                 rounding: options.rounding, threads: options.threads, name: t.name)
            releasePages(raw)
            quantized[t.name] = q
            storageBytes += q.storageBytes
            summary.tensorsQuantized += 1
            summary.parametersQuantized += q.count
            progress(.quantized(name: t.name, index: index + 1, of: targets.count, parameters: q.count))
        }

        // 2. Lay out and stream the output file.
        var entries: [TensorEntry] = []
        var payload: [String: Data] = [:]
        for t in infos {
            if let q = quantized.removeValue(forKey: t.name) {   // moved, so packed data is never held twice
                for (entry, data) in BitsAndBytesFormat.tensors(q, weightName: t.name) {
                    entries.append(entry)
                    payload[entry.name] = data
                }
            } else {
                entries.append(TensorEntry(name: t.name, dtype: t.dtype, shape: t.shape))
                summary.tensorsKept += 1
                summary.parametersKept += t.elementCount
            }
        }
        let modelPath = outputURL.appendingPathComponent("model.safetensors").path
        progress(.writing(path: modelPath))
        try writeModel(to: modelPath, entries: entries, payload: &payload) { name, writer in
            let raw = try checkpoint.rawBytes(name)
            try writer.write(name, bytes: raw)
            releasePages(raw)
        }

        // 3. config.json with quantization_config, companion files.
        let skipList: [String]? = options.skipModules == ["lm_head"] ? nil : options.skipModules
        config.set("quantization_config", BitsAndBytesFormat.quantizationConfig(
            quantType: options.quantType, doubleQuant: options.doubleQuant, computeDType: options.computeDType, skipModules: skipList))
        try AtomicFile.write(Data((config.render(indent: 2, sortKeys: true) + "\n").utf8),
                             to: outputURL.appendingPathComponent("config.json"))
        for name in companionFiles where contents.contains(name) {
            try AtomicFile.write(Data(contentsOf: inputURL.appendingPathComponent(name)), to: outputURL.appendingPathComponent(name))
        }

        finish(&summary, modelPath: modelPath, storageBytes: storageBytes, start: start)
        progress(.finished(summary))
        return summary
    }

    /// Streams model.safetensors: each entry's bytes from `payload` (removed as written), or, for the ones
    /// it lacks, from `copy`. A failed write leaves no file behind.
    static func writeModel(to path: String, entries: [TensorEntry], payload: inout [String: Data],
                           copy: (String, SafeTensorsWriter) throws -> Void) throws {
        let writer = try SafeTensorsWriter(path: path, entries: entries, metadata: ["format": "pt"])
        do {
            for entry in entries {
                if let data = payload.removeValue(forKey: entry.name) {
                    try data.withUnsafeBytes { try writer.write(entry.name, bytes: $0) }
                } else {
                    try copy(entry.name, writer)
                }
            }
            try writer.finish()
        } catch {
            writer.abandon()
            throw error
        }
    }

    /// The summary's closing figures: output size, bits per quantized parameter, time, peak RSS.
    static func finish(_ summary: inout QuantizeSummary, modelPath: String, storageBytes: Int, start: Date) {
        summary.bytesAfter = (try? FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int) ?? 0
        summary.bitsPerParameter = summary.parametersQuantized > 0 ? Double(8 * storageBytes) / Double(summary.parametersQuantized) : 0
        summary.seconds = Date().timeIntervalSince(start)
        summary.peakRSSBytes = ProcessMemory.residentBytes().peak
    }

    /// Drops the mapped pages of an input tensor from the resident set (they are re-read if needed).
    static func releasePages(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (Int(bitPattern: base) + page - 1) / page * page
        let last = (Int(bitPattern: base) + bytes.count) / page * page
        guard last > first else { return }
        _ = madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED)
    }

}
