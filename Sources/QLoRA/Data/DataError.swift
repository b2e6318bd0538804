/// Errors of the data area: tokenizer files, chat templates, JSONL datasets, batching.
public enum DataError: Error, CustomStringConvertible, Equatable {
    /// A file could not be read.
    case fileUnreadable(path: String, reason: String)
    /// `tokenizer.json` / `tokenizer_config.json` is malformed: which file, and what was wrong.
    case invalidTokenizerFile(file: String, detail: String)
    /// The tokenizer uses a component (or an option of one) this implementation does not support.
    case unsupportedTokenizerFeature(component: String, detail: String)
    /// The chat template could not be parsed (position is 1-based line and column in the template).
    case templateSyntax(message: String, line: Int, column: Int)
    /// The chat template uses Jinja syntax outside the supported subset.
    case templateUnsupported(construct: String, line: Int, column: Int)
    /// Rendering failed (type error, unknown filter, ...).
    case templateRuntime(message: String, line: Int, column: Int)
    /// The template itself called `raise_exception(message)`.
    case templateRaisedException(message: String)
    /// No chat template in the tokenizer directory / config.
    case chatTemplateMissing(directory: String)
    /// A model directory without tokenizer.json; `purpose` names what needed it ("training").
    case tokenizerMissing(directory: String, purpose: String)
    /// The assistant turns of a conversation could not be located in its rendering.
    case assistantSpanNotFound(messageIndex: Int, detail: String)
    /// A JSONL line is not what the dataset format expects.
    case invalidDatasetLine(file: String, line: Int, expected: String)
    /// The dataset holds no example.
    case emptyDataset(file: String)
    /// Batcher options that cannot work (zero length, fraction out of range, ...).
    case invalidBatcherOptions(detail: String)
    /// A token file (the tokenized-dataset cache) is damaged or of another format.
    case invalidTokenFile(path: String, detail: String)
    /// A token cache directory cannot be created or written.
    case tokenCacheUnwritable(path: String, reason: String)
    /// One of the above, raised reading `path` (a tokenizer's file), when its own message lacks the file.
    indirect case inFile(path: String, DataError)

    public var description: String {
        switch self {
        case .fileUnreadable(let path, let reason):
            return "cannot read \(path): \(reason). Check the path and its permissions."
        case .invalidTokenizerFile(let file, let detail):
            return "\(file) is not a valid tokenizer file: \(detail). Use the file saved by transformers' save_pretrained."
        case .unsupportedTokenizerFeature(let component, let detail):
            return "tokenizer \(component) not supported: \(detail). Convert the tokenizer to byte-level BPE, SentencePiece-style BPE or WordPiece (BERT)."
        case .templateSyntax(let message, let line, let column):
            return "chat template syntax error at line \(line), column \(column): \(message)."
        case .templateUnsupported(let construct, let line, let column):
            return "chat template uses \(construct) at line \(line), column \(column), which this Jinja subset does not support. Simplify the template or pass one without it."
        case .templateRuntime(let message, let line, let column):
            return "chat template failed at line \(line), column \(column): \(message)."
        case .templateRaisedException(let message):
            return "chat template rejected the conversation: \(message)"
        case .tokenizerMissing(let directory, let purpose):
            return "\(directory) has no tokenizer.json; \(purpose) needs the model's own tokenizer: copy tokenizer.json (and tokenizer_config.json) from the original model into that directory."
        case .chatTemplateMissing(let directory):
            return "no chat template in \(directory) (neither chat_template.jinja nor tokenizer_config.json's chat_template). Provide one, or use text / prompt-completion data."
        case .assistantSpanNotFound(let messageIndex, let detail):
            return "cannot locate assistant message \(messageIndex) in the rendered conversation: \(detail). The chat template must render a conversation prefix as a prefix of the whole."
        case .invalidDatasetLine(let file, let line, let expected):
            return "\(file):\(line): expected \(expected)."
        case .emptyDataset(let file):
            return "\(file) holds no example. Each line must be a JSON object with text, prompt/completion or messages."
        case .invalidBatcherOptions(let detail):
            return "invalid batching options: \(detail)."
        case .invalidTokenFile(let path, let detail):
            return "\(path) is not a usable token file: \(detail). Delete it; the dataset is tokenized again on the next run."
        case .tokenCacheUnwritable(let path, let reason):
            return "cannot write the tokenized dataset into \(path): \(reason). Choose another directory with --token-cache DIR."
        case .inFile(let path, let error):
            return "\(path): \(error.description)"
        }
    }
}
