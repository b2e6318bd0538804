/// The RMSNorm scales a decoder layer can carry; which ones a model has is a switch of its family
/// (`LlamaConfig.layerNorms`). Every family has `input` and `preMLP`; Qwen3 and Gemma 3 add `query` and
/// `key` (per head, head_dim wide); Gemma 3's sandwich adds `postAttention` and `postMLP`, which norm the
/// attention and MLP outputs before their residual adds.
public enum LayerNorm: Int, CaseIterable, Sendable {
    case input, preMLP, query, key, postAttention, postMLP

    /// The module under `model.layers.N.` in a Hugging Face checkpoint. The norm before the MLP is
    /// `post_attention_layernorm` in Llama but `pre_feedforward_layernorm` in Gemma 3, whose
    /// `post_attention_layernorm` is the sandwich norm of the attention output.
    public func huggingFaceName(sandwich: Bool) -> String {
        switch self {
        case .input: "input_layernorm"
        case .preMLP: sandwich ? "pre_feedforward_layernorm" : "post_attention_layernorm"
        case .query: "self_attn.q_norm"
        case .key: "self_attn.k_norm"
        case .postAttention: "post_attention_layernorm"
        case .postMLP: "post_feedforward_layernorm"
        }
    }

    /// llama.cpp's tensor name under `blk.N.` (llama-arch.cpp).
    public var ggufName: String {
        switch self {
        case .input: "attn_norm"
        case .preMLP: "ffn_norm"
        case .query: "attn_q_norm"
        case .key: "attn_k_norm"
        case .postAttention: "post_attention_norm"
        case .postMLP: "post_ffw_norm"
        }
    }
}
