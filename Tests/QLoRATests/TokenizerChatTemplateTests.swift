import Foundation
import Testing
@testable import QLoRA

@Suite struct ChatTemplateTests {
    static func chatCases() throws -> [[String: Any]] {
        try #require(try DataFixtures.json("tokenizer/tokenizer_cases.json")["chat"] as? [[String: Any]])
    }

    static func messages(_ entry: [String: Any]) -> [ChatMessage] {
        (entry["messages"] as? [[String: String]] ?? []).map { ChatMessage(role: $0["role"] ?? "", content: $0["content"] ?? "") }
    }

    @Test(arguments: 0..<3)
    func smolLM2ChatCasesRenderAndTokenize(_ index: Int) throws {
        let cases = try Self.chatCases()
        #expect(cases.count == 3)
        let entry = cases[index]
        let tokenizer = DataFixtures.smolLM2
        let template = try ChatTemplate(try #require(tokenizer.chatTemplateSource))
        let text = try template.render(messages: Self.messages(entry),
                                       addGenerationPrompt: entry["add_generation_prompt"] as? Bool ?? false, tokenizer: tokenizer)
        #expect(text == entry["text"] as? String)
        let ids = tokenizer.encode(text)
        let expected = int32s(entry["ids"])
        #expect(ids == expected, "\(firstMismatch(ids, expected))")
    }

    static let llamaTemplates = DataFixtures.root.appendingPathComponent("tokenizer/llama-templates")

    // Expected strings: rendered by Python jinja2 3.1.6 with trim_blocks=True, lstrip_blocks=True (as transformers does).
    @Test func llama2StyleTemplate() throws {
        let source = try String(contentsOf: Self.llamaTemplates.appendingPathComponent("llama2.jinja"), encoding: .utf8)
        let template = try ChatTemplate(source)
        let conversation = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: " Hi there "),
                            ChatMessage(role: "assistant", content: "Hello!"), ChatMessage(role: "user", content: "Bye")]
        let expected = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi there [/INST] Hello! </s><s>[INST] Bye [/INST]"
        for prompt in [false, true] {
            #expect(try template.render(messages: conversation, addGenerationPrompt: prompt, bosToken: "<s>", eosToken: "</s>") == expected)
        }
        // Roles out of order reach raise_exception.
        let wrong = [ChatMessage(role: "assistant", content: "x")]
        #expect(throws: DataError.templateRaisedException(message: "Conversation roles must alternate user/assistant/user/assistant/...")) {
            try template.render(messages: wrong, addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>")
        }
    }

    @Test func llama3StyleTemplate() throws {
        let source = try String(contentsOf: Self.llamaTemplates.appendingPathComponent("llama3.jinja"), encoding: .utf8)
        let template = try ChatTemplate(source)
        let conversation = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there\n"),
                            ChatMessage(role: "assistant", content: "Hello!")]
        let base = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        #expect(try template.render(messages: conversation, addGenerationPrompt: false, bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>") == base)
        #expect(try template.render(messages: conversation, addGenerationPrompt: true, bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>")
                == base + "<|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    func render(_ source: String, _ messages: [ChatMessage] = [], context: [String: TemplateValue] = [:]) throws -> String {
        try ChatTemplate(source).render(messages: messages, addGenerationPrompt: false, extraContext: context)
    }

    @Test func expressionsFiltersAndLoops() throws {
        let two = [ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: " b ")]
        #expect(try render("{% for m in messages %}{{ loop.index }}{{ m.role[0] }}{% if not loop.last %},{% endif %}{% endfor %}", two) == "1u,2a")
        #expect(try render("{{ messages | length }}|{{ messages[-1].content | trim }}|{{ messages[1]['content'].strip() }}", two) == "2|b|b")
        #expect(try render("{{ 'x' ~ (1 + 2) }}{{ 'a' + 'b' ~ 1 }}") == "x3ab1")
        #expect(throws: DataError.self) { try render("{{ 'x' ~ 1 + 2 }}") }  // ('x' ~ 1) + 2, as in Jinja
        #expect(try render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 3 }} {{ 3 / 2 }}") == "7 3 1 8 1.5")
        #expect(try render("{{ 'b' in 'abc' }} {{ 'z' not in ['a'] }} {{ none is none }} {{ foo is defined }}") == "True True True False")
        #expect(try render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "6")
        #expect(try render("{% set x = 1 %}{% for i in [1] %}{% set x = 5 %}{% endfor %}{{ x }}") == "1")  // loop scope
        #expect(try render("{{ [1, 2, 3][::-1] | join(',') }} {{ 'abc'[1:] }} {{ {'k': [1, 'two']} | tojson }}") == "3,2,1 bc {\"k\": [1, \"two\"]}")
        #expect(try render("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "02")
        #expect(try render("{{ 'yes' if messages else 'no' }} {{ x | default('d') }}") == "no d")
        #expect(try render("{% for m in messages if m.role == 'assistant' %}{{ m.content }}{% endfor %}", two) == " b ")
        #expect(try render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join }}", two) == "a")
        #expect(try render("{# comment #}a\n{%- if true %}\n  b\n{%- endif %}") == "a  b")
    }

    @Test func whitespaceControlMatchesJinja() throws {
        // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
        #expect(try render("{% if true %}\n    x\n    {% endif %}\ny") == "    x\ny")
        #expect(try render("a  {%- if true -%}  b  {%- endif %}  c") == "ab  c")
        #expect(try render("a {{ 'v' }} \n{% if true %}z{% endif %}") == "a v \nz")
        #expect(try render("  {%+ if true %}k{% endif %}") == "  k")
    }

    @Test func unsupportedAndBadSyntaxNameThePosition() {
        #expect(throws: DataError.templateUnsupported(construct: "{% macro %}", line: 2, column: 3)) {
            try ChatTemplate("ab\n  {% macro m() %}{% endmacro %}")
        }
        #expect(throws: DataError.templateSyntax(message: "{% if %} without {% endif %}", line: 1, column: 4)) {
            try ChatTemplate("xy {% if true %}z")
        }
        #expect(throws: DataError.templateSyntax(message: "unclosed tag", line: 1, column: 1)) {
            try ChatTemplate("{{ 'a'")
        }
        #expect(throws: DataError.templateRuntime(message: "unknown filter nosuch", line: 1, column: 1)) {
            try ChatTemplate("{{ 1 | nosuch }}").render(messages: [], addGenerationPrompt: false)
        }
    }
}
