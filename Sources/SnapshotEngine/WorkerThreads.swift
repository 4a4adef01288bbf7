import CSystemShims
import Dispatch
import Foundation
import Synchronization

/// A fixed set of threads of our own for CPU and I/O work. Unlike
/// `DispatchQueue.concurrentPerform`, which caps concurrency at the core count, these may
/// outnumber the cores, so that while one thread waits for a direct write another computes.
public enum WorkerThreads {
    /// Two threads per core (at least 2, at most 16).
    public static var defaultCount: Int { max(2, min(16, 2 * sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    private static let niceness = Atomic<Int32>(0)

    /// The nice value (0–19) the worker threads run at from now on. The agent sets 10, so
    /// that a snapshot, however long, yields the CPU to the broker, the mesh and its own
    /// command intake whenever they need it; on an idle machine it runs as fast as before.
    /// Only these threads are lowered: hooks and commands, which start services, never run
    /// on them.
    public static func setNiceness(_ value: Int32) {
        niceness.store(max(0, min(19, value)), ordering: .relaxed)
    }

    /// Runs `body(index)` on `count` new threads and returns when all have finished.
    /// Blocks the calling thread: call it from a thread of its own (see `Blocking`).
    private static func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchGroup()
        for _ in 0..<count { done.enter() }
        start(count) { i in
            body(i)
            done.leave()
        }
        done.wait()
    }

    /// Starts `body(index)` on `count` new threads (at the niceness set) and returns at once;
    /// the caller learns of their end its own way.
    static func start(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let nice = niceness.load(ordering: .relaxed)
        for i in 0..<count {
            Thread.detachNewThread {
                if nice > 0 { _ = snapshot_set_thread_niceness(nice) }
                body(i)
            }
        }
    }

    /// Hands `items` out, in order, to up to `threads` threads, each with its own `state`
    /// (a reader, a writer, a buffer) made on that thread. The first error stops every
    /// thread after its current item and is rethrown; so does `cancellation`, as
    /// `EngineError.cancelled`. `finish` runs once per thread after its last item (a
    /// writer's flush), unless an error has stopped the work.
    static func forEach<Item: Sendable, State>(
        _ items: [Item], threads: Int, cancellation: CancellationFlag? = nil,
        state makeState: @escaping @Sendable () -> State,
        finish: @escaping @Sendable (inout State) throws -> Void = { _ in },
        _ body: @escaping @Sendable (Item, inout State) throws -> Void
    ) throws {
        guard !items.isEmpty else { return }
        let next = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
        run(max(1, min(threads, items.count))) { _ in
            var state = makeState()
            do {
                while failure.withLock({ $0 == nil }) {
                    if cancellation?.isCancelled == true { throw EngineError.cancelled }
                    let i = next.add(1, ordering: .relaxed).oldValue
                    guard i < items.count else {
                        try finish(&state)
                        return
                    }
                    try body(items[i], &state)
                }
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }
}
