/// A small hand-written argument parser shared by the subcommands: `--name value`, `--name=value`,
/// boolean `--flag` / `--no-flag`, and positionals. Unknown options are errors that name the option.
public struct Arguments {
    public private(set) var positionals: [String] = []
    private var options: [String: String] = [:]
    private var flags: [String: Bool] = [:]
    private var consumed: Set<String> = []
    public let command: String

    /// `valueOptions` take a value; `flagOptions` are booleans (each also accepts `--no-<name>`).
    public init(_ args: [String], command: String, valueOptions: Set<String>, flagOptions: Set<String>) throws {
        self.command = command
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let arg = args[i]
            i += 1
            if onlyPositionals || !arg.hasPrefix("--") || arg == "-" {
                positionals.append(arg)
                continue
            }
            if arg == "--" { onlyPositionals = true; continue }
            var name = String(arg.dropFirst(2))
            var inlineValue: String?
            if let eq = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if valueOptions.contains(name) {
                if let inlineValue {
                    options[name] = inlineValue
                } else {
                    guard i < args.count else { throw CLIError.missingValue(command: command, option: name) }
                    options[name] = args[i]
                    i += 1
                }
            } else if flagOptions.contains(name), inlineValue == nil {
                flags[name] = true
            } else if name.hasPrefix("no-"), flagOptions.contains(String(name.dropFirst(3))), inlineValue == nil {
                flags[String(name.dropFirst(3))] = false
            } else {
                throw CLIError.unknownOption(command: command, option: arg)
            }
        }
    }

    public func string(_ name: String) -> String? { options[name] }

    public func string(_ name: String, default value: String) -> String { options[name] ?? value }

    public func int(_ name: String) throws -> Int? {
        guard let text = options[name] else { return nil }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")) else {
            throw CLIError.badValue(command: command, option: name, value: text, expected: "an integer")
        }
        return value
    }

    public func int(_ name: String, default value: Int) throws -> Int { try int(name) ?? value }

    public func double(_ name: String) throws -> Double? {
        guard let text = options[name] else { return nil }
        guard let value = Double(text) else {
            throw CLIError.badValue(command: command, option: name, value: text, expected: "a number")
        }
        return value
    }

    public func double(_ name: String, default value: Double) throws -> Double { try double(name) ?? value }

    /// A value restricted to `choices`.
    public func choice(_ name: String, _ choices: [String], default value: String) throws -> String {
        let text = options[name] ?? value
        guard choices.contains(text) else {
            throw CLIError.badValue(command: command, option: name, value: text, expected: "one of \(choices.joined(separator: ", "))")
        }
        return text
    }

    public func flag(_ name: String, default value: Bool = false) -> Bool { flags[name] ?? value }

    /// A comma-separated list.
    public func list(_ name: String) -> [String]? {
        options[name].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    /// Exactly `count` positionals, named in the error when missing.
    public func requirePositionals(_ names: [String]) throws -> [String] {
        guard positionals.count == names.count else {
            throw CLIError.wrongPositionals(command: command, expected: names, got: positionals)
        }
        return positionals
    }
}

import Foundation
