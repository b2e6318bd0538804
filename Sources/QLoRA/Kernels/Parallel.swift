import Dispatch
import Foundation

/// Runs independent chunks of kernel work on up to `Parallel.threads` threads.
///
/// The rule: never nest two thread pools. A body run by `forEach` must not start its own threads.
/// OpenBLAS stays single-threaded for the whole process; big GEMMs are split across threads by
/// `Blas.sgemmParallel` instead.
///
/// The threads are a `SpinPool`: workers spin briefly between jobs, so short jobs (decoding runs ~200 of
/// 5-50 us per token) do not wait for a sleeping thread to wake. (DispatchQueue.concurrentPerform, used
/// before, cost 0.45 us per call with hot workers, but its workers slept between a token's jobs.)
public enum Parallel {
    /// The most threads `forEach` ever uses. Kernels size per-thread scratch with it.
    public static let maxThreads = 8

    /// How many threads `forEach` may use (1 = run everything on the calling thread).
    /// Default: the active processor count, capped at `maxThreads`. Set it before starting work,
    /// not while a kernel runs.
    public static var threads: Int {
        get { storedThreads }
        set { storedThreads = min(max(1, newValue), maxThreads) }
    }
    nonisolated(unsafe) private static var storedThreads =
        min(max(1, ProcessInfo.processInfo.activeProcessorCount), maxThreads)

    /// Calls `body(i)` for every i in 0..<count, spread over up to `threads` threads; returns when all
    /// are done. Chunks must be independent (write disjoint memory). Which thread runs which i is not
    /// fixed: a body that needs per-thread scratch must index it by chunk, with `count <= threads`.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        pool.run(count, body)
    }

    /// Workers for `threads - 1` helpers, rebuilt if `threads` grows (old workers just sleep).
    private static var pool: SpinPool {
        poolLock.withLock {
            if let pool = storedPool, pool.workerCount >= threads - 1 { return pool }
            let pool = SpinPool(workers: threads - 1)
            storedPool = pool
            return pool
        }
    }
    nonisolated(unsafe) private static var storedPool: SpinPool?
    private static let poolLock = NSLock()

    /// `forEach` for bodies that call BLAS. OpenBLAS is kept single-threaded for the whole process
    /// (Runtime/OpenBLAS.swift), so this is `forEach`; the name records that the bodies make BLAS calls.
    public static func forEachCallingBLAS(_ count: Int, _ body: (Int) -> Void) {
        forEach(count, body)
    }

    /// How many chunks to cut `total` items into so that each chunk holds at least `minimumPerChunk`
    /// items (work below that is not worth a thread hand-off): between 1 and `threads`.
    public static func chunkCount(_ total: Int, minimumPerChunk: Int) -> Int {
        max(1, min(threads, total / max(1, minimumPerChunk)))
    }

    /// The `chunk`-th of `chunks` near-equal contiguous ranges of 0..<total.
    @inline(__always)
    public static func range(chunk: Int, of chunks: Int, total: Int) -> Range<Int> {
        (total * chunk / chunks)..<(total * (chunk + 1) / chunks)
    }

    /// Splits 0..<total into contiguous ranges of at least `minimumPerChunk` items and runs them
    /// with `forEach`.
    public static func forEachRange(_ total: Int, minimumPerChunk: Int, _ body: (Range<Int>) -> Void) {
        let chunks = chunkCount(total, minimumPerChunk: minimumPerChunk)
        forEach(chunks) { body(range(chunk: $0, of: chunks, total: total)) }
    }
}
