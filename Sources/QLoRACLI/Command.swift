/// A subcommand of `qlora`: one file each, registered in `CommandList.all`.
public protocol Command {
    static var name: String { get }
    /// One line for `qlora --help`.
    static var summary: String { get }
    /// The full `qlora <name> --help` text.
    static var help: String { get }
    /// Runs with the arguments after the command name; returns the exit status.
    static func run(_ arguments: [String]) throws -> Int32
}
