import Foundation

/// A model directory's tokenizer set up as training and evaluation use it: its chat template, BOS as
/// the tokenizer adds it, EOS after each record, the pad and separator ids; and the check that every
/// token id fits the model's vocabulary.
public struct DatasetTokenizer {
    public let tokenizer: Tokenizer
    public let examples: ExampleTokenizer
    public let vocabSize: Int

    /// Fails with a clear message when the directory has no tokenizer.json (`purpose`: what needs it, "training").
    public init(modelDirectory: URL, vocabSize: Int, purpose: String) throws {
        tokenizer = try Tokenizer.forModel(modelDirectory, purpose: purpose)
        let template = try tokenizer.chatTemplateSource.map { try ChatTemplate($0) }
        examples = ExampleTokenizer(tokenizer: tokenizer, chatTemplate: template, addBOS: tokenizer.addsBOSToken, addEOS: true)
        self.vocabSize = vocabSize
    }

    public var padTokenID: Int32 { tokenizer.padTokenID ?? tokenizer.eosTokenID ?? 0 }
    public var separatorTokenID: Int32? { tokenizer.eosTokenID }

    /// Tokenizes the records of `file`, refusing ids beyond the vocabulary.
    public func tokenize(_ records: [TrainingExample], file: URL) throws -> [TokenizedExample] {
        try records.enumerated().map { index, record in
            let tokenized = try examples.tokenize(record)
            if let bad = tokenized.inputIDs.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
                if case .tokens(_, _, let line) = record {
                    throw TrainError.badOptions("\(file.path):\(line): input id \(bad) is outside the model's vocabulary (0..<\(vocabSize)); the ids were made for another tokenizer")
                }
                throw TrainError.badOptions("\(file.path): example \(index + 1) has token id \(bad) but the model's vocabulary has \(vocabSize) ids; the tokenizer does not match the model")
            }
            return tokenized
        }
    }
}
