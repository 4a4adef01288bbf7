import Foundation
import SnapshotCore
import SnapshotEngine
import Synchronization

/// Where the scheduler gets the time from; tests inject a manual clock.
public protocol ScheduleClock: Sendable {
    func now() -> Date
    /// Returns at `date` (or at once when it has passed); throws when the task is cancelled.
    func sleep(until date: Date) async throws
}

/// The wall clock.
public struct SystemScheduleClock: ScheduleClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(until date: Date) async throws {
        let seconds = date.timeIntervalSinceNow
        if seconds > 0 { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)) }
    }
}

/// Runs the config's `schedule:` entries. It remembers when each entry last fired (in a
/// small JSON file), so that fire times that passed while the agent was down are reported —
/// and made up for with one run — instead of silently skipped.
public final class Scheduler: Sendable {
    public typealias Entry = ScheduleEntry

    let entries: [Entry]
    let timeZone: TimeZone
    let clock: any ScheduleClock
    let statePath: String
    /// Called for each due entry with its scheduled time.
    let fire: @Sendable (Entry, Date) async -> Void
    /// Called once at start with the fire times missed while the agent was not running.
    let missed: @Sendable ([(Entry, Date)]) async -> Void
    private let lastRun: Mutex<[String: Double]>

    public init(entries: [Entry], timeZone: TimeZone, clock: any ScheduleClock = SystemScheduleClock(), statePath: String,
                fire: @escaping @Sendable (Entry, Date) async -> Void, missed: @escaping @Sendable ([(Entry, Date)]) async -> Void) {
        self.entries = entries
        self.timeZone = timeZone
        self.clock = clock
        self.statePath = statePath
        self.fire = fire
        self.missed = missed
        var state: [String: Double] = [:]
        if let bytes = try? POSIX.readFile(statePath), let s = try? JSONDecoder().decode([String: Double].self, from: Data(bytes)) {
            state = s
        }
        lastRun = Mutex(state)
    }

    /// The entry's key in the state file (its format predates `Entry.work`: keep it).
    static func key(_ e: Entry) -> String {
        switch e.work {
        case .create(let type): return "\(e.cron.text)|create|\(type)|latest"
        case .testRecovery(let snapshot): return "\(e.cron.text)|test-recovery||\(snapshot)"
        }
    }

    private func record(_ entry: Entry, _ time: Date) {
        let snapshot = lastRun.withLock { s -> [String: Double] in
            s[Self.key(entry)] = time.timeIntervalSince1970
            return s
        }
        try? POSIX.makeDirectories(POSIX.parent(of: statePath), mode: RepositoryModes.storeDirectory)
        try? POSIX.writeFileAtomically(statePath, Array((try? JSONEncoder().encode(snapshot)) ?? Data()))
    }

    /// Runs until cancelled. Each entry fires once for all its times up to now (a late
    /// wake-up runs it once, not once per missed minute); times that passed before the first
    /// look, while the agent was down, are also reported through `missed`.
    public func run() async {
        guard !entries.isEmpty else { return }
        let start = clock.now()
        for e in entries where lastRun.withLock({ $0[Self.key(e)] }) == nil {
            record(e, start)  // first start: nothing can have been missed
        }
        var first = true
        while !Task.isCancelled {
            let now = clock.now()
            var due: [(Entry, Date)] = []
            var soonest: Date?
            for e in entries {
                let last = Date(timeIntervalSince1970: lastRun.withLock { $0[Self.key(e)] } ?? now.timeIntervalSince1970)
                guard let next = e.cron.next(after: last, in: timeZone) else { continue }
                if next <= now {
                    due.append((e, next))
                } else {
                    soonest = min(soonest ?? next, next)
                }
            }
            if !due.isEmpty {
                if first { await missed(due) }
                for (e, time) in due {
                    record(e, now)
                    await fire(e, time)
                }
                first = false
                continue
            }
            first = false
            guard let soonest else { return }
            do {
                try await clock.sleep(until: soonest)
            } catch {
                return
            }
        }
    }
}
