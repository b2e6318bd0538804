import Foundation
import GGUF
import Testing
@testable import QLoRA

/// The real Gemma 3 270M GGUF's tokenizer (262,144 SentencePiece pieces, byte fallback) against
/// transformers 5.23 on the strings of the gguf-spm fixtures: ids with and without BOS, both decodes,
/// Gemma 3's chat template on two conversations, and (when OUT.transformers.json sits beside the
/// reference) the 514,906 recovered merges in order and the 6,384 added tokens. Runs only where
/// `QLORA_GEMMA3_GGUF` names the file and `QLORA_GEMMA3_TOKENIZER_REFERENCE` the JSON that
/// `scripts/make-gguf-spm-tokenizer-fixtures.py --real FILE OUT.json` wrote; CI skips it.
@Suite struct GGUFSentencePieceRealTests {
    static let paths: (gguf: String, reference: String)? = {
        let env = ProcessInfo.processInfo.environment
        guard let gguf = env["QLORA_GEMMA3_GGUF"], let reference = env["QLORA_GEMMA3_TOKENIZER_REFERENCE"],
              FileManager.default.fileExists(atPath: gguf), FileManager.default.fileExists(atPath: reference) else { return nil }
        return (gguf, reference)
    }()

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    @Test(.enabled(if: paths != nil, "set QLORA_GEMMA3_GGUF and QLORA_GEMMA3_TOKENIZER_REFERENCE"))
    func gemma3TokenizerEqualsTransformers() throws {
        let (gguf, referencePath) = Self.paths!
        let reference = try Self.json(referencePath)
        let start = Date()
        let tokenizer = try Tokenizer(gguf: try GGUFFile(path: gguf))
        print("gemma3 tokenizer from GGUF metadata: \(String(format: "%.2f", Date().timeIntervalSince(start))) s, vocab \(tokenizer.vocabSize)")
        #expect(tokenizer.vocabSize == (reference["vocab_size_with_added"] as? NSNumber)?.intValue)
        let specials = try #require(reference["special_tokens"] as? [String: Any])
        #expect(tokenizer.bosToken == specials["bos"] as? String && tokenizer.eosToken == specials["eos"] as? String)
        #expect(tokenizer.addsBOSToken == reference["add_bos_token"] as? Bool)

        let strings = try #require(reference["strings"] as? [[String: Any]])
        var equal = 0
        for entry in strings {
            let text = try #require(entry["text"] as? String)
            let expected = int32s(entry["ids"]), ids = tokenizer.encode(text)
            #expect(ids == expected, "\(text.debugDescription): \(firstMismatch(ids, expected))")
            #expect(tokenizer.encode(text, addSpecialTokens: true) == int32s(entry["ids_with_special_tokens"]))
            #expect(tokenizer.decode(expected) == entry["decoded"] as? String, "\(text.debugDescription)")
            #expect(tokenizer.decode(expected, skipSpecialTokens: true) == entry["decoded_skip_special_tokens"] as? String)
            if ids == expected { equal += 1 }
        }
        print("gemma3 tokenizer: \(equal) of \(strings.count) strings give transformers' ids")

        let source = try #require(reference["chat_template"] as? String ?? tokenizer.chatTemplateSource)
        try GGUFSentencePieceTokenizerTests.expectChatRenders(reference["chat"], template: try ChatTemplate(source), tokenizer: tokenizer)

        let builtPath = (referencePath as NSString).deletingPathExtension + ".transformers.json"
        guard FileManager.default.fileExists(atPath: builtPath) else { return }
        let built = try Self.json(builtPath)
        let ours = try Tokenizer.huggingFaceObjects(gguf: try GGUFFile(path: gguf)).tokenizer
        let merges = try #require((ours["model"] as? [String: Any])?["merges"] as? [[String]])
        let theirMerges = try #require(built["merges"] as? [[String]])
        let firstDifference = zip(merges.indices, theirMerges.indices).first { merges[$0.0] != theirMerges[$0.1] }?.0
        let difference = firstDifference.map { "\(merges[$0]) vs \(theirMerges[$0])" } ?? ""
        let sameMerges = merges.count == theirMerges.count && firstDifference == nil
        #expect(sameMerges, "\(merges.count) vs \(theirMerges.count) merges; first difference at \(firstDifference ?? -1): \(difference)")
        let added = try #require(ours["added_tokens"] as? [[String: Any]]), theirAdded = try #require(built["added_tokens"] as? [[String: Any]])
        #expect(added.count == theirAdded.count)
        for (a, b) in zip(added, theirAdded) {
            #expect((a["id"] as? Int) == (b["id"] as? NSNumber)?.intValue && a["content"] as? String == b["content"] as? String
                    && a["special"] as? Bool == b["special"] as? Bool, "\(a) vs \(b)")
        }
    }
}
