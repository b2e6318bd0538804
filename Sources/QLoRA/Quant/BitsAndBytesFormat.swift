import Foundation
import SafeTensors

/// The bitsandbytes / transformers serialization of 4-bit weights. For a Linear `<m>`:
///
/// | key | dtype, shape |
/// |---|---|
/// | `<m>.weight` | U8 [ceil(n/2), 1] packed nibbles |
/// | `<m>.weight.absmax` | U8 [nb] with double quantization, else F32 [nb] |
/// | `<m>.weight.quant_map` | F32 [16] the codebook |
/// | `<m>.weight.nested_absmax` | F32 [ceil(nb/256)] (double quantization only) |
/// | `<m>.weight.nested_quant_map` | F32 [256] the dynamic map (double quantization only) |
/// | `<m>.weight.quant_state.bitsandbytes__<nf4/fp4>` | U8 [bytes] of `json.dumps` of the quant state |
public enum BitsAndBytesFormat {
    public static let quantStatePrefix = "quant_state.bitsandbytes__"

    /// Python's name of a dtype (`str(torch.float32).strip("torch.")`).
    public static func pythonDTypeName(_ dtype: DType) -> String {
        switch dtype {
        case .BF16: return "bfloat16"
        case .F16: return "float16"
        default: return "float32"
        }
    }

    static func dtype(pythonName: String) -> DType? {
        ["float32": DType.F32, "bfloat16": .BF16, "float16": .F16][pythonName]
    }

    /// The bytes of `json.dumps(quant_state)` with bitsandbytes' key order.
    public static func quantStateJSON(_ q: QuantizedTensor) -> [UInt8] {
        var members: [(key: String, value: PythonJSON)] = [
            ("quant_type", .string(q.quantType.rawValue)),
            ("blocksize", .int(q.blocksize)),
            ("dtype", .string(pythonDTypeName(q.originalDType))),
            ("shape", .array(q.shape.map { .int($0) })),
        ]
        if case .doubleQuantized(let dq) = q.absmax {
            members += [
                ("nested_blocksize", .int(dq.nestedBlocksize)),
                ("nested_dtype", .string("float32")),
                ("nested_offset", .float(dq.offset)),
            ]
        }
        return Array(PythonJSON.object(members).render(indent: nil, sortKeys: false).utf8)
    }

    /// The tensors of one quantized weight `weightName` (e.g. `model.layers.0.self_attn.q_proj.weight`).
    public static func tensors(_ q: QuantizedTensor, weightName: String) -> [(TensorEntry, Data)] {
        func floats(_ values: [Float]) -> Data { values.withUnsafeBytes { Data($0) } }
        var result: [(TensorEntry, Data)] = [
            (TensorEntry(name: weightName, dtype: .U8, shape: [q.packed.count, 1]), Data(q.packed)),
            (TensorEntry(name: weightName + ".quant_map", dtype: .F32, shape: [16]), floats(q.codeValues)),
        ]
        switch q.absmax {
        case .plain(let values):
            result.append((TensorEntry(name: weightName + ".absmax", dtype: .F32, shape: [values.count]), floats(values)))
        case .doubleQuantized(let dq):
            result.append((TensorEntry(name: weightName + ".absmax", dtype: .U8, shape: [dq.codes.count]), Data(dq.codes)))
            result.append((TensorEntry(name: weightName + ".nested_absmax", dtype: .F32, shape: [dq.nestedAbsmax.count]),
                           floats(dq.nestedAbsmax)))
            result.append((TensorEntry(name: weightName + ".nested_quant_map", dtype: .F32, shape: [256]), floats(DynamicMap8.values)))
        }
        let state = quantStateJSON(q)
        result.append((TensorEntry(name: weightName + "." + quantStatePrefix + q.quantType.rawValue, dtype: .U8, shape: [state.count]),
                       Data(state)))
        return result
    }

    /// transformers' `quantization_config` block (fields and order as transformers 5 writes them).
    public static func quantizationConfig(quantType: QuantType, doubleQuant: Bool, computeDType: DType,
                                          skipModules: [String]?) -> PythonJSON {
        .object([
            ("_load_in_4bit", .bool(true)),
            ("_load_in_8bit", .bool(false)),
            ("bnb_4bit_compute_dtype", .string(pythonDTypeName(computeDType))),
            ("bnb_4bit_quant_storage", .string("uint8")),
            ("bnb_4bit_quant_type", .string(quantType.rawValue)),
            ("bnb_4bit_use_double_quant", .bool(doubleQuant)),
            ("llm_int8_enable_fp32_cpu_offload", .bool(false)),
            ("llm_int8_has_fp16_weight", .bool(false)),
            ("llm_int8_skip_modules", skipModules.map { .array($0.map { .string($0) }) } ?? .null),
            ("llm_int8_threshold", .number("6.0")),
            ("load_in_4bit", .bool(true)),
            ("load_in_8bit", .bool(false)),
            ("quant_method", .string("bitsandbytes")),
        ])
    }

    // MARK: - Loading

    /// The weight names (`<m>.weight`) that hold 4-bit data in a set of tensor names.
    public static func quantizedWeightNames(_ names: [String]) -> [String] {
        names.compactMap { name in
            guard let range = name.range(of: "." + quantStatePrefix) else { return nil }
            return String(name[..<range.lowerBound])
        }.sorted()
    }

    /// Loads `<weightName>` and its companions from `file` (or a sharded checkpoint through `tensor`).
    /// Validates every shape and size against the quant state; throws `QuantError` naming the tensor.
    public static func load(weightName: String, path: String, names: Set<String>,
                            raw: (String) throws -> (TensorInfo, UnsafeRawBufferPointer)) throws -> QuantizedTensor {
        func need(_ name: String) throws -> (TensorInfo, UnsafeRawBufferPointer) {
            guard names.contains(name) else { throw QuantError.missingTensor(path: path, tensor: name) }
            return try raw(name)
        }
        func floats(_ name: String, count: Int) throws -> [Float] {
            let (info, bytes) = try need(name)
            guard info.dtype == .F32, info.elementCount == count else {
                throw QuantError.shapeMismatch(tensor: name, expected: "F32 [\(count)]", actual: "\(info.dtype.rawValue) \(info.shape)")
            }
            return (0..<count).map { bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        }
        guard let stateName = names.first(where: { $0.hasPrefix(weightName + "." + quantStatePrefix) }) else {
            throw QuantError.missingTensor(path: path, tensor: weightName + "." + quantStatePrefix + "nf4")
        }
        let (_, stateBytes) = try need(stateName)
        guard let object = try? JSONSerialization.jsonObject(with: Data(stateBytes)) as? [String: Any] else {
            throw QuantError.badQuantState(tensor: stateName, reason: "not a JSON object")
        }
        guard let typeName = object["quant_type"] as? String, let quantType = QuantType(rawValue: typeName),
              stateName.hasSuffix(quantStatePrefix + typeName) else {
            throw QuantError.badQuantState(tensor: stateName, reason: "quant_type must be nf4 or fp4 and match the key")
        }
        guard let blocksize = object["blocksize"] as? Int, let shape = object["shape"] as? [Int], !shape.isEmpty,
              let dtypeName = object["dtype"] as? String, let dtype = dtype(pythonName: dtypeName) else {
            throw QuantError.badQuantState(tensor: stateName, reason: "blocksize, shape and dtype (float32/bfloat16/float16) are required")
        }
        try BlockwiseQuantizer.validate(blocksize: blocksize)
        // The stored shape comes from the file: no negative dimension, no product that overflows.
        var n = 1
        for d in shape {
            let (product, overflow) = n.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, product <= 1 << 48 else {
                throw QuantError.badQuantState(tensor: stateName, reason: "shape \(shape) is negative or too large")
            }
            n = product
        }
        let nb = BlockwiseQuantizer.blockCount(elements: n, blocksize: blocksize)
        let (weightInfo, weightBytes) = try need(weightName)
        guard weightInfo.dtype == .U8, weightInfo.elementCount == (n + 1) / 2 else {
            throw QuantError.shapeMismatch(tensor: weightName, expected: "U8 [\((n + 1) / 2), 1] for shape \(shape)",
                                           actual: "\(weightInfo.dtype.rawValue) \(weightInfo.shape)")
        }
        let quantMap = try floats(weightName + ".quant_map", count: 16)
        guard quantMap.map(\.bitPattern) == quantType.codebook.values.map(\.bitPattern) else {
            throw QuantError.badQuantState(tensor: weightName + ".quant_map", reason: "not the bitsandbytes \(typeName) codebook")
        }
        let absmax: QuantizedTensor.Absmax
        let absmaxName = weightName + ".absmax"
        if let nestedBlocksize = object["nested_blocksize"] as? Int {
            guard nestedBlocksize > 0, nestedBlocksize <= 1 << 20, let offset = (object["nested_offset"] as? NSNumber)?.doubleValue else {
                throw QuantError.badQuantState(tensor: stateName, reason: "nested_blocksize and nested_offset are required with double quantization")
            }
            let (info, bytes) = try need(absmaxName)
            guard info.dtype == .U8, info.elementCount == nb else {
                throw QuantError.shapeMismatch(tensor: absmaxName, expected: "U8 [\(nb)]", actual: "\(info.dtype.rawValue) \(info.shape)")
            }
            let nested = try floats(weightName + ".nested_absmax", count: (nb + nestedBlocksize - 1) / nestedBlocksize)
            let map = try floats(weightName + ".nested_quant_map", count: 256)
            guard map.map(\.bitPattern) == DynamicMap8.values.map(\.bitPattern) else {
                throw QuantError.badQuantState(tensor: weightName + ".nested_quant_map", reason: "not the bitsandbytes signed dynamic map")
            }
            absmax = .doubleQuantized(DoubleQuantizedAbsmax(codes: Array(bytes), nestedAbsmax: nested, offset: Float(offset),
                                                            nestedBlocksize: nestedBlocksize))
        } else {
            absmax = .plain(try floats(absmaxName, count: nb))
        }
        return try QuantizedTensor(quantType: quantType, shape: shape, blocksize: blocksize, originalDType: dtype,
                                   packed: Array(weightBytes), absmax: absmax, name: weightName)
    }

    /// Every 4-bit weight of a single safetensors file, by weight name.
    public static func loadAll(file: SafeTensorsFile) throws -> [String: QuantizedTensor] {
        let names = Set(file.names)
        var result: [String: QuantizedTensor] = [:]
        for weight in quantizedWeightNames(file.names) {
            result[weight] = try load(weightName: weight, path: file.path, names: names) { (try file.info($0), try file.rawBytes($0)) }
        }
        return result
    }

    /// Every 4-bit weight of a checkpoint directory (single file or sharded), by weight name.
    public static func loadAll(checkpoint: SafeTensorsCheckpoint) throws -> [String: QuantizedTensor] {
        let names = Set(checkpoint.names)
        var result: [String: QuantizedTensor] = [:]
        for weight in quantizedWeightNames(checkpoint.names) {
            result[weight] = try load(weightName: weight, path: checkpoint.directory, names: names) {
                (try checkpoint.info($0), try checkpoint.rawBytes($0))
            }
        }
        return result
    }
}
