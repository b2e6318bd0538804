/// Every subcommand, in the order `qlora --help` lists them.
public enum CommandList {
    public static let all: [any Command.Type] = [
        VersionCommand.self,
        MemoryCommand.self,
    ]
}
