import Foundation
import GGUF
import Testing
@testable import QLoRA

/// SentencePiece-style GGUF tokenizers (`tokenizer.ggml.model = llama`) against transformers 5.23's
/// `AutoTokenizer.from_pretrained(dir, gguf_file=...)` on the same files (Fixtures/gguf-spm, made by
/// scripts/make-gguf-spm-tokenizer-fixtures.py): the rebuilt tokenizer.json equals the one transformers
/// builds (merges in order, added tokens, pipeline), and every string gives transformers' ids and decodes.
@Suite struct GGUFSentencePieceTokenizerTests {
    static let names = ["spm-llama", "spm-phi3", "spm-gemma3"]
    static let caseCount = 74

    static func fixture(_ name: String) throws -> (tokenizer: Tokenizer, cases: [String: Any]) {
        let tokenizer = try Tokenizer(directory: FixturePaths.url("gguf-spm/\(name).gguf"))
        return (tokenizer, try DataFixtures.json("gguf-spm/\(name).cases.json"))
    }

    /// A component of our rebuilt tokenizer.json as plain JSON values (through our writer and back).
    static func plain(_ value: Any) throws -> Any {
        try JSONSerialization.jsonObject(with: TokenizerJSONWriter.data(["v": value]), options: []) as! [String: Any]
    }

    @Test(arguments: names)
    func rebuiltTokenizerJSONEqualsTransformers(_ name: String) throws {
        let file = try GGUFFile(path: FixturePaths.url("gguf-spm/\(name).gguf").path)
        let ours = try Tokenizer.huggingFaceObjects(gguf: file).tokenizer
        let theirs = try DataFixtures.json("gguf-spm/\(name).transformers.json")
        for key in ["normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"] {
            let a = try Self.plain(ours[key]!) as! NSDictionary, b = ["v": theirs[key]!] as NSDictionary
            #expect(a == b, "\(name) \(key): \(a) vs \(b)")
        }
        let ourModel = try #require(ours["model"] as? [String: Any]), theirModel = try #require(theirs["model"] as? [String: Any])
        #expect(try #require(ourModel["merges"] as? [[String]]) == theirModel["merges"] as? [[String]])
        let vocabulary = try #require(ourModel["vocab"] as? TokenizerVocabulary)
        var byID: [Int: String] = [:]
        for (token, id) in try #require(theirModel["vocab"] as? [String: Any]) { byID[(id as! NSNumber).intValue] = token }
        #expect(vocabulary.tokens.count == byID.count)
        for (id, token) in vocabulary.tokens.enumerated() { #expect(token == byID[id], "\(name) vocab id \(id)") }
        for key in ["unk_token", "fuse_unk", "byte_fallback"] {
            #expect((try Self.plain(ourModel[key]!) as! NSDictionary) == ["v": theirModel[key]!] as NSDictionary, "\(name) model.\(key)")
        }
    }

    static let stringCases: [(String, Int)] = names.flatMap { name in (0..<caseCount).map { (name, $0) } }

    @Test(arguments: stringCases)
    func idsAndDecodesEqualTransformers(_ name: String, _ index: Int) throws {
        let (tokenizer, cases) = try Self.fixture(name)
        let strings = try #require(cases["strings"] as? [[String: Any]])
        #expect(strings.count == Self.caseCount)
        let entry = strings[index]
        let text = try #require(entry["text"] as? String)
        let expected = int32s(entry["ids"])
        let ids = tokenizer.encode(text)
        #expect(ids == expected, "\(name) \(text.debugDescription): \(firstMismatch(ids, expected))")
        #expect(tokenizer.encode(text, addSpecialTokens: true) == int32s(entry["ids_with_special_tokens"]), "\(name) \(text.debugDescription)")
        #expect(expected.map { tokenizer.token($0) ?? "?" } == entry["tokens"] as? [String])
        #expect(tokenizer.decode(expected) == entry["decoded"] as? String, "\(name) \(text.debugDescription)")
        #expect(tokenizer.decode(expected, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
    }

    @Test(arguments: names)
    func specialTokensAndSizeEqualTransformers(_ name: String) throws {
        let (tokenizer, cases) = try Self.fixture(name)
        let specials = try #require(cases["special_tokens"] as? [String: Any])
        #expect(tokenizer.bosToken == specials["bos"] as? String)
        #expect(tokenizer.eosToken == specials["eos"] as? String)
        #expect(tokenizer.unknownTokenID.flatMap { tokenizer.token($0) } == specials["unk"] as? String)
        #expect(tokenizer.padTokenID.flatMap { tokenizer.token($0) } == specials["pad"] as? String)
        #expect(tokenizer.addsBOSToken == cases["add_bos_token"] as? Bool)
        #expect(tokenizer.addsEOSToken == cases["add_eos_token"] as? Bool)
        #expect(tokenizer.vocabSize == (cases["vocab_size_with_added"] as? NSNumber)?.intValue)
    }

    /// Gemma 3's chat template from `tokenizer.chat_template`, two turns and four, with and without the
    /// generation prompt: transformers' `apply_chat_template` text, and its ids.
    @Test func gemmaChatTemplateRendersAsTransformers() throws {
        let (tokenizer, cases) = try Self.fixture("spm-gemma3")
        try Self.expectChatRenders(cases["chat"], template: try ChatTemplate(try #require(tokenizer.chatTemplateSource)), tokenizer: tokenizer)
    }

    /// Each recorded conversation (`messages`, `add_generation_prompt`) renders to transformers' `text`
    /// and tokenizes to its `ids`.
    static func expectChatRenders(_ recorded: Any?, template: ChatTemplate, tokenizer: Tokenizer,
                                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        let chats = try #require(recorded as? [[String: Any]], sourceLocation: sourceLocation)
        #expect(chats.count == 4, sourceLocation: sourceLocation)
        for chat in chats {
            let messages = (chat["messages"] as? [[String: String]] ?? []).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            let text = try template.render(messages: messages, addGenerationPrompt: chat["add_generation_prompt"] as? Bool ?? false,
                                           tokenizer: tokenizer)
            #expect(text == chat["text"] as? String, sourceLocation: sourceLocation)
            #expect(tokenizer.encode(text) == int32s(chat["ids"]), sourceLocation: sourceLocation)
        }
    }

    /// The written tokenizer.json (what `qlora quantize x.gguf` puts beside the model) loads back into the
    /// same tokenizer.
    @Test(arguments: names)
    func writtenFilesLoadBackToTheSameIDs(_ name: String) throws {
        let file = try GGUFFile(path: FixturePaths.url("gguf-spm/\(name).gguf").path)
        let files = try Tokenizer.huggingFaceFiles(gguf: file)
        let reloaded = try Tokenizer(tokenizerJSON: files.tokenizerJSON, config: files.tokenizerConfig, chatTemplate: files.chatTemplate)
        let (tokenizer, cases) = try Self.fixture(name)
        for entry in try #require(cases["strings"] as? [[String: Any]]) {
            let text = entry["text"] as! String
            #expect(reloaded.encode(text, addSpecialTokens: true) == tokenizer.encode(text, addSpecialTokens: true))
        }
        #expect(reloaded.vocabSize == tokenizer.vocabSize)
        #expect(reloaded.bosTokenID == tokenizer.bosTokenID)
    }

    /// `Split` on a plain string ("▁" and "e") with each of `tokenizers`' five behaviors (the gemma3
    /// fixture's tokenizer with its pre-tokenizer replaced) gives `tokenizers`' ids.
    @Test(arguments: ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"])
    func splitOnAStringMatchesTokenizers(_ behavior: String) throws {
        let fixture = try DataFixtures.json("gguf-spm/split-behaviors.json")
        let strings = try #require(fixture["strings"] as? [String])
        #expect(strings.count == 51)
        let variants = try #require((fixture["behaviors"] as? [String: Any])?[behavior] as? [[String: Any]])
        #expect(variants.count == 2)
        let data = try Data(contentsOf: FixturePaths.url("gguf-spm/spm-gemma3.transformers.json"))
        for variant in variants {
            var root = try #require(try TokenizerJSONReader.parse(data) as? [String: Any])
            root["pre_tokenizer"] = variant["pre_tokenizer"]
            root["post_processor"] = NSNull()
            let tokenizer = try Tokenizer(tokenizerObject: root, config: [:], chatTemplate: nil)
            let ids = try #require(variant["ids"] as? [Any])
            #expect(ids.count == strings.count)
            for (text, expected) in zip(strings, ids) {
                #expect(tokenizer.encode(text) == int32s(expected), "\(behavior) \(variant["pre_tokenizer"]!) \(text.debugDescription)")
            }
        }
    }

    /// tokenizer.json with tokens that are canonically equivalent but spelled differently ("é" as one
    /// scalar and as two, as in Gemma's vocabulary) and a token that is a raw U+FEFF: each keeps its id
    /// through our writer and reader (JSONSerialization would merge the first two and empty the third).
    @Test func tokenizerJSONKeepsEverySpelling() throws {
        let tokens = ["\u{E9}", "e", "\u{301}", "e\u{301}", "\u{FEFF}", "x"]
        let object: [String: Any] = [
            "model": ["type": "BPE", "vocab": TokenizerVocabulary(tokens: tokens), "merges": [["e", "\u{301}"]]],
            "pre_tokenizer": NSNull(), "normalizer": NSNull(), "decoder": NSNull(), "added_tokens": [] as [Any]]
        let tokenizer = try Tokenizer(tokenizerJSON: TokenizerJSONWriter.data(object), config: nil)
        #expect(tokenizer.vocabSize == 6)
        for (id, token) in tokens.enumerated() { #expect(tokenizer.token(Int32(id)) == token && tokenizer.tokenID(token) == Int32(id)) }
        #expect(tokenizer.encode("\u{E9}e\u{301}\u{FEFF}x") == [0, 3, 4, 5])
    }

    // MARK: Bad input

    /// The llama fixture's metadata with `change` applied, written to a temporary file.
    static func modified(_ change: (inout [(String, GGUFValue)]) -> Void) throws -> String {
        let source = try GGUFFile(path: FixturePaths.url("gguf-spm/spm-llama.gguf").path)
        var writer = GGUFWriter()
        var metadata = source.metadataKeys.map { ($0, source.metadata[$0]!) }
        change(&metadata)
        for (key, value) in metadata { writer.set(key, value) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("spm-bad-\(UUID().uuidString).gguf").path
        try writer.write(to: path)
        return path
    }

    static func replace(_ key: String, in metadata: inout [(String, GGUFValue)], _ transform: ([GGUFValue]) -> [GGUFValue]) {
        guard let index = metadata.firstIndex(where: { $0.0 == key }), case .array(let items) = metadata[index].1 else { return }
        metadata[index].1 = .array(elementType: items.elementType.rawValue, transform(items.values))
    }

    static func failure(_ path: String) -> String {
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try Tokenizer(gguf: try GGUFFile(path: path))
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func missingScoresNameTheFileAndKey() throws {
        let path = try Self.modified { $0.removeAll { $0.0 == "tokenizer.ggml.scores" } }
        let message = Self.failure(path)
        #expect(message.contains(path) && message.contains("tokenizer.ggml.scores"), "\(message)")
    }

    @Test func scoreCountMismatchNamesTheFileAndKey() throws {
        let path = try Self.modified { Self.replace("tokenizer.ggml.scores", in: &$0) { Array($0.dropLast(3)) } }
        let message = Self.failure(path)
        #expect(message.contains(path) && message.contains("tokenizer.ggml.scores has 618 entries for 621 tokens"), "\(message)")
    }

    @Test func unknownTokenTypeNamesTheFileKeyAndToken() throws {
        let path = try Self.modified { Self.replace("tokenizer.ggml.token_type", in: &$0) { var t = $0; t[7] = .int32(9); return t } }
        let message = Self.failure(path)
        #expect(message.contains(path) && message.contains("tokenizer.ggml.token_type[7] is 9"), "\(message)")
    }

    @Test(arguments: ["<0xZZ>", "<0x0a>", "0x0A"])
    func malformedByteTokenNamesTheFileAndKey(_ spelling: String) throws {
        let file = try GGUFFile(path: FixturePaths.url("gguf-spm/spm-llama.gguf").path)
        let tokens = try #require(file["tokenizer.ggml.tokens"]?.array?.map { $0.string! })
        let index = try #require(tokens.firstIndex(of: "<0x0A>"))
        let path = try Self.modified { Self.replace("tokenizer.ggml.tokens", in: &$0) { var t = $0; t[index] = .string(spelling); return t } }
        let message = Self.failure(path)
        #expect(message.contains(path) && message.contains("tokenizer.ggml.tokens[\(index)] '\(spelling)' has token type 6"), "\(message)")
    }

    @Test func byteLevelPreTokenizerWithSentencePieceIsRefused() throws {
        let path = try Self.modified { metadata in
            metadata = metadata.map { $0.0 == "tokenizer.ggml.pre" ? ($0.0, .string("llama-bpe")) : $0 }
        }
        let message = Self.failure(path)
        #expect(message.contains(path) && message.contains("tokenizer.ggml.pre 'llama-bpe'"), "\(message)")
    }
}
