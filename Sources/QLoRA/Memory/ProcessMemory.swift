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

    /// Returns freed heap memory to the system (glibc keeps freed chunks, e.g. a loader's temporary
    /// copies, resident otherwise). Called once after loading, never in the training step.
    public static func releaseFreedMemory() {
        // glibc's malloc_trim is not in Swift's Glibc module; look it up (absent on other C libraries).
        typealias MallocTrim = @convention(c) (Int) -> Int32
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
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
