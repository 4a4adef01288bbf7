import Foundation
import Logging
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// Alert checks (after each job and on a timer) and the `schedule:` entries.
extension Agent {
    // MARK: alerts and schedule

    func alertTimer() async {
        await evaluateAlerts()
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(settings.alertInterval * 1e9))
            if Task.isCancelled { break }
            await evaluateAlerts()
        }
    }

    /// Runs the age, size and integrity checks and publishes each `alerts/<check>` whose
    /// level or message changed (retained; `ok` clears). Skipped while a job holds the lock.
    func evaluateAlerts() async {
        let service = self.service
        var checks = MonitorOptions()
        checks.checkAge = true
        checks.checkSize = true
        checks.checkIntegrity = true
        let options = checks
        // Never while a job runs: the job runner evaluates again when it is done.
        guard await gate.tryEnter() else { return }
        let result = try? await Blocking.run({ try service.monitor(options) })
        await gate.leave()
        guard let report = result else { return }
        let recoveryFailure = memory.withLock { $0.recoveryFailure }
        for check in report.checks {
            if check.check == "snapshot_integrity", let failure = recoveryFailure {
                await setAlert(check.check, level: AlertLevel.critical.rawValue, value: check.value + 1, threshold: check.threshold, message: failure)
                continue
            }
            await setAlert(check.check, level: check.level.rawValue, value: check.value, threshold: check.threshold, message: check.message)
        }
    }

    func setAlert(_ check: String, level: String, value: Double, threshold: String, message: String) async {
        let alert = memory.withLock { m -> Alert? in
            let old = m.alerts[check]
            if let old, old.level == level, old.message == message { return nil }
            let since = old?.level == level ? old!.since : Timestamp.now().iso8601
            let a = Alert(level: level, value: value, threshold: threshold, message: message, since: since)
            m.alerts[check] = a
            return a
        }
        if let alert {
            if alert.level != "ok" { logger.warning("alert \(check) \(alert.level): \(alert.message)") }
            try? await publish(settings.alertTopic(check), encode(alertDocument(alert)), retain: true)
        }
    }

    func alertDocument(_ a: Alert) -> [String: Any] {
        ["level": a.level, "value": a.value, "threshold": a.threshold, "message": a.message, "since": a.since]
    }

    func republishAlerts() async {
        let all = memory.withLock { $0.alerts }
        for (check, alert) in all {
            try? await publish(settings.alertTopic(check), encode(alertDocument(alert)), retain: true)
        }
    }

    func runSchedule() async {
        let scheduler = Scheduler(
            entries: settings.schedule, timeZone: settings.timeZone, clock: settings.clock, statePath: settings.schedulePath,
            fire: { entry, time in await self.scheduled(entry, at: time) },
            missed: { late in
                let list = late.map { "\($0.0.cron.text) (\($0.0.what)) due \(Timestamp(seconds: Int64($0.1.timeIntervalSince1970)).iso8601)" }
                await self.setAlert("schedule", level: "warning", value: Double(late.count), threshold: "",
                                    message: "missed while the agent was down: " + list.joined(separator: "; ") + "; running each once now")
            })
        await scheduler.run()
    }

    /// Queues a scheduled snapshot (then retention for its type), or a scheduled
    /// test-recovery, like any other job.
    func scheduled(_ entry: Scheduler.Entry, at time: Date) async {
        let stamp = Timestamp(seconds: Int64(time.timeIntervalSince1970)).iso8601
        let command: Command
        switch entry.work {
        case .testRecovery(let snapshot):
            var options = TestRecoveryOptions()
            options.snapshot = snapshot
            command = Command(action: "test-recovery", requestID: "schedule-test-recovery-\(stamp)", work: .testRecovery(options), responseTopic: nil, correlationData: nil)
        case .create(let type):
            command = Command(action: "create", requestID: "schedule-\(type)-\(stamp)", work: .scheduled(type: type), responseTopic: nil, correlationData: nil)
        }
        logger.info("schedule \(entry.cron.text): \(entry.what) due \(stamp)")
        await accept(command)
    }
}
