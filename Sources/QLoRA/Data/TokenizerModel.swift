import Foundation

/// The model stage of a `tokenizers` pipeline: one pre-tokenized word in, ids out. BPE (GPT-2 and
/// SentencePiece-style tokenizers) and WordPiece (BERT) implement it.
protocol TokenizerModel: AnyObject, Sendable {
    /// Token string of each model id (nil for holes in the id range).
    var idToToken: [String?] { get }
    var tokenToID: [TokenBytes: Int32] { get }
    /// Tokenizes one word, appending ids and how many of its scalars each id covers.
    func tokenize(_ word: ArraySlice<UInt32>, ids: inout [Int32], scalarCounts: inout [Int32])
}

extension BytePairModel: TokenizerModel {}

/// The model of a tokenizer.json `model` object, by its `type` (BPE when absent, as `tokenizers` reads it).
func makeTokenizerModel(json model: [String: Any]) throws -> any TokenizerModel {
    let type = model["type"] as? String ?? "BPE"
    switch type {
    case "BPE": return try BytePairModel(json: model)
    case "WordPiece": return try WordPieceModel(json: model)
    default:
        throw DataError.unsupportedTokenizerFeature(component: "model", detail: "type \(type) (BPE and WordPiece are implemented)")
    }
}
