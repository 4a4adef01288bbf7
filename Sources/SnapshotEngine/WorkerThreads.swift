import Dispatch
import Foundation

/// A fixed set of threads of our own for CPU and I/O work. Unlike
/// `DispatchQueue.concurrentPerform`, which caps concurrency at the core count, these may
/// outnumber the cores, so that while one thread waits for a direct write another computes.
public enum WorkerThreads {
    /// Two threads per core (at least 2, at most 16).
    public static var defaultCount: Int { max(2, min(16, 2 * sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Runs `body(index)` on `count` new threads and returns when all have finished.
    static func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchGroup()
        for i in 0..<count {
            done.enter()
            Thread.detachNewThread {
                body(i)
                done.leave()
            }
        }
        done.wait()
    }
}
