import Foundation
import Testing
@testable import QLoRA

/// BERT (WordPiece) and RoBERTa (byte-level BPE) tokenizers against `tokenizers` 0.23.3
/// (Fixtures/tokenizer-encoder, scripts/make-encoder-tokenizer-fixtures.py).
enum EncoderFixtures {
    static let directory = DataFixtures.root.appendingPathComponent("tokenizer-encoder")
    static let uncased: Tokenizer = try! Tokenizer(directory: directory.appendingPathComponent("uncased"))
    static let roberta: Tokenizer = try! Tokenizer(directory: directory.appendingPathComponent("roberta"))
    /// The uncased tokenizer.json with the normalizer and post-processor of cased/overrides.json.
    static let cased = spliced("uncased", "cased")
    /// The roberta tokenizer.json with add_prefix_space true (roberta-prefix/overrides.json).
    static let robertaPrefix = spliced("roberta", "roberta-prefix")

    static func spliced(_ base: String, _ variant: String) -> Tokenizer {
        let baseURL = directory.appendingPathComponent(base)
        var json = try! JSONSerialization.jsonObject(with: Data(contentsOf: baseURL.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        let overrides = try! DataFixtures.json("tokenizer-encoder/\(variant)/overrides.json")
        json.merge(overrides) { _, new in new }
        return try! Tokenizer(tokenizerJSON: JSONSerialization.data(withJSONObject: json),
                              config: try? Data(contentsOf: baseURL.appendingPathComponent("tokenizer_config.json")))
    }

    static func tokenizer(_ variant: String) -> Tokenizer {
        switch variant {
        case "uncased": return uncased
        case "cased": return cased
        case "roberta-prefix": return robertaPrefix
        default: return roberta
        }
    }

    static let variants = ["uncased", "cased", "roberta", "roberta-prefix"]
    static let cases: [String: [String: Any]] = Dictionary(uniqueKeysWithValues: variants.map {
        ($0, (try? DataFixtures.json("tokenizer-encoder/\($0)/cases.json")) ?? [:])
    })
    static let stringCount = 45, pairCount = 8
    static let stringCases = variants.flatMap { v in (0..<stringCount).map { (v, $0) } }
    static let pairCases = variants.flatMap { v in (0..<pairCount).map { (v, $0) } }
}

func byteRanges(_ any: Any?) -> [Range<Int>] {
    (any as? [[NSNumber]] ?? []).map { $0[0].intValue..<$0[1].intValue }
}

@Suite struct EncoderTokenizerTests {
    @Test func casesArePresent() {
        for variant in EncoderFixtures.variants {
            let cases = EncoderFixtures.cases[variant] ?? [:]
            #expect((cases["strings"] as? [Any])?.count == EncoderFixtures.stringCount, "\(variant)")
            #expect((cases["pairs"] as? [Any])?.count == EncoderFixtures.pairCount, "\(variant)")
        }
    }

    @Test(arguments: EncoderFixtures.stringCases)
    func singleTextMatchesTokenizers(_ variant: String, _ index: Int) throws {
        let tokenizer = EncoderFixtures.tokenizer(variant)
        let strings = try #require(EncoderFixtures.cases[variant]?["strings"] as? [[String: Any]])
        let entry = try #require(strings.count > index ? strings[index] : nil)
        let text = try #require(entry["text"] as? String)
        let expected = int32s(entry["ids"])
        let encoded = tokenizer.encoding(text)
        #expect(encoded.ids == expected, "\(variant) \(text.debugDescription): \(firstMismatch(encoded.ids, expected))")
        #expect(encoded.typeIDs == int32s(entry["type_ids"]))
        #expect(encoded.offsets == byteRanges(entry["offsets"]), "\(variant) \(text.debugDescription) offsets")
        #expect(tokenizer.encode(text, addSpecialTokens: true) == expected)
        let plain = int32s(entry["ids_without_special_tokens"])
        #expect(tokenizer.encode(text) == plain)
        let withOffsets = tokenizer.encodeWithOffsets(text)
        #expect(withOffsets.ids == plain)
        #expect(withOffsets.offsets == byteRanges(entry["offsets_without_special_tokens"]))
        if !variant.hasPrefix("roberta") {
            // (RoBERTa's Encoding names an lstrip added token by the text it matched, " <mask>".)
            #expect(expected.map { tokenizer.token($0) ?? "?" } == entry["tokens"] as? [String])
        }
        #expect(tokenizer.decode(expected) == entry["decoded"] as? String, "\(variant) \(text.debugDescription) decode")
        #expect(tokenizer.decode(expected, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
    }

    @Test(arguments: EncoderFixtures.pairCases)
    func pairMatchesTokenizers(_ variant: String, _ index: Int) throws {
        let tokenizer = EncoderFixtures.tokenizer(variant)
        let pairs = try #require(EncoderFixtures.cases[variant]?["pairs"] as? [[String: Any]])
        let entry = try #require(pairs.count > index ? pairs[index] : nil)
        let a = try #require(entry["text"] as? String), b = try #require(entry["text_pair"] as? String)
        let encoded = tokenizer.encodePair(a, b)
        #expect(encoded.ids == int32s(entry["ids"]), "\(variant) \(a.debugDescription) + \(b.debugDescription)")
        #expect(encoded.typeIDs == int32s(entry["type_ids"]))
        let plain = tokenizer.encodePair(a, b, addSpecialTokens: false)
        #expect(plain.ids == int32s(entry["ids_without_special_tokens"]))
        #expect(plain.typeIDs == int32s(entry["type_ids_without_special_tokens"]))
        let full = tokenizer.encoding(a, pair: b)
        #expect(full.ids == encoded.ids && full.typeIDs == encoded.typeIDs)
        #expect(full.offsets == byteRanges(entry["offsets"]), "\(variant) \(a.debugDescription) + \(b.debugDescription) offsets")
        #expect(tokenizer.decode(encoded.ids) == entry["decoded"] as? String)
        #expect(tokenizer.decode(encoded.ids, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
        if !b.isEmpty, entry["transformers_ids"] != nil {
            // transformers' tokenizer(text, text_pair) agrees (it takes an empty text_pair for none).
            #expect(encoded.ids == int32s(entry["transformers_ids"]) && encoded.typeIDs == int32s(entry["transformers_type_ids"]))
        }
    }

    @Test func specialTokensAndVocabulary() {
        let bert = EncoderFixtures.uncased
        #expect(bert.vocabSize == 30522)
        #expect(bert.unknownTokenID == 100 && bert.padTokenID == 0)
        #expect(bert.tokenID("[CLS]") == 101 && bert.tokenID("[SEP]") == 102 && bert.tokenID("[MASK]") == 103)
        #expect(bert.tokenID("##ing") == 2075)
        #expect(!bert.addsBOSToken)
        let roberta = EncoderFixtures.roberta
        #expect(roberta.bosTokenID == 0 && roberta.eosTokenID == 2 && roberta.padTokenID == 1 && roberta.unknownTokenID == 3)
        #expect(roberta.tokenID("<mask>") == 4)
    }

    // MARK: Components

    static let components: [String: Any] = (try? DataFixtures.json("tokenizer-encoder/components.json")) ?? [:]
    static var componentStrings: [String] { components["strings"] as? [String] ?? [] }

    static func aligned(_ text: String) -> AlignedText {
        Array(text.utf8).withUnsafeBufferPointer { AlignedText(utf8: $0, range: 0..<$0.count) }
    }

    @Test(arguments: 0..<11)
    func normalizerMatchesTokenizers(_ index: Int) throws {
        let entries = try #require(Self.components["normalizers"] as? [[String: Any]])
        #expect(entries.count == 11)
        let entry = try #require(entries.count > index ? entries[index] : nil)
        let normalizer = try #require(try Normalizer.parse(entry["normalizer"]))
        let outputs = try #require(entry["outputs"] as? [String])
        #expect(outputs.count == Self.componentStrings.count)
        for (input, expected) in zip(Self.componentStrings, outputs) {
            var text = Self.aligned(input)
            normalizer.apply(&text)
            #expect(text.scalars == scalarValues(expected),
                    "\(entry["normalizer"]!) \(input.debugDescription): \(stringFromScalars(text.scalars).debugDescription) vs \(expected.debugDescription)")
            #expect(text.starts.count == text.count && text.ends.count == text.count)
        }
    }

    @Test(arguments: 0..<3)
    func preTokenizerMatchesTokenizers(_ index: Int) throws {
        let entries = try #require(Self.components["pre_tokenizers"] as? [[String: Any]])
        #expect(entries.count == 3)
        let entry = try #require(entries.count > index ? entries[index] : nil)
        let preTokenizer = try #require(try PreTokenizer.parse(entry["pre_tokenizer"]))
        let outputs = try #require(entry["outputs"] as? [[String: Any]])
        for (input, expected) in zip(Self.componentStrings, outputs) {
            let text = Self.aligned(input)
            let result = preTokenizer.apply(PreTokenized(text: text, pieces: [0..<text.count]))
            let pieces = result.pieces.map { stringFromScalars(result.text.scalars[$0]) }
            let offsets = result.pieces.map { Int(result.text.starts[$0.lowerBound])..<Int(result.text.ends[$0.upperBound - 1]) }
            #expect(pieces == expected["pieces"] as? [String], "\(entry["pre_tokenizer"]!) \(input.debugDescription)")
            #expect(offsets == byteRanges(expected["offsets"]))
        }
    }

    @Test func wordPieceDecoderMatchesTokenizers() throws {
        let entries = try #require(Self.components["decoders"] as? [[String: Any]])
        #expect(entries.count == 2)
        for entry in entries {
            let decoder = try #require(try TokenDecoder.parse(entry["decoder"]))
            for output in try #require(entry["outputs"] as? [[String: Any]]) {
                let tokens = try #require(output["tokens"] as? [String])
                #expect(decoder.decodeChain(tokens).joined() == output["decoded"] as? String, "\(entry["decoder"]!) \(tokens)")
            }
        }
    }

    // MARK: WordPiece model

    @Test func wordPieceLongestMatchFirstAndUnknownWords() throws {
        let json = #"""
        {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 10,
                   "vocab": {"[UNK]": 0, "un": 1, "una": 2, "##aff": 3, "##able": 4, "##a": 5, "##ff": 6, "x": 7}},
         "pre_tokenizer": {"type": "WhitespaceSplit"}, "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true}}
        """#
        let tokenizer = try Tokenizer(tokenizerJSON: Data(json.utf8), config: nil)
        // "una" is the longest start, then "##ff" (no "##f" needed), "##able".
        #expect(tokenizer.encode("unaffable") == [2, 6, 4])
        #expect(tokenizer.encode("unaffablex") == [0])        // "##x" is missing: the whole word is unknown
        #expect(tokenizer.encode("unaffable x") == [2, 6, 4, 7])
        #expect(tokenizer.encode("unaffablexx") == [0])       // 11 characters > max_input_chars_per_word 10
        let offsets = tokenizer.encodeWithOffsets("x unaffable").offsets
        #expect(offsets == [0..<1, 2..<5, 5..<7, 7..<11])
        #expect(tokenizer.decode([2, 6, 4, 7]) == "unaffable x")
    }

    @Test func badEncoderTokenizerFilesThrowTheSpecificError() {
        let noUnknown = #"{"model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0}}}"#
        #expect(throws: DataError.invalidTokenizerFile(file: "tokenizer.json",
                detail: "model (WordPiece): unk_token [UNK] is not in the vocab (every word without pieces becomes it)")) {
            try Tokenizer(tokenizerJSON: Data(noUnknown.utf8), config: nil)
        }
        let badProcessor = #"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "post_processor": {"type": "BertProcessing", "sep": ["[SEP]"], "cls": ["[CLS]", 1]}}"#
        #expect(throws: DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "post_processor.sep must be [token, id]")) {
            try Tokenizer(tokenizerJSON: Data(badProcessor.utf8), config: nil)
        }
        let unigram = #"{"model": {"type": "Unigram", "vocab": []}}"#
        #expect(throws: DataError.unsupportedTokenizerFeature(component: "model", detail: "type Unigram (BPE and WordPiece are implemented)")) {
            try Tokenizer(tokenizerJSON: Data(unigram.utf8), config: nil)
        }
    }
}

/// 200 seeded random strings per variant (every character class the stages treat specially, special
/// tokens among them): ids and offsets equal `tokenizers`'.
@Suite struct EncoderTokenizerRandomTests {
    @Test(arguments: EncoderFixtures.variants)
    func randomStringsMatchTokenizers(_ variant: String) throws {
        let tokenizer = EncoderFixtures.tokenizer(variant)
        let cases = try #require(try DataFixtures.json("tokenizer-encoder/\(variant)/random.json")["cases"] as? [[String: Any]])
        #expect(cases.count == 200)
        var mismatches = 0
        for entry in cases {
            let text = try #require(entry["text"] as? String)
            let encoded = tokenizer.encoding(text)
            let expected = int32s(entry["ids"])
            if encoded.ids != expected || encoded.offsets != byteRanges(entry["offsets"]) {
                mismatches += 1
                if mismatches <= 3 {
                    Issue.record("\(variant) \(text.debugDescription): \(firstMismatch(encoded.ids, expected)); offsets \(encoded.offsets == byteRanges(entry["offsets"]))")
                }
            }
        }
        #expect(mismatches == 0)
    }
}
