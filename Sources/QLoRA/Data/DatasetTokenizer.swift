import Foundation

/// A model directory's tokenizer set up as training and evaluation use it: its chat template, BOS as
/// the tokenizer adds it, EOS after each record, the pad and separator ids; and the check that every
/// token id fits the model's vocabulary.
public struct DatasetTokenizer {
    public let tokenizer: Tokenizer
    public let examples: ExampleTokenizer
    public let vocabSize: Int
    public let modelDirectory: URL

    /// Fails with a clear message when the directory has no tokenizer.json (`purpose`: what needs it, "training").
    public init(modelDirectory: URL, vocabSize: Int, purpose: String) throws {
        tokenizer = try Tokenizer.forModel(modelDirectory, purpose: purpose)
        let template = try tokenizer.chatTemplateSource.map { try ChatTemplate($0) }
        examples = ExampleTokenizer(tokenizer: tokenizer, chatTemplate: template, addBOS: tokenizer.addsBOSToken, addEOS: true)
        self.vocabSize = vocabSize
        self.modelDirectory = modelDirectory
    }

    public var padTokenID: Int32 { tokenizer.padTokenID ?? tokenizer.eosTokenID ?? 0 }
    public var separatorTokenID: Int32? { tokenizer.eosTokenID }

    /// Tokenizes the records of `file`, refusing ids beyond the vocabulary.
    public func tokenize(_ records: [TrainingExample], file: URL) throws -> [TokenizedExample] {
        try records.enumerated().map { index, record in try tokenize(record, number: index + 1, file: file) }
    }

    /// One record (`number`: its 1-based position in `file`, for the error when it has no line).
    public func tokenize(_ record: TrainingExample, number: Int, file: URL) throws -> TokenizedExample {
        let tokenized: TokenizedExample
        do { tokenized = try examples.tokenize(record) } catch var error as DataError {
            // Template and rendering errors do not know where the record came from, nor the tokenizer's directory.
            if case .chatTemplateMissing = error { error = .chatTemplateMissing(directory: modelDirectory.path) }
            if case .tokens(_, _, let line) = record { throw DataError.inFile(path: "\(file.path):\(line)", error) }
            throw DataError.inFile(path: "\(file.path): example \(number)", error)
        }
        if let bad = tokenized.inputIDs.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            if case .tokens(_, _, let line) = record {
                throw TrainError.badOptions("\(file.path):\(line): input id \(bad) is outside the model's vocabulary (0..<\(vocabSize)); the ids were made for another tokenizer")
            }
            throw TrainError.badOptions("\(file.path): example \(number) has token id \(bad) but the model's vocabulary has \(vocabSize) ids; the tokenizer does not match the model")
        }
        return tokenized
    }

    /// Everything that decides the ids a record becomes: the tokenizer files (or the GGUF file's
    /// identity), the chat template, BOS/EOS handling and the vocabulary size. Part of a token file's
    /// fingerprint, so changing any of them tokenizes the dataset again.
    public func settingsFingerprint() -> UInt64 {
        var hash = TokenFileHash.offsetBasis
        func mix(_ bytes: [UInt8]) {
            hash = bytes.withUnsafeBytes { TokenFileHash.fnv1a64($0, seed: hash) }
            hash = withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { TokenFileHash.fnv1a64($0, seed: hash) }
        }
        func mix(_ string: String) { mix(Array(string.utf8)) }
        if GGUFModelLoader.isGGUF(modelDirectory) {
            mix(TokenFileCache.identity(of: modelDirectory))
        } else {
            for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"] {
                mix(name)
                mix((try? [UInt8](Data(contentsOf: modelDirectory.appendingPathComponent(name)))) ?? [])
            }
        }
        mix(tokenizer.chatTemplateSource ?? "")
        mix("bos=\(examples.addBOS ? tokenizer.bosTokenID.map(String.init) ?? "-" : "off") eos=\(examples.addEOS ? tokenizer.eosTokenID.map(String.init) ?? "-" : "off") vocab=\(vocabSize) version=\(TokenFile.version)")
        return hash
    }
}
