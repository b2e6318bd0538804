/// Every subcommand, in the order `qlora --help` lists them.
public enum CommandList {
    public static let all: [any Command.Type] = [
        DemoCommand.self,
        QuantizeCommand.self,
        TrainCommand.self,
        GenerateCommand.self,
        EvalCommand.self,
        TokenizeCommand.self,
        MergeCommand.self,
        ExportAdapterCommand.self,
        MemoryCommand.self,
        InspectCommand.self,
        VersionCommand.self,
    ]
}
