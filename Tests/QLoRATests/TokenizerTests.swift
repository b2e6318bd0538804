import Foundation
import Testing
@testable import QLoRA

/// Locates Fixtures/ of the package from this source file.
enum DataFixtures {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url = url.deletingLastPathComponent()
        }
        return url.appendingPathComponent("Fixtures")
    }()

    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent(path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static let smolLM2: Tokenizer = try! Tokenizer(directory: root.appendingPathComponent("tokenizer"))
    static let legacy: Tokenizer = try! Tokenizer(directory: root.appendingPathComponent("tokenizer-sp/legacy"))
    static let metaspace: Tokenizer = try! Tokenizer(directory: root.appendingPathComponent("tokenizer-sp/metaspace"))

    static func tokenizer(_ variant: String) -> Tokenizer { variant == "legacy" ? legacy : metaspace }
}

func int32s(_ any: Any?) -> [Int32] { (any as? [NSNumber] ?? []).map { $0.int32Value } }

/// The first index where two id lists differ, for failure messages.
func firstMismatch(_ a: [Int32], _ b: [Int32]) -> String {
    let index = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    return "first mismatch at \(index) (counts \(a.count) vs \(b.count)): \(Array(a[index...].prefix(6))) vs \(Array(b[index...].prefix(6)))"
}

@Suite struct TokenizerTests {
    static let smolCases: [[String: Any]] = (try? DataFixtures.json("tokenizer/tokenizer_cases.json"))?["strings"] as? [[String: Any]] ?? []

    @Test func smolLM2CasesArePresent() { #expect(Self.smolCases.count == 45) }

    @Test(arguments: 0..<45)
    func smolLM2EncodeDecode(_ index: Int) throws {
        let tokenizer = DataFixtures.smolLM2
        let entry = try #require(Self.smolCases.count > index ? Self.smolCases[index] : nil)
        let text = try #require(entry["text"] as? String)
        let expected = int32s(entry["ids"])
        let ids = tokenizer.encode(text)
        #expect(ids == expected, "\(text.debugDescription): \(firstMismatch(ids, expected))")
        #expect(tokenizer.encode(text, addSpecialTokens: true) == int32s(entry["ids_with_special_tokens"]))
        let tokens = ids.map { tokenizer.token($0) ?? "?" }
        #expect(tokens == entry["tokens"] as? [String])
        #expect(tokenizer.decode(expected) == entry["decoded"] as? String)
        #expect(tokenizer.decode(expected, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
    }

    @Test func smolLM2SpecialTokens() throws {
        let tokenizer = DataFixtures.smolLM2
        let cases = try DataFixtures.json("tokenizer/tokenizer_cases.json")
        #expect(tokenizer.vocabSize == (cases["vocab_size_with_added"] as? Int))
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.eosTokenID == 2)
        #expect(tokenizer.padTokenID == 2)
        #expect(tokenizer.unknownTokenID == 0)
        let added = try #require((cases["special_tokens"] as? [String: Any])?["added_tokens"] as? [String: Int])
        for (content, id) in added {
            #expect(tokenizer.tokenID(content) == Int32(id))
            #expect(tokenizer.token(Int32(id)) == content)
            #expect(tokenizer.isSpecialToken(Int32(id)))
        }
        #expect(!tokenizer.addsBOSToken)
        #expect(tokenizer.chatTemplateSource == cases["chat_template"] as? String)
    }

    static let spCases: [(String, Int)] = ["legacy", "metaspace"].flatMap { variant in (0..<51).map { (variant, $0) } }

    @Test(arguments: spCases)
    func sentencePieceStyleEncodeDecode(_ variant: String, _ index: Int) throws {
        let tokenizer = DataFixtures.tokenizer(variant)
        let strings = try #require(try DataFixtures.json("tokenizer-sp/\(variant)/cases.json")["strings"] as? [[String: Any]])
        #expect(strings.count == 51)
        let entry = try #require(strings.count > index ? strings[index] : nil)
        let text = try #require(entry["text"] as? String)
        let expected = int32s(entry["ids"])
        let ids = tokenizer.encode(text)
        #expect(ids == expected, "\(variant) \(text.debugDescription): \(firstMismatch(ids, expected))")
        let withSpecial = int32s(entry["ids_with_special_tokens"])
        #expect(tokenizer.encode(text, addSpecialTokens: true) == withSpecial)
        #expect(ids.map { tokenizer.token($0) ?? "?" } == entry["tokens"] as? [String])
        #expect(tokenizer.decode(expected) == entry["decoded"] as? String)
        #expect(tokenizer.decode(withSpecial) == entry["decoded_with_special_tokens"] as? String)
        #expect(tokenizer.decode(withSpecial, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
    }

    @Test(arguments: ["legacy", "metaspace"])
    func sentencePieceStylePairs(_ variant: String) throws {
        let tokenizer = DataFixtures.tokenizer(variant)
        let pairs = try #require(try DataFixtures.json("tokenizer-sp/\(variant)/cases.json")["pairs"] as? [[String: Any]])
        #expect(pairs.count == 3)
        for pair in pairs {
            let encoded = tokenizer.encodePair(try #require(pair["text"] as? String), try #require(pair["text_pair"] as? String))
            #expect(encoded.ids == int32s(pair["ids"]))
            #expect(encoded.typeIDs == int32s(pair["type_ids"]))
        }
        #expect(tokenizer.bosTokenID == 1 && tokenizer.eosTokenID == 2 && tokenizer.padTokenID == nil)
        #expect(tokenizer.addsBOSToken && !tokenizer.addsEOSToken)
        #expect(tokenizer.vocabSize == 2000)
    }

    @Test func offsetsPointIntoTheText() {
        let text = "Hi <|im_end|> café 😀 x"
        let tokenizer = DataFixtures.smolLM2
        let (ids, offsets) = tokenizer.encodeWithOffsets(text)
        #expect(ids.count == offsets.count)
        let bytes = Array(text.utf8)
        // Consecutive, covering, and each added token maps to its own text.
        #expect(offsets.first?.lowerBound == 0 && offsets.last?.upperBound == bytes.count)
        for (id, range) in zip(ids, offsets) where tokenizer.isSpecialToken(id) {
            #expect(String(decoding: bytes[range], as: UTF8.self) == tokenizer.token(id))
        }
        let sp = DataFixtures.legacy.encodeWithOffsets(" leading")
        #expect(sp.offsets.allSatisfy { $0.upperBound <= 8 })
    }

    @Test func byteLevelRegexSplitsLikeGPT2() {
        func pieces(_ text: String) -> [String] {
            let scalars = scalarValues(text)
            return scalars.withUnsafeBufferPointer { buffer in
                SplitRegex.gpt2.split(buffer).map { stringFromScalars(scalars[$0]) }
            }
        }
        #expect(pieces("I'm  fine,\n\n  you?") == ["I", "'m", " ", " fine", ",", "\n\n ", " you", "?"])
        #expect(pieces("a1 22 ∞ ") == ["a", "1", " 22", " ∞", " "])
        #expect(pieces("'Neil's") == ["'", "Neil", "'s"])
    }

    @Test func llama3RegexSplits() {
        let scalars = scalarValues("Hello, WORLD'S 12345\n\n  ok")
        let pieces = scalars.withUnsafeBufferPointer { buffer in
            SplitRegex.llama3.split(buffer).map { stringFromScalars(scalars[$0]) }
        }
        #expect(pieces == ["Hello", ",", " WORLD", "'S", " ", "123", "45", "\n\n", " ", " ok"])
    }

    /// Qwen 2/3's pre-tokenizer (Llama 3's regex, numbers one digit at a time) and GPT-4o's (o200k: words
    /// by letter-case classes, marks in both) on SmolLM2's vocabulary: the ids HF `tokenizers` gives
    /// (Fixtures/tokenizer/{qwen2,gpt4o}-split.json, scripts/make-qwen2-split-fixture.py).
    @Test(arguments: ["qwen2", "gpt4o"])
    func splitRegexEqualsTokenizers(_ name: String) throws {
        let fixture = try DataFixtures.json("tokenizer/\(name)-split.json")
        let source = try Data(contentsOf: DataFixtures.root.appendingPathComponent("tokenizer/tokenizer.json"))
        var spec = try #require(try JSONSerialization.jsonObject(with: source) as? [String: Any])
        spec["pre_tokenizer"] = fixture["pre_tokenizer"]
        let tokenizer = try Tokenizer(tokenizerJSON: try JSONSerialization.data(withJSONObject: spec), config: nil)
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count == 67)
        for entry in cases {
            let text = try #require(entry["text"] as? String)
            let expected = int32s(entry["ids"])
            let ids = tokenizer.encode(text)
            #expect(ids == expected, "\(name) \(text.debugDescription): \(firstMismatch(ids, expected))")
        }
    }

    @Test func qwen2AndGPT4oRegexSplits() {
        func pieces(_ regex: SplitRegex, _ text: String) -> [String] {
            let scalars = scalarValues(text)
            return scalars.withUnsafeBufferPointer { buffer in regex.split(buffer).map { stringFromScalars(scalars[$0]) } }
        }
        #expect(pieces(.qwen2, "Hello, WORLD'S 12345\n\n  ok") == ["Hello", ",", " WORLD", "'S", " ", "1", "2", "3", "4", "5", "\n\n", " ", " ok"])
        #expect(pieces(.gpt4o, "CamelCase HTTPServer DON'T 12345 a/b//\n") == ["Camel", "Case", " HTTPServer", " DON'T", " ", "123", "45", " a", "/b", "//\n"])
    }

    /// A tokenizer_config.json that is not a JSON object is refused naming that file (not tokenizer.json).
    @Test func brokenTokenizerConfigIsNamed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-config-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data(contentsOf: DataFixtures.root.appendingPathComponent("tokenizer-sp/legacy/tokenizer.json"))
            .write(to: directory.appendingPathComponent("tokenizer.json"))
        try Data("{\"bos_token\": ".utf8).write(to: directory.appendingPathComponent("tokenizer_config.json"))
        #expect { try Tokenizer(directory: directory) } throws: { error in
            "\(error)".contains(directory.appendingPathComponent("tokenizer_config.json").path)
        }
    }

    @Test func badTokenizerFilesThrowTheSpecificError() throws {
        #expect(throws: DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "not a JSON object")) {
            try Tokenizer(tokenizerJSON: Data("[1]".utf8), config: nil)
        }
        let wordLevel = #"{"model": {"type": "WordLevel", "vocab": {}}}"#
        #expect(throws: DataError.unsupportedTokenizerFeature(component: "model", detail: "type WordLevel (BPE and WordPiece are implemented)")) {
            try Tokenizer(tokenizerJSON: Data(wordLevel.utf8), config: nil)
        }
        let badMerge = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#
        #expect(throws: DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "model: merge 0 produces a token missing from the vocab")) {
            try Tokenizer(tokenizerJSON: Data(badMerge.utf8), config: nil)
        }
        let regex = #"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}}"#
        #expect(throws: DataError.unsupportedTokenizerFeature(component: "normalizer", detail: "regex pattern \\s+ (only plain string patterns are supported)")) {
            try Tokenizer(tokenizerJSON: Data(regex.utf8), config: nil)
        }
        #expect(throws: DataError.self) {
            try Tokenizer(directory: URL(fileURLWithPath: "/nonexistent-tokenizer-dir"))
        }
    }

    @Test func bpeMergesLowestRankFirstWithTinyVocab() throws {
        // "a a a a" with merge "a a" -> "aa" then "aa aa" -> "aaaa"; the leftmost pair wins ties.
        let json = #"""
        {"model": {"type": "BPE", "vocab": {"a": 0, "aa": 1, "aaaa": 2, "b": 3, "<unk>": 4},
                   "merges": [["a", "a"], ["aa", "aa"]], "unk_token": "<unk>", "fuse_unk": true}}
        """#
        let tokenizer = try Tokenizer(tokenizerJSON: Data(json.utf8), config: nil)
        #expect(tokenizer.encode("aaaaa") == [2, 0])
        #expect(tokenizer.encode("aaab") == [1, 0, 3])
        #expect(tokenizer.encode("xyb") == [4, 3])  // fused unknowns
        #expect(tokenizer.decode([1, 3]) == "aa b")  // no decoder: tokens joined by spaces
    }
}
