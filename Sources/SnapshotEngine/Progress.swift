import Foundation
import Synchronization

/// The shared, lock-free progress of one long operation. Workers add to it; printers (the
/// terminal bar, `--json` lines, MQTT progress) read it on their own schedule, so reporting
/// never slows the work down and the library never prints.
///
/// With a `trace` (the CLI's `--debug`), every phase change is reported with the duration
/// of the phase that ended, and the engine's `note`s say what it read, skipped and why.
public final class WorkProgress: Sendable {
    /// Receives one line per event; called on whichever thread made the event.
    public typealias Trace = @Sendable (String) -> Void

    public let bytesDone = Atomic<Int>(0)
    public let bytesTotal = Atomic<Int>(0)
    public let filesDone = Atomic<Int>(0)
    public let filesTotal = Atomic<Int>(0)
    private let current = Mutex((name: "starting", since: Date()))
    private let trace: Trace?

    public init(trace: Trace? = nil) {
        self.trace = trace
    }

    public var phase: String {
        get { current.withLock { $0.name } }
        set {
            let ended = current.withLock { c -> (String, Double)? in
                guard c.name != newValue else { return nil }
                defer { c = (newValue, Date()) }
                return (c.name, Date().timeIntervalSince(c.since))
            }
            if let trace, let (name, seconds) = ended {
                trace("phase \(name) done in \(String(format: "%.3f", seconds)) s; now \(newValue)")
            }
        }
    }

    /// True when notes are wanted: lets callers skip building expensive ones.
    public var isTracing: Bool { trace != nil }

    /// A line for the trace (nothing without one).
    public func note(_ message: @autoclosure () -> String) {
        trace?(message())
    }

    /// A consistent-enough reading for display.
    public func reading() -> Reading {
        Reading(
            phase: phase,
            bytesDone: bytesDone.load(ordering: .relaxed), bytesTotal: bytesTotal.load(ordering: .relaxed),
            filesDone: filesDone.load(ordering: .relaxed), filesTotal: filesTotal.load(ordering: .relaxed))
    }

    public struct Reading: Sendable, Equatable {
        public var phase: String
        public var bytesDone: Int
        public var bytesTotal: Int
        public var filesDone: Int
        public var filesTotal: Int

        /// 0…100.
        public var percent: Double {
            bytesTotal > 0 ? min(100, Double(bytesDone) * 100 / Double(bytesTotal)) : (filesTotal > 0 ? min(100, Double(filesDone) * 100 / Double(filesTotal)) : 0)
        }
    }
}

/// A cancellation request shared between whoever runs an operation and the operation,
/// which checks it between files and chunks.
public final class CancellationFlag: Sendable {
    private let flag = Atomic(false)

    public init() {}

    public func cancel() { flag.store(true, ordering: .relaxed) }

    public var isCancelled: Bool { flag.load(ordering: .relaxed) }
}
