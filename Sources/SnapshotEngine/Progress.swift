import Synchronization

/// The shared, lock-free progress of one long operation. Workers add to it; printers (the
/// terminal bar, `--json` lines, MQTT progress) read it on their own schedule, so reporting
/// never slows the work down and the library never prints.
public final class WorkProgress: Sendable {
    public let bytesDone = Atomic<Int>(0)
    public let bytesTotal = Atomic<Int>(0)
    public let filesDone = Atomic<Int>(0)
    public let filesTotal = Atomic<Int>(0)
    private let phaseName = Mutex("starting")

    public init() {}

    public var phase: String {
        get { phaseName.withLock { $0 } }
        set { phaseName.withLock { $0 = newValue } }
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
