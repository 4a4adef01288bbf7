import Foundation
import SnapshotAgent
import SnapshotCore
import SnapshotEngine
import Synchronization
import SnapshotMQTT
import Testing
import TestSupport

/// A clock the test moves: `sleep(until:)` returns when the test has advanced past the date.
final class ManualClock: ScheduleClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    private var sleepers: [(Date, CheckedContinuation<Void, Never>)] = []

    init(_ start: Date) { current = start }

    func now() -> Date { lock.withLock { current } }

    func sleep(until date: Date) async throws {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if date <= current { return true }
                sleepers.append((date, c))
                return false
            }
            if ready { c.resume() }
        }
        try Task.checkCancellation()
    }

    var waiting: Int { lock.withLock { sleepers.count } }

    func advance(to date: Date) {
        let due = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            current = date
            let ready = sleepers.filter { $0.0 <= date }.map(\.1)
            sleepers.removeAll { $0.0 <= date }
            return ready
        }
        for c in due { c.resume() }
    }
}

final class FireLog: @unchecked Sendable {
    let lock = NSLock()
    var fired: [(String, Date)] = []
    var missed: [(String, Date)] = []
}

@Suite struct SchedulerTests {
    static func date(_ s: String) -> Date { Date(timeIntervalSince1970: Timestamp(iso8601: s)!.timeInterval) }

    @Test func cronExpressionsFindTheirNextTime() throws {
        let utc = TimeZone(identifier: "UTC")!
        #expect(try CronExpression("0 2 * * *").next(after: Self.date("2024-01-15T10:30:00Z"), in: utc) == Self.date("2024-01-16T02:00:00Z"))
        #expect(try CronExpression("0 3 * * 0").next(after: Self.date("2024-01-15T10:30:00Z"), in: utc) == Self.date("2024-01-21T03:00:00Z"))
        #expect(try CronExpression("*/15 9-17 * * mon-fri").next(after: Self.date("2024-01-19T17:50:00Z"), in: utc) == Self.date("2024-01-22T09:00:00Z"))
        #expect(try CronExpression("30 4 1,15 * *").next(after: Self.date("2024-02-15T04:30:00Z"), in: utc) == Self.date("2024-03-01T04:30:00Z"))
        let berlin = TimeZone(identifier: "Europe/Berlin")!
        #expect(try CronExpression("0 2 * * *").next(after: Self.date("2024-01-15T00:00:00Z"), in: berlin) == Self.date("2024-01-15T01:00:00Z"))
        #expect(throws: CronExpression.ParseError.self) { try CronExpression("0 2 * *") }
        #expect(throws: CronExpression.ParseError.self) { try CronExpression("61 * * * *") }
        #expect(throws: CronExpression.ParseError.self) { try CronExpression("* * * * funday") }
    }

    @Test func entriesFireOnTheInjectedClockAndMissedOnesAreReported() async throws {
        let dir = TemporaryDirectory("snapshot-sched")
        let clock = ManualClock(Self.date("2024-03-01T01:59:00Z"))
        let log = FireLog()
        let entries = [Scheduler.Entry(cron: try CronExpression("0 2 * * *"), work: .create(.system)),
                       Scheduler.Entry(cron: try CronExpression("0 3 * * 0"), work: .create(.full))]
        // (test-recovery entries are scheduled the same way; the agent test runs one.)
        func makeScheduler() -> Scheduler {
            Scheduler(entries: entries, timeZone: TimeZone(identifier: "UTC")!, clock: clock, statePath: dir.sub("schedule.json"),
                      fire: { e, t in log.lock.withLock { log.fired.append((e.what, t)) } },
                      missed: { late in log.lock.withLock { log.missed += late.map { ($0.0.what, $0.1) } } })
        }
        let task = Task { await makeScheduler().run() }
        func waitForSleepers() async {
            for _ in 0..<500 where clock.waiting == 0 { try? await Task.sleep(nanoseconds: 2_000_000) }
        }
        await waitForSleepers()
        clock.advance(to: Self.date("2024-03-01T02:00:00Z"))
        try await Task.sleep(nanoseconds: 50_000_000)
        await waitForSleepers()
        clock.advance(to: Self.date("2024-03-03T03:00:00Z"))  // a Sunday
        try await Task.sleep(nanoseconds: 50_000_000)
        task.cancel()
        let fired = log.lock.withLock { log.fired }
        // On time at 02:00; after the jump to Sunday 03:00 the late system run fires once
        // (for 2 March, not once per day missed), and the weekly full one on time.
        #expect(fired.map(\.0) == ["system", "system", "full"])
        #expect(fired.map(\.1) == [Self.date("2024-03-01T02:00:00Z"), Self.date("2024-03-02T02:00:00Z"), Self.date("2024-03-03T03:00:00Z")])
        #expect(log.lock.withLock { log.missed }.isEmpty)

        // The agent was down for a few days: the missed times are reported and run once.
        clock.advance(to: Self.date("2024-03-10T12:00:00Z"))
        let restarted = Task { await makeScheduler().run() }
        await waitForSleepers()
        restarted.cancel()
        let missed = log.lock.withLock { log.missed }
        #expect(Set(missed.map(\.0)) == ["system", "full"])
        #expect(missed.contains { $0.0 == "full" && $0.1 == Self.date("2024-03-10T03:00:00Z") })
    }
}

@Suite(.serialized) struct ScheduledRecoveryTests {
    @Test func aScheduledTestRecoveryOfADamagedSnapshotRaisesTheIntegrityAlert() async throws {
        let broker = try TestBroker()
        let dir = TemporaryDirectory("snapshot-schedrec")
        Fixture.write(dir.sub("data/a.bin"), Fixture.bytes(200_000, seed: 8))
        let yaml = """
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            timezone: UTC
            components:
              data: {path: data}
            types:
              data: [data]
            schedule:
              - {cron: "*/5 * * * *", action: test-recovery, snapshot: latest}
            mqtt:
              broker: \(broker.url)
            """
        let config = try SnapshotConfig.parse(yaml, file: "s.yaml", workingDirectory: dir.path)
        let service = SnapshotService(config: config, repositoryPath: dir.sub("repo"), workingDirectory: dir.path)
        var o = CreateOptions()
        o.type = .data
        _ = try await service.create(o)
        // Damage every pack: the quick check still passes (the packs exist), a test-recovery cannot.
        let data = dir.sub("repo/.store/data")
        for d in try POSIX.listDirectory(data) {
            for f in try POSIX.listDirectory(data + "/" + d) {
                let path = data + "/\(d)/\(f)"
                var bytes = try POSIX.readFile(path)
                bytes[bytes.count / 2] ^= 0x55
                Fixture.write(path, bytes)
            }
        }
        let clock = ManualClock(SchedulerTests.date("2024-05-01T10:01:00Z"))
        var settings = try AgentSettings.from(config: config, repositoryPath: dir.sub("repo"), id: "sched")
        settings.clock = clock
        let agent = try Agent(settings: settings, service: service)
        let watcher = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: "watcher", reconnectDelay: (0.05, 0.3)))
        let inbox = AlertInbox(watcher)
        watcher.subscribe("snapshots/status/sched/alerts/#")
        watcher.start()
        defer { watcher.stop() }
        let running = Task { try await agent.run() }
        defer { running.cancel() }
        // The quick check at start says ok.
        #expect(await inbox.wait { $0["snapshot_integrity"]?["level"] as? String == "ok" })
        for _ in 0..<500 where clock.waiting == 0 { try await Task.sleep(nanoseconds: 2_000_000) }
        clock.advance(to: SchedulerTests.date("2024-05-01T10:05:00Z"))
        let raised = await inbox.wait { $0["snapshot_integrity"]?["level"] as? String == "critical" }
        #expect(raised, "\(inbox.latest)")
        #expect((inbox.latest["snapshot_integrity"]?["message"] as? String)?.hasPrefix("test-recovery of ") == true)
    }
}

final class AlertInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var alerts: [String: [String: Any]] = [:]
    private var task: Task<Void, Never>?

    init(_ client: MQTTClient) {
        task = Task { [weak self] in
            for await m in client.messages {
                guard let self, let doc = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] else { continue }
                let check = String(m.topic.split(separator: "/").last ?? "")
                self.lock.withLock { self.alerts[check] = doc }
            }
        }
    }

    var latest: [String: [String: Any]] { lock.withLock { alerts } }

    func wait(timeout: Double = 20, _ predicate: ([String: [String: Any]]) -> Bool) async -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if predicate(latest) { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return false
    }

    deinit { task?.cancel() }
}
