import Foundation

/// The process' resident memory from /proc/self/status (Linux): current (VmRSS) and peak (VmHWM).
public enum ProcessMemory {
    public static func residentBytes() -> (current: Int, peak: Int) {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
        var current = 0, peak = 0
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { current = kilobytes(line) * 1024 }
            if line.hasPrefix("VmHWM:") { peak = kilobytes(line) * 1024 }
        }
        return (current, peak)
    }

    /// Resets the peak (VmHWM) to the current RSS, so a later peak covers only what follows.
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data("5".utf8)); return true } catch { return false }
    }

    private static func kilobytes(_ line: Substring) -> Int {
        Int(line.split(separator: " ").dropFirst().first { Int($0) != nil } ?? "0") ?? 0
    }
}
