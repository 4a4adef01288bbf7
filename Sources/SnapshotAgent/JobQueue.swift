import Foundation
import SnapshotEngine

/// One accepted command waiting for or doing its work.
public final class Job: Sendable {
    public let id: String
    public let command: Command
    public let progress = WorkProgress()
    public let cancellation = CancellationFlag()
    public let accepted = Date()

    /// Long work reports progress; quick reads (list, show) do not.
    var reportsProgress: Bool {
        switch command.work {
        case .create, .verify, .restore, .testRecovery, .recover, .prune, .scheduled: return true
        default: return false
        }
    }

    init(id: String, command: Command) {
        self.id = id
        self.command = command
    }
}

/// The agent's jobs: one at a time, in arrival order, with a bounded backlog.
actor JobQueue {
    private var waiting: [Job] = []
    private var running: Job?
    private var waiter: CheckedContinuation<Job?, Never>?
    private var closed = false
    private let limit: Int

    init(limit: Int = 1000) {
        self.limit = limit
    }

    enum EnqueueError: Error { case full, closed }

    /// Adds a job; returns how many jobs wait before it.
    func enqueue(_ job: Job) throws -> Int {
        guard !closed else { throw EnqueueError.closed }
        guard waiting.count < limit else { throw EnqueueError.full }
        if let w = waiter, running == nil {
            waiter = nil
            running = job
            w.resume(returning: job)
            return 0
        }
        waiting.append(job)
        return waiting.count
    }

    /// The next job to run (marked running), or nil once closed and drained.
    func next() async -> Job? {
        running = nil
        if !waiting.isEmpty {
            let job = waiting.removeFirst()
            running = job
            return job
        }
        if closed { return nil }
        return await withCheckedContinuation { c in waiter = c }
    }

    /// Marks the running job as done.
    func finished() {
        running = nil
    }

    enum CancelOutcome { case removedWaiting(Job), signalledRunning(Job), notFound }

    func cancel(_ id: String) -> CancelOutcome {
        if let r = running, r.id == id {
            r.cancellation.cancel()
            return .signalledRunning(r)
        }
        if let i = waiting.firstIndex(where: { $0.id == id }) {
            return .removedWaiting(waiting.remove(at: i))
        }
        return .notFound
    }

    /// Stops accepting jobs; returns the ones still waiting (they will not run) and signals
    /// the running one to cancel.
    func close() -> [Job] {
        closed = true
        running?.cancellation.cancel()
        let left = waiting
        waiting = []
        if let w = waiter {
            waiter = nil
            w.resume(returning: nil)
        }
        return left
    }

    var status: (running: Job?, waiting: Int) { (running, waiting.count) }
}
