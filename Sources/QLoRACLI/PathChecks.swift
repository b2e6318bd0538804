import Foundation

/// Checks of path arguments, made before anything is loaded (OpenBLAS included), so a wrong path is the
/// error the user sees, naming the option and the path.
enum PathChecks {
    /// A Hugging Face model directory (it has a config.json), or a readable `.gguf` file.
    static func modelDirectory(_ path: String, command: String, option: String = "model") throws {
        if path.lowercased().hasSuffix(".gguf") { return try readableFile(path, command: command, option: option) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError.failed("qlora \(command): --\(option) \(path): no such directory. Point it at a Hugging Face model directory (config.json + *.safetensors) or a .gguf file.")
        }
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("config.json")) else {
            throw CLIError.failed("qlora \(command): --\(option) \(path) has no config.json; it is not a Hugging Face model directory.")
        }
    }

    /// A file that can be read.
    static func readableFile(_ path: String, command: String, option: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
              FileManager.default.isReadableFile(atPath: path) else {
            throw CLIError.failed("qlora \(command): --\(option) \(path): no such readable file.")
        }
    }
}
