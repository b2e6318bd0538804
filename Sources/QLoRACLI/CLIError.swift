/// Errors in how a command was called. Each says which command, what was wrong, and where to look.
public enum CLIError: Error, CustomStringConvertible {
    case unknownCommand(String)
    case unknownOption(command: String, option: String)
    case missingValue(command: String, option: String)
    case badValue(command: String, option: String, value: String, expected: String)
    case wrongPositionals(command: String, expected: [String], got: [String])
    case failed(String)

    public var description: String {
        switch self {
        case .unknownCommand(let name):
            return "unknown command '\(name)'. Run `qlora --help` for the list."
        case .unknownOption(let command, let option):
            return "qlora \(command): unknown option \(option). Run `qlora \(command) --help`."
        case .missingValue(let command, let option):
            return "qlora \(command): --\(option) needs a value."
        case .badValue(let command, let option, let value, let expected):
            return "qlora \(command): --\(option) '\(value)' is not valid; expected \(expected)."
        case .wrongPositionals(let command, let expected, let got):
            let wanted = expected.map { "<\($0)>" }.joined(separator: " ")
            return "qlora \(command): expected \(wanted), got \(got.isEmpty ? "nothing" : got.joined(separator: " ")). Run `qlora \(command) --help`."
        case .failed(let message):
            return message
        }
    }
}
