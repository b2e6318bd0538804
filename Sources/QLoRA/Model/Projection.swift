/// The linears a decoder layer can have. Llama-family checkpoints store seven; Phi-3 stores q/k/v as
/// one `qkv_proj` (rows: q, then k, then v) and gate/up as one `gate_up_proj` (rows: gate, then up).
/// Which set a model has is a switch of its family (`LlamaConfig.layerProjections`).
public enum Projection: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down, qkv, gateUp

    /// The HF module name (`q_proj`, ...).
    public var moduleName: String {
        switch self {
        case .q: "q_proj"
        case .k: "k_proj"
        case .v: "v_proj"
        case .o: "o_proj"
        case .gate: "gate_proj"
        case .up: "up_proj"
        case .down: "down_proj"
        case .qkv: "qkv_proj"
        case .gateUp: "gate_up_proj"
        }
    }

    public init?(moduleName: String) {
        guard let projection = Projection.allCases.first(where: { $0.moduleName == moduleName }) else { return nil }
        self = projection
    }

    /// The module under `model.layers.N.` that holds it.
    public var group: String { [.gate, .up, .down, .gateUp].contains(self) ? "mlp" : "self_attn" }

    /// The projections whose outputs a fused one stacks (row blocks in this order); empty for the others.
    public var fusedParts: [Projection] {
        switch self {
        case .qkv: [.q, .k, .v]
        case .gateUp: [.gate, .up]
        default: []
        }
    }

    /// Every module name a LoRA target can be, in the order of `allCases`.
    public static let allModuleNames = allCases.map(\.moduleName)
}
