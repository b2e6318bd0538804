import Foundation
import GGUF

/// A Hugging Face tokenizer loaded from `tokenizer.json` (+ `tokenizer_config.json`), following the
/// `tokenizers` library: added tokens split out first, then normalizer, pre-tokenizer, model (BPE or
/// WordPiece), post-processor; decoding through the decoder chain.
///
/// Supported: model BPE (merges as `"a b"` or `["a", "b"]`, `byte_fallback`, `fuse_unk`, `unk_token`,
/// `ignore_merges`), model WordPiece (`unk_token`, `continuing_subword_prefix`,
/// `max_input_chars_per_word`); normalizers Sequence, Prepend, Replace (string patterns),
/// NFC/NFD/NFKC/NFKD, Lowercase, Strip, StripAccents, BertNormalizer; pre-tokenizers ByteLevel (GPT-2
/// regex), Metaspace, Split (the GPT-2 and Llama 3 regexes with behavior Isolated; plain strings with
/// any behavior), Digits, BertPreTokenizer, Whitespace, WhitespaceSplit, Sequence; decoders ByteLevel,
/// Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece, Sequence; post-processors TemplateProcessing, BertProcessing,
/// RobertaProcessing (with `trim_offsets`), ByteLevel, Sequence of them.
/// Added tokens honour `lstrip`, `rstrip`, `single_word` (word characters: letters, numbers, `_`) and
/// `normalized`. Not supported (throws `DataError.unsupportedTokenizerFeature`): Unigram / WordLevel
/// models, BPE dropout, BPE subword prefixes/suffixes, other regexes. `truncation` and `padding` of
/// tokenizer.json are not applied (transformers' `tokenizer(text)` does not apply them either).
/// `tokenizer_config.json`'s `added_tokens_decoder` is not merged in (as in `tokenizers`).
public final class Tokenizer: @unchecked Sendable {
    private struct AddedToken {
        let id: Int32
        let content: String
        let scalars: [UInt32]
        let singleWord: Bool
        let leftStrip: Bool
        let rightStrip: Bool
        let normalized: Bool
        let special: Bool
    }

    private let model: any TokenizerModel
    private let normalizer: Normalizer?
    private let preTokenizer: PreTokenizer?
    private let decoder: TokenDecoder?
    private let postProcessor: PostProcessor
    private let addedTokens: [AddedToken]
    private let addedByID: [Int32: String]
    private let addedByContent: [TokenBytes: Int32]
    private let specialIDs: Set<Int32>
    /// Added tokens matched on the raw text / on the normalized text, by first scalar, longest first.
    private let rawMatcher: [UInt32: [(scalars: [UInt32], index: Int)]]
    private let normalizedMatcher: [UInt32: [(scalars: [UInt32], index: Int)]]

    public let vocabSize: Int
    public let bosTokenID: Int32?
    public let eosTokenID: Int32?
    public let padTokenID: Int32?
    public let unknownTokenID: Int32?
    /// Whether `encode(addSpecialTokens: true)` prepends BOS (from `add_bos_token`, else from the post-processor).
    public let addsBOSToken: Bool
    /// `add_eos_token` of tokenizer_config.json (false when absent).
    public let addsEOSToken: Bool
    /// The chat template found beside the tokenizer (chat_template.jinja or tokenizer_config.json), if any.
    public let chatTemplateSource: String?
    public var bosToken: String? { bosTokenID.flatMap { token($0) } }
    public var eosToken: String? { eosTokenID.flatMap { token($0) } }

    /// Loads `tokenizer.json`, and `tokenizer_config.json` / `chat_template.jinja` when present.
    /// The tokenizer of a model (directory or `.gguf`), with the clear error when a directory has none;
    /// `purpose` names what needs it: "training", "generation".
    public static func forModel(_ model: URL, purpose: String) throws -> Tokenizer {
        if !GGUFModelLoader.isGGUF(model), !FileManager.default.fileExists(atPath: model.appendingPathComponent("tokenizer.json").path) {
            throw DataError.tokenizerMissing(directory: model.path, purpose: purpose)
        }
        return try Tokenizer(directory: model)
    }

    /// A model directory's tokenizer.json (+ tokenizer_config.json, chat_template.jinja), or a `.gguf`
    /// file's tokenizer metadata.
    public convenience init(directory: URL) throws {
        // Errors of the tokenizer's parts do not know the file they came from: name it.
        if GGUFModelLoader.isGGUF(directory) {
            let file = try GGUFFile(path: directory.path)
            do { try self.init(gguf: file) } catch let error as DataError where !error.description.contains(directory.path) {
                throw DataError.inFile(path: directory.path, error)
            }
            return
        }
        let jsonURL = directory.appendingPathComponent("tokenizer.json")
        let json: Data
        do { json = try Data(contentsOf: jsonURL) } catch {
            throw DataError.fileUnreadable(path: jsonURL.path, reason: error.localizedDescription)
        }
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let config = try? Data(contentsOf: configURL)
        // Checked here, where its path is known (the errors below are reported against tokenizer.json).
        if let config, (try? JSONSerialization.jsonObject(with: config)) as? [String: Any] == nil {
            throw DataError.invalidTokenizerFile(file: configURL.path, detail: "not a JSON object")
        }
        let templateURL = directory.appendingPathComponent("chat_template.jinja")
        let template = (try? Data(contentsOf: templateURL)).map { String(decoding: $0, as: UTF8.self) }
        do { try self.init(tokenizerJSON: json, config: config, chatTemplate: template) } catch let error as DataError where !error.description.contains(jsonURL.path) {
            throw DataError.inFile(path: jsonURL.path, error)
        }
    }

    public convenience init(tokenizerJSON: Data, config: Data?) throws {
        try self.init(tokenizerJSON: tokenizerJSON, config: config, chatTemplate: nil)
    }

    public convenience init(tokenizerJSON: Data, config: Data?, chatTemplate: String?) throws {
        // Our reader, not JSONSerialization: it keeps tokens spelled differently but canonically equal apart.
        guard let root = try TokenizerJSONReader.parse(tokenizerJSON) as? [String: Any] else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "not a JSON object")
        }
        var settings: [String: Any] = [:]
        if let config {
            guard let parsed = (try? JSONSerialization.jsonObject(with: config)) as? [String: Any] else {
                throw DataError.invalidTokenizerFile(file: "tokenizer_config.json", detail: "not a JSON object")
            }
            settings = parsed
        }
        try self.init(tokenizerObject: root, config: settings, chatTemplate: chatTemplate)
    }

    /// From the parsed tokenizer.json and tokenizer_config.json objects (a GGUF's rebuilt tokenizer
    /// comes here directly: a 262k vocabulary need not go through JSON text and back).
    init(tokenizerObject root: [String: Any], config settings: [String: Any], chatTemplate: String?) throws {
        guard let modelJSON = root["model"] as? [String: Any] else {
            throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "no model")
        }
        let bpe = try makeTokenizerModel(json: modelJSON)
        model = bpe
        normalizer = try Normalizer.parse(root["normalizer"])
        preTokenizer = try PreTokenizer.parse(root["pre_tokenizer"])
        decoder = try TokenDecoder.parse(root["decoder"])
        postProcessor = try PostProcessor.parse(root["post_processor"])

        var added: [AddedToken] = []
        for (index, item) in (root["added_tokens"] as? [Any] ?? []).enumerated() {
            guard let object = item as? [String: Any], let content = object["content"] as? String,
                  let id = (object["id"] as? NSNumber)?.int32Value else {
                throw DataError.invalidTokenizerFile(file: "tokenizer.json", detail: "added_tokens[\(index)] needs id and content")
            }
            let special = object["special"] as? Bool ?? false
            added.append(AddedToken(id: id, content: content, scalars: scalarValues(content),
                                    singleWord: object["single_word"] as? Bool ?? false,
                                    leftStrip: object["lstrip"] as? Bool ?? false,
                                    rightStrip: object["rstrip"] as? Bool ?? false,
                                    normalized: object["normalized"] as? Bool ?? !special,
                                    special: special))
        }
        addedTokens = added
        addedByID = Dictionary(added.map { ($0.id, $0.content) }, uniquingKeysWith: { first, _ in first })
        let contentToID = Dictionary(added.map { (TokenBytes($0.content), $0.id) }, uniquingKeysWith: { first, _ in first })
        addedByContent = contentToID
        specialIDs = Set(added.filter(\.special).map(\.id))
        var raw: [UInt32: [(scalars: [UInt32], index: Int)]] = [:]
        var normalizedTable: [UInt32: [(scalars: [UInt32], index: Int)]] = [:]
        for (index, token) in added.enumerated() where !token.scalars.isEmpty {
            if token.normalized {
                var text = AlignedText()
                for scalar in token.scalars { text.append(scalar, start: 0, end: 0) }
                normalizer?.apply(&text)
                if let first = text.scalars.first { normalizedTable[first, default: []].append((text.scalars, index)) }
            } else {
                raw[token.scalars[0], default: []].append((token.scalars, index))
            }
        }
        rawMatcher = raw.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
        normalizedMatcher = normalizedTable.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
        var distinct = Set(bpe.tokenToID.keys)
        for token in added { distinct.insert(TokenBytes(token.content)) }
        vocabSize = distinct.count

        func specialToken(_ key: String) throws -> Int32? {
            let value = settings[key]
            let content = value as? String ?? (value as? [String: Any])?["content"] as? String
            guard let content else { return nil }
            let id = contentToID[TokenBytes(content)] ?? bpe.tokenToID[TokenBytes(content)]
            guard let id else {
                throw DataError.invalidTokenizerFile(file: "tokenizer_config.json", detail: "\(key) \(content) is not in the vocabulary")
            }
            return id
        }
        bosTokenID = try specialToken("bos_token")
        eosTokenID = try specialToken("eos_token")
        padTokenID = try specialToken("pad_token")
        unknownTokenID = try specialToken("unk_token")
        if let explicit = settings["add_bos_token"] as? Bool {
            addsBOSToken = explicit
        } else if case .special(let ids)? = postProcessor.single.first?.0, let bos = bosTokenID {
            addsBOSToken = ids == [bos]
        } else {
            addsBOSToken = false
        }
        addsEOSToken = settings["add_eos_token"] as? Bool ?? false
        if let chatTemplate {
            chatTemplateSource = chatTemplate
        } else if let template = settings["chat_template"] as? String {
            chatTemplateSource = template
        } else if let templates = settings["chat_template"] as? [[String: Any]] {
            chatTemplateSource = templates.first { $0["name"] as? String == "default" }?["template"] as? String
                ?? templates.first?["template"] as? String
        } else {
            chatTemplateSource = nil
        }
    }

    // MARK: Encoding

    /// Token ids of `text`; with `addSpecialTokens` the post-processor's single template is applied.
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int32] {
        let sequence = encodeSequence(text, withOffsets: false)
        guard addSpecialTokens else { return sequence.ids }
        return assemble(postProcessor.single, a: sequence, b: nil).ids
    }

    /// Ids with the UTF-8 byte range of `text` each came from (special tokens added by the
    /// post-processor get the empty range 0..<0).
    public func encodeWithOffsets(_ text: String, addSpecialTokens: Bool = false) -> (ids: [Int32], offsets: [Range<Int>]) {
        let encoded = encoding(text, addSpecialTokens: addSpecialTokens)
        return (encoded.ids, encoded.offsets)
    }

    /// A pair of texts: ids and type ids (`encode(text, text_pair)`).
    public func encodePair(_ first: String, _ second: String, addSpecialTokens: Bool = true) -> (ids: [Int32], typeIDs: [Int32]) {
        let encoded = encoding(first, pair: second, addSpecialTokens: addSpecialTokens)
        return (encoded.ids, encoded.typeIDs)
    }

    /// What `tokenizers`' `encode(text, pair)` gives: ids, type ids, and offsets (UTF-8 byte ranges in
    /// the text each token came from, A's or B's; 0..<0 for the post-processor's special tokens).
    public func encoding(_ text: String, pair: String? = nil, addSpecialTokens: Bool = true) -> TokenEncoding {
        var a = encodeSequence(text, withOffsets: true)
        var b = pair.map { encodeSequence($0, withOffsets: true) }
        if let addPrefixSpace = postProcessor.trimOffsetsAddPrefixSpace {
            trimOffsets(&a, text: text, addPrefixSpace: addPrefixSpace)
            if let pair, b != nil { trimOffsets(&b!, text: pair, addPrefixSpace: addPrefixSpace) }
        }
        let template = pair == nil ? (addSpecialTokens ? postProcessor.single : postProcessor.plainSingle)
                                   : (addSpecialTokens ? postProcessor.pair : postProcessor.plainPair)
        return assemble(template, a: a, b: b)
    }

    /// The post-processor's template filled with the sequences.
    private func assemble(_ template: [(PostProcessor.Piece, Int32)], a: (ids: [Int32], offsets: [Range<Int>]),
                          b: (ids: [Int32], offsets: [Range<Int>])?) -> TokenEncoding {
        var out = TokenEncoding()
        for (piece, typeID) in template {
            let part: (ids: [Int32], offsets: [Range<Int>])
            switch piece {
            case .special(let ids): part = (ids, Array(repeating: 0..<0, count: ids.count))
            case .sequenceA: part = a
            case .sequenceB: part = b ?? ([], [])
            }
            out.ids += part.ids
            out.typeIDs += repeatElement(typeID, count: part.ids.count)
            if part.offsets.count == part.ids.count { out.offsets += part.offsets }
        }
        if out.offsets.count != out.ids.count { out.offsets = [] }
        return out
    }

    /// `trim_offsets` of RobertaProcessing (`process_offsets` in `tokenizers`): a token's range loses as
    /// many characters as the token has leading / trailing spaces (`Ġ` or whitespace); with
    /// `addPrefixSpace` a first token keeps a single leading one. An added token counts the text it
    /// matched. Counted in characters, as `tokenizers` does it on the character offsets Python and
    /// transformers see (its byte offsets would cut a character in two).
    private func trimOffsets(_ sequence: inout (ids: [Int32], offsets: [Range<Int>]), text: String, addPrefixSpace: Bool) {
        let bytes = Array(text.utf8)
        // Byte offset of each character boundary, and the character at each byte.
        var boundaries = [0]
        var characterAt = [Int](repeating: 0, count: bytes.count + 1)
        for scalar in text.unicodeScalars {
            let start = boundaries.last!, width = UTF8.width(scalar)
            for k in start..<(start + width) { characterAt[k] = boundaries.count - 1 }
            boundaries.append(start + width)
        }
        characterAt[bytes.count] = boundaries.count - 1
        func isSpace(_ c: Unicode.Scalar) -> Bool { c.value == 0x120 || isWhitespaceScalar(c.value) }
        for i in sequence.ids.indices {
            let id = sequence.ids[i], range = sequence.offsets[i]
            let tokenText = addedByID[id] != nil ? String(decoding: bytes[range], as: UTF8.self) : (token(id) ?? "")
            let scalars = tokenText.unicodeScalars
            var leading = scalars.prefix(while: isSpace).count
            let trailing = scalars.reversed().prefix(while: isSpace).count
            guard leading > 0 || trailing > 0 else { continue }
            var start = characterAt[range.lowerBound], end = characterAt[range.upperBound]
            if leading > 0 {
                if (i == 0 || start == 0) && addPrefixSpace && leading == 1 { leading = 0 }
                start = min(start + leading, end)
            }
            if trailing > 0 && end >= trailing { end = max(end - trailing, start) }
            sequence.offsets[i] = boundaries[start]..<boundaries[end]
        }
    }

    private enum Segment { case added(Int32, Range<Int>), text(AlignedText) }

    /// Splits out the added tokens of `matcher` (leftmost, longest first).
    private func splitAddedTokens(_ text: AlignedText, _ matcher: [UInt32: [(scalars: [UInt32], index: Int)]]) -> [Segment] {
        guard !matcher.isEmpty else { return [.text(text)] }
        var segments: [Segment] = []
        let s = text.scalars, n = s.count
        var textStart = 0
        var i = 0
        func isWordScalar(_ c: UInt32) -> Bool { c == 0x5F || isLetterScalar(c) || isNumberScalar(c) }
        while i < n {
            var matched: (index: Int, length: Int)? = nil
            if let candidates = matcher[s[i]] {
                for candidate in candidates {
                    let length = candidate.scalars.count
                    guard i + length <= n, s[i..<(i + length)].elementsEqual(candidate.scalars) else { continue }
                    let token = addedTokens[candidate.index]
                    if token.singleWord {
                        if i > 0 && isWordScalar(s[i - 1]) { continue }
                        if i + length < n && isWordScalar(s[i + length]) { continue }
                    }
                    matched = (candidate.index, length)
                    break
                }
            }
            guard let match = matched else { i += 1; continue }
            let token = addedTokens[match.index]
            var start = i, end = i + match.length
            if token.leftStrip { while start > textStart && isWhitespaceScalar(s[start - 1]) { start -= 1 } }
            if token.rightStrip { while end < n && isWhitespaceScalar(s[end]) { end += 1 } }
            if start > textStart { segments.append(.text(text.slice(textStart..<start))) }
            let byteStart = Int(text.starts[start]), byteEnd = Int(text.ends[end - 1])
            segments.append(.added(token.id, byteStart..<byteEnd))
            textStart = end
            i = end
        }
        if textStart < n { segments.append(.text(text.slice(textStart..<n))) }
        return segments
    }

    /// Ids of `text` and, when `withOffsets`, the byte range each came from (else no offsets: plain
    /// `encode` of a long text does not hold 16 bytes per token it never reads).
    private func encodeSequence(_ text: String, withOffsets: Bool) -> (ids: [Int32], offsets: [Range<Int>]) {
        let whole = Array(text.utf8).withUnsafeBufferPointer { AlignedText(utf8: $0, range: 0..<$0.count) }
        var ids: [Int32] = []
        var offsets: [Range<Int>] = []
        ids.reserveCapacity(whole.count / 3 + 4)
        if withOffsets { offsets.reserveCapacity(whole.count / 3 + 4) }
        var wordIDs: [Int32] = [], wordCounts: [Int32] = []
        for segment in splitAddedTokens(whole, rawMatcher) {
            guard case .text(var segmentText) = segment else {
                if case .added(let id, let range) = segment { ids.append(id); if withOffsets { offsets.append(range) } }
                continue
            }
            normalizer?.apply(&segmentText)
            for part in splitAddedTokens(segmentText, normalizedMatcher) {
                switch part {
                case .added(let id, let range):
                    ids.append(id); if withOffsets { offsets.append(range) }
                case .text(let normalized):
                    let whole = PreTokenized(text: normalized, pieces: [0..<normalized.count])
                    let pre = preTokenizer?.apply(whole) ?? whole
                    for piece in pre.pieces where !piece.isEmpty {
                        wordIDs.removeAll(keepingCapacity: true)
                        wordCounts.removeAll(keepingCapacity: true)
                        model.tokenize(pre.text.scalars[piece], ids: &wordIDs, scalarCounts: &wordCounts)
                        guard withOffsets else { ids += wordIDs; continue }
                        var position = piece.lowerBound
                        for (id, count) in zip(wordIDs, wordCounts) {
                            let count = Int(count)
                            // A zero count is a continuation byte token: it shares the previous character.
                            let first = count == 0 ? max(position - 1, piece.lowerBound) : position
                            let last = count == 0 ? first : position + count - 1
                            ids.append(id)
                            offsets.append(Int(pre.text.starts[first])..<Int(pre.text.ends[last]))
                            position += count
                        }
                    }
                }
            }
        }
        return (ids, offsets)
    }

    // MARK: Decoding and lookup

    /// Text of `ids` through the decoder (added tokens included unless `skipSpecialTokens`).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            if let token = token(id) { tokens.append(token) }
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    /// Id of a token string (added tokens first, then the model vocabulary).
    public func tokenID(_ token: String) -> Int32? {
        let key = TokenBytes(token)
        return addedByContent[key] ?? model.tokenToID[key]
    }

    /// Token string of an id (added tokens first, then the model vocabulary).
    public func token(_ id: Int32) -> String? {
        if let added = addedByID[id] { return added }
        guard id >= 0, Int(id) < model.idToToken.count else { return nil }
        return model.idToToken[Int(id)]
    }

    /// Whether `id` is an added token marked special.
    public func isSpecialToken(_ id: Int32) -> Bool { specialIDs.contains(id) }
}

/// One encoded text or pair, as `tokenizers`' Encoding: ids, type ids (segment of each token) and
/// the UTF-8 byte range of each token in its own text (0..<0 for post-processor special tokens).
public struct TokenEncoding: Equatable, Sendable {
    public var ids: [Int32] = []
    public var typeIDs: [Int32] = []
    public var offsets: [Range<Int>] = []
}
