import Foundation
import SafeTensors

/// Reads and writes adapters in Hugging Face PEFT's format: a directory with `adapter_config.json`
/// (every LoraConfig field, `json.dumps(indent=2, sort_keys=True)`) and `adapter_model.safetensors`
/// (fp32 `lora_A.weight` (r, in) / `lora_B.weight` (out, r) under `base_model.model.<module path>`).
public enum PEFTAdapterIO {
    public static let configFile = "adapter_config.json"
    public static let weightsFile = "adapter_model.safetensors"

    /// The adapter_config.json PEFT 0.21 writes for `config` on a `model` (all-linear is saved as the
    /// linears PEFT found in it).
    public static func configJSON(_ config: LoRAConfig, model: LlamaConfig) -> JSONValue {
        let targets = config.targetModules.contains("all-linear") ? config.targets(in: model) : config.targetModules
        return .dictionary([
            "alora_invocation_tokens": .null, "alpha_pattern": .dictionary([:]), "arrow_config": .null,
            "auto_mapping": .null,
            "base_model_name_or_path": config.baseModelNameOrPath.map(JSONValue.string) ?? .null,
            "bias": .string("none"), "corda_config": .null, "ensure_weight_tying": .bool(false), "eva_config": .null,
            "exclude_modules": .null, "fan_in_fan_out": .bool(false), "inference_mode": .bool(true),
            "init_lora_weights": config.initLoRAWeights == .kaiming ? .bool(true) : .string(config.initLoRAWeights.rawValue),
            "kasa_config": .null, "layer_replication": .null, "layers_pattern": .null,
            "layers_to_transform": config.layersToTransform.map { .array($0.map(JSONValue.int)) } ?? .null,
            "loftq_config": .dictionary([:]), "lora_alpha": number(config.loraAlpha), "lora_bias": .bool(false),
            "lora_dropout": .number(config.loraDropout), "lora_ga_config": .null, "megatron_config": .null,
            "megatron_core": .string("megatron.core"),
            "modules_to_save": config.modulesToSave.isEmpty ? .null : .array(config.modulesToSave.map(JSONValue.string)),
            "monteclora_config": .null, "peft_type": .string("LORA"), "peft_version": .string("0.21.2"),
            "qalora_group_size": .int(16), "r": .int(config.r), "rank_pattern": .dictionary([:]), "revision": .null,
            "target_modules": .array(Set(targets).sorted().map(JSONValue.string)), "target_parameters": .null,
            "task_type": .string("CAUSAL_LM"), "trainable_token_indices": .null, "use_bdlora": .null,
            "use_dora": .bool(false), "use_qalora": .bool(false), "use_rslora": .bool(config.useRSLoRA),
            "velora_config": .null,
        ])
    }

    /// Python writes an integral alpha as an int (`8`) and a fractional one as a float.
    private static func number(_ d: Double) -> JSONValue { d == d.rounded() && abs(d) < 1e15 ? .int(Int(d)) : .number(d) }

    /// Writes the adapter directory (each file atomically).
    public static func save(_ adapters: LoRAAdapters, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let parameters = adapters.parameters
        var tensors: [(TensorEntry, Data)] = []
        for entry in parameters.entries {
            let values = parameters.values(entry)
            // Never a NaN adapter on disk: the old file stays.
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw LoRAError.badAdapter(path: directory.path, reason: "tensor '\(entry.key)' has a non-finite value (\(values[bad]) at \(bad)); the adapter was not written")
            }
            let data = values.withUnsafeBufferPointer { Data(buffer: $0) }
            tensors.append((TensorEntry(name: entry.key, dtype: .F32, shape: entry.shape), data))
        }
        try SafeTensorsWriter.write(path: directory.appendingPathComponent(weightsFile).path, tensors: tensors,
                                    metadata: ["format": "pt"])
        let json = PythonJSON.dumps(configJSON(adapters.config, model: adapters.modelConfig))
        try AtomicFile.write(Data(json.utf8), to: directory.appendingPathComponent(configFile))
    }

    /// Reads adapter_config.json into a LoRAConfig.
    public static func loadConfig(directory: URL) throws -> LoRAConfig {
        let url = directory.appendingPathComponent(configFile)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw LoRAError.badAdapter(path: directory.path, reason: "no \(configFile); is this a PEFT adapter directory?")
        }
        guard let parsed = try? JSONValue.parse(data: data), let json = parsed.members else {
            throw LoRAError.badAdapter(path: url.path, reason: "not a JSON object")
        }
        if let type = json["peft_type"]?.stringValue, type != "LORA" {
            throw LoRAError.badAdapter(path: url.path, reason: "peft_type is \(type); only LORA adapters are supported")
        }
        if json["use_dora"]?.boolValue == true {
            throw LoRAError.badAdapter(path: url.path, reason: "DoRA adapters (use_dora) are not supported")
        }
        guard let r = json["r"]?.intValue else {
            throw LoRAError.badAdapter(path: url.path, reason: "missing integer field r")
        }
        var targets: [String]
        switch json["target_modules"] {
        case .array(let items)?: targets = items.compactMap(\.stringValue)
        case .string(let s)?: targets = s == "all-linear" ? ["all-linear"] : [s]
        default: throw LoRAError.badAdapter(path: url.path, reason: "missing target_modules")
        }
        if targets.isEmpty { targets = ["all-linear"] }
        var layers: [Int]?
        switch json["layers_to_transform"] {
        case .array(let items)?: layers = items.compactMap(\.intValue)
        case .unsignedInteger(let i)?: layers = [Int(i)]
        default: layers = nil
        }
        let initField = json["init_lora_weights"]
        let initMode: LoRAConfig.Init = initField?.stringValue == "gaussian" ? .gaussian : .kaiming
        var modulesToSave: [String] = []
        if case .array(let items)? = json["modules_to_save"] { modulesToSave = items.compactMap(\.stringValue) }
        let config = LoRAConfig(
            r: r, loraAlpha: json["lora_alpha"]?.doubleValue ?? Double(r), loraDropout: json["lora_dropout"]?.doubleValue ?? 0,
            targetModules: targets, layersToTransform: layers, useRSLoRA: json["use_rslora"]?.boolValue ?? false,
            initLoRAWeights: initMode, modulesToSave: modulesToSave,
            baseModelNameOrPath: json["base_model_name_or_path"]?.stringValue)
        do { try config.validate() } catch { throw LoRAError.badAdapter(path: url.path, reason: "\(error)") }
        return config
    }

    /// Loads an adapter directory for `modelConfig` (training state zeroed when `training`).
    public static func load(directory: URL, modelConfig: LlamaConfig, training: Bool = false) throws -> LoRAAdapters {
        let config = try loadConfig(directory: directory)
        let adapters: LoRAAdapters
        do { adapters = try LoRAAdapters(modelConfig: modelConfig, config: config, training: training) } catch LoRAError.badConfig(let reason) {
            // The config is valid on its own but not for this model (layers_to_transform beyond its layers).
            throw LoRAError.badAdapter(path: directory.appendingPathComponent(configFile).path, reason: reason)
        }
        try loadWeights(into: adapters, directory: directory)
        return adapters
    }

    /// Reads adapter_model.safetensors into existing adapters, checking every key and shape.
    public static func loadWeights(into adapters: LoRAAdapters, directory: URL) throws {
        let path = directory.appendingPathComponent(weightsFile).path
        let file = try SafeTensorsFile(path: path)
        for entry in adapters.parameters.entries {
            // PEFT also accepts keys with the adapter name (`lora_A.default.weight`) in older saves.
            let key = file.contains(entry.key) ? entry.key : entry.key.replacingOccurrences(of: ".weight", with: ".default.weight")
            guard file.contains(key) else {
                throw LoRAError.badAdapter(path: path, reason: "tensor '\(entry.key)' is missing; the adapter does not match this model or config")
            }
            let info = try file.info(key)
            guard info.shape == entry.shape else {
                throw LoRAError.badAdapter(path: path, reason: "tensor '\(entry.key)' has shape \(info.shape), expected \(entry.shape) (wrong r or wrong base model)")
            }
            adapters.parameters.setValues(entry, try file.floats(key))
        }
        let expected = Set(adapters.parameters.entries.map(\.key))
        if let extra = file.names.first(where: { !expected.contains($0) && !expected.contains($0.replacingOccurrences(of: ".default.weight", with: ".weight")) }) {
            throw LoRAError.badAdapter(path: path, reason: "unexpected tensor '\(extra)'; the adapter targets modules this config does not")
        }
    }
}
