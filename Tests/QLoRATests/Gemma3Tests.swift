import Foundation
import SafeTensors
import Testing
@testable import QLoRA

/// Gemma 3's config switches as read from config.json (transformers 5's and the older flat keys), what
/// the writers keep of them, and the configs that are refused by key. What the switches compute is checked
/// against transformers in FamilyReferenceTests.
@Suite struct Gemma3Tests {
    static let family = FamilyReferenceTests.Family(name: "gemma3")

    static func json() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: family.url("model/config.json"))) as! [String: Any]
    }

    static func decode(_ json: [String: Any]) throws -> LlamaConfig {
        try LlamaConfig.decode(try JSONSerialization.data(withJSONObject: json), path: "config.json")
    }

    @Test func configSwitchesOnEveryGemmaSwitch() throws {
        let config = try Self.family.config()
        #expect(config.modelType == "gemma3_text" && config.qkNorm && config.sandwichNorms && config.normWeightOffset == 1)
        #expect(config.activation == .geluTanh && config.embeddingScale == 8 && config.tieWordEmbeddings)
        #expect(config.attentionScale == Float(pow(24.0, -0.5)) && config.finalLogitSoftcap == 5)
        #expect(config.layerTypes == [.sliding, .sliding, .full] && config.slidingWindow == 5)
        #expect(config.attentionWindow(layer: 0) == 5 && config.attentionWindow(layer: 2) == nil)
        #expect(config.rope(layer: 0) == RoPEParameters(theta: 10_000, scaling: nil))
        #expect(config.rope(layer: 2) == RoPEParameters(theta: 1_000_000, scaling: RoPEScaling(type: "linear", factor: 2)))
        #expect(config.ropeTables.count == 2)
        #expect(config.layerNorms == [.input, .postAttention, .preMLP, .postMLP, .query, .key])
        // Every weight of the checkpoint, the four norms per layer among them.
        let file = try SafeTensorsFile(path: Self.family.url("model/model.safetensors").path)
        #expect(config.totalParameterCount == (try file.names.reduce(0) { $0 + (try file.info($1)).shape.reduce(1, *) }))
        #expect(file.names.contains("model.layers.2.pre_feedforward_layernorm.weight"))
        #expect(config.architectureSummary.contains("sandwich norms") && config.architectureSummary.contains("sliding window 5 on 2 of 3 layers"))
    }

    /// Older Gemma 3 configs: rope_theta, rope_local_base_freq, sliding_window_pattern instead of
    /// rope_parameters and layer_types; and the multimodal gemma3 config with its text_config.
    @Test func legacyAndMultimodalConfigs() throws {
        var json = try Self.json()
        json["rope_parameters"] = nil
        json["layer_types"] = nil
        json["rope_theta"] = 1_000_000
        json["rope_local_base_freq"] = 10_000
        json["rope_scaling"] = ["rope_type": "linear", "factor": 8]
        json["sliding_window_pattern"] = 3
        let legacy = try Self.decode(json)
        #expect(legacy.layerTypes == [.sliding, .sliding, .full])
        #expect(legacy.rope(layer: 1).theta == 10_000 && legacy.rope(layer: 2).scaling?.factor == 8)
        json["sliding_window_pattern"] = nil
        #expect(try Self.decode(json).layerTypes == [.sliding, .sliding, .sliding], "every 6th layer is global")
        let text = try Self.json()
        let multimodal: [String: Any] = ["model_type": "gemma3", "text_config": text]
        #expect(try Self.decode(multimodal).sandwichNorms)
        // Gemma3TextConfig's defaults: head_dim 256, query_pre_attn_scalar 256, tied.
        var bare = try Self.json()
        for key in ["head_dim", "query_pre_attn_scalar", "tie_word_embeddings", "sliding_window"] { bare[key] = nil }
        let defaults = try Self.decode(bare)
        #expect(defaults.headDim == 256 && defaults.attentionScale == 0.0625 && defaults.tieWordEmbeddings && defaults.slidingWindow == 4096)
    }

    /// The config written beside a merged or quantized Gemma keeps every switch (read back equal).
    @Test func writtenConfigReadsBackTheSame() throws {
        let config = try Self.family.config()
        let data = Data(PythonJSON(LlamaWriter.minimalConfig(config, dtype: "float32")).render(indent: 2, sortKeys: true).utf8)
        var reread = try LlamaConfig.decode(data, path: "written")
        reread.dtype = config.dtype
        reread.quantizationConfig = config.quantizationConfig
        #expect(reread == config)
        // Gemma3TextConfig declares query_pre_attn_scalar an int: transformers refuses 256.0.
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(String(data: data, encoding: .utf8)!.contains("\"query_pre_attn_scalar\": \((json["query_pre_attn_scalar"] as! NSNumber).intValue),"))
    }

    @Test func refusedConfigsNameTheKey() throws {
        let cases: [(edit: (inout [String: Any]) -> Void, mentions: String)] = [
            ({ $0["attn_logit_softcapping"] = 50 }, "attn_logit_softcapping"),
            ({ $0["final_logit_softcapping"] = -1 }, "final_logit_softcapping"),
            ({ $0["use_bidirectional_attention"] = true }, "use_bidirectional_attention"),
            ({ $0["layer_types"] = ["sliding_attention", "chunked_attention", "full_attention"] }, "layer_types[1] 'chunked_attention'"),
            ({ $0["layer_types"] = ["full_attention"] }, "layer_types has 1 entries for 3 layers"),
            ({ $0["hidden_activation"] = "relu" }, "hidden_activation 'relu'"),
            ({ $0["sliding_window"] = 0 }, "sliding_window"),
            ({ $0["rope_parameters"] = ["full_attention": ["rope_type": "yarn"], "sliding_attention": [:]] }, "rope type 'yarn'"),
        ]
        for c in cases {
            var json = try Self.json()
            c.edit(&json)
            let text = Qwen3ReferenceTests.message { try Self.decode(json) }
            #expect(text.contains(c.mentions), "\(text)")
        }
    }

    /// Mistral's sliding_window now applies to every layer (it used to be ignored).
    @Test func mistralSlidingWindowAppliesToEveryLayer() throws {
        var json = try Self.json()
        for key in ["layer_types", "rope_parameters", "query_pre_attn_scalar", "final_logit_softcapping", "hidden_activation"] { json[key] = nil }
        json["model_type"] = "mistral"
        json["hidden_act"] = "silu"
        json["sliding_window"] = 4096
        let mistral = try Self.decode(json)
        #expect(mistral.layerTypes.allSatisfy { $0 == .sliding } && mistral.slidingWindow == 4096 && !mistral.sandwichNorms)
        #expect(mistral.ropeTables.count == 1 && mistral.attentionScale == Attention.defaultScale(headDim: 32))
        json["sliding_window"] = NSNull()
        #expect(try Self.decode(json).layerTypes.allSatisfy { $0 == .full })
    }
}
