import Foundation

/// Blocking work — child processes, waits on worker threads, fsync-heavy commits — run on
/// a thread of its own, so that the cooperative pool (a thread per core: two on a small
/// machine) keeps serving MQTT intake, timers and replies while it runs.
public enum Blocking {
    /// Runs `body` on a new thread and returns its result. Not cancellable from outside:
    /// the work checks its own `CancellationFlag`.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            Thread.detachNewThread {
                c.resume(with: Result { try body() })
            }
        }
    }
}
