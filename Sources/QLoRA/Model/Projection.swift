/// The seven linears of a Llama decoder layer.
public enum Projection: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down

    /// The HF module name (`q_proj`, ...).
    public var moduleName: String { LlamaConfig.layerLinears[rawValue] }

    public init?(moduleName: String) {
        guard let index = LlamaConfig.layerLinears.firstIndex(of: moduleName) else { return nil }
        self.init(rawValue: index)
    }
}
