/// Value types of the decoder block's per-family switches (`LlamaConfig`).

/// The MLP's gate: out = act(gate) * up.
public enum GatedActivation: String, Sendable, Equatable {
    /// SwiGLU (Llama, Qwen, Mistral): silu(g) = g * sigmoid(g).
    case silu
    /// GeGLU (Gemma): torch's gelu(approximate="tanh"), `gelu_pytorch_tanh` in configs.
    case geluTanh = "gelu_pytorch_tanh"

    /// The config's `hidden_activation` / `hidden_act` value, nil when unsupported.
    init?(configValue: String) {
        switch configValue {
        case "silu", "swish": self = .silu
        case "gelu_pytorch_tanh", "gelu_tanh": self = .geluTanh
        default: return nil
        }
    }
}

/// What one layer attends over: every earlier position, or the last `slidingWindow` ones (itself included).
public enum LayerAttention: String, Sendable, Equatable {
    case full = "full_attention"
    case sliding = "sliding_attention"
}

/// A RoPE base and its scaling (one table of cos / sin).
public struct RoPEParameters: Sendable, Equatable {
    public var theta: Double
    public var scaling: RoPEScaling?
    public init(theta: Double, scaling: RoPEScaling?) {
        self.theta = theta
        self.scaling = scaling
    }
}
