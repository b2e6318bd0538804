import CQLoRAKernels
import Foundation
import Synchronization

/// The worker threads behind `Parallel.forEach`: they spin for a while after each job before sleeping,
/// so the next job starts within a microsecond. Decoding a token runs ~200 jobs of 5-50 us each;
/// Dispatch's workers went to sleep between them and took tens of microseconds to wake (measured:
/// 2 threads decoded slower than 1).
///
/// A job is `count` indices claimed one at a time by the caller and the workers. A claim names its job
/// (the ticket holds job << 32 | next index), so a worker that wakes late can never run an index of a
/// newer job with an older body.
final class SpinPool: @unchecked Sendable {
    let workerCount: Int
    private let ticket = Atomic<Int>(0)
    private let done = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let condition = NSCondition()
    private var count = 0
    private var body: ((Int) -> Void)?
    private var job = 0
    /// Pause-instruction spins before a worker sleeps (about a millisecond).
    private static let spinLimit = 20_000

    init(workers: Int) {
        workerCount = workers
        for _ in 0..<workers {
            let thread = Thread { [unowned self] in self.work() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private let busy = Atomic<Bool>(false)

    /// Runs body(0..<count) on the caller and the workers; returns when all are done. When another
    /// caller holds the pool (tests run concurrently, or a body calls `Parallel.forEach` itself), runs
    /// everything on the calling thread instead: same results, never two jobs at once.
    func run(_ count: Int, _ body: (Int) -> Void) {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            self.body = body
            self.count = count
            job = (job + 1) & 0x7fff_ffff
            done.store(0, ordering: .relaxed)
            ticket.store(job << 32, ordering: .sequentiallyConsistent)   // publishes body and count
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            claimAndRun(job: job)
            while done.load(ordering: .acquiring) < count { qlora_cpu_relax() }
            self.body = nil
        }
    }

    /// Claims indices of `job` until none are left.
    private func claimAndRun(job: Int) {
        while true {
            let t = ticket.load(ordering: .acquiring)
            guard t >> 32 == job, t & 0xffff_ffff < count else { return }
            guard ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing).exchanged else { continue }
            body!(t & 0xffff_ffff)
            done.add(1, ordering: .releasing)
        }
    }

    private func work() {
        var seen = 0
        while true {
            var spins = 0
            while ticket.load(ordering: .acquiring) >> 32 == seen {
                spins += 1
                if spins < Self.spinLimit { qlora_cpu_relax(); continue }
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while ticket.load(ordering: .sequentiallyConsistent) >> 32 == seen { condition.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
            }
            seen = ticket.load(ordering: .acquiring) >> 32
            claimAndRun(job: seen)
        }
    }
}
