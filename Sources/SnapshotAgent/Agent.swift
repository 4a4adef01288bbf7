import Foundation
import Logging
import ServiceLifecycle
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// `snapshot agent`: one more worker on the MQTT mesh (topics.md).
///
/// It subscribes to `<prefix>/cmd/#`, answers every command addressed to it with `accepted`
/// or `rejected` at once and with the final outcome later, runs jobs one at a time, and keeps
/// `availability`, `state` and `metrics` retained under `<prefix>/status/<id>/`, publishing
/// them again after every reconnect. A graceful shutdown (SIGTERM, SIGINT) cancels the
/// running job cleanly, answers the waiting ones `cancelled`, publishes `offline` and
/// disconnects; the broker publishes `offline` as the last will if the agent dies.
public final class Agent: Service, Sendable {
    public let settings: AgentSettings
    let service: SnapshotService
    let client: MQTTClient
    let parser: CommandParser
    let ledger: RequestLedger
    let queue = JobQueue()
    let logger: Logger
    private let counter = Atomic<Int>(0)
    private let startID = String(Int(Date().timeIntervalSince1970), radix: 36)
    private let memory = Mutex(Memory())

    struct LastOutcome: Sendable {
        var id: String?
        var timestamp: String
        var ok: Bool

        var json: [String: Any] { ["id": (id as Any?) ?? NSNull(), "timestamp": timestamp, "ok": ok] }
    }

    /// A retained alert as last published, and since when its level holds.
    struct Alert: Sendable, Equatable {
        var level: String
        var value: Double
        var threshold: String
        var message: String
        var since: String
    }

    struct Memory {
        /// The last test-recovery's failure, until one succeeds: it keeps
        /// `snapshot_integrity` critical whatever the quick check says.
        var recoveryFailure: String?
        var alerts: [String: Alert] = [:]
        var last: [String: LastOutcome] = [:]
        var lastCreate: SnapshotMetadata?
        var lastRestoreSeconds: Double?
        var stopping = false
    }

    public init(settings: AgentSettings, service: SnapshotService, logger: Logger = Logger(label: "snapshot.agent")) throws {
        self.settings = settings
        self.service = service
        self.logger = logger
        parser = CommandParser(settings: settings)
        ledger = RequestLedger(path: settings.ledgerPath)
        var options = try settings.broker.options(clientID: "snapshot-agent-\(settings.id)")
        options.will = MQTTWill(topic: settings.availabilityTopic, payload: Array("offline".utf8), qos: 1, retain: true)
        options.cleanSession = false
        options.sessionExpiry = settings.sessionExpiry
        options.reconnectDelay = (0.2, 10)
        client = try MQTTClient(options: options)
    }

    // MARK: Service

    public func run() async throws {
        // Snapshots share the machine with the mesh they serve: their worker threads yield.
        WorkerThreads.setNiceness(10)
        if !Repository.exists(at: service.repositoryPath) {
            try Repository.initialize(at: service.repositoryPath)
        }
        loadLast()
        client.subscribe(settings.commandFilter, qos: 1)
        client.start()
        logger.info("agent \(settings.id) connecting to \(settings.broker.url)")
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.watchConnection() }
                group.addTask { await self.receiveCommands() }
                group.addTask { await self.metricsTimer() }
                group.addTask { await self.alertTimer() }
                group.addTask { await self.runSchedule() }
                // The job runner ends the agent: after a shutdown it drains and returns.
                await self.runJobs()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            Task { await self.beginShutdown() }
        }
        ledger.flush()
        // At most ~4 s in all whatever the broker does, so that a supervisor's stop timeout
        // (systemd: 90 s, Docker: 10 s) is never reached. When no connection is up there is
        // nobody to tell: the broker published the last will when the connection dropped.
        if client.isConnected {
            try? await publish(settings.availabilityTopic, "offline", retain: true, timeout: 2)
        }
        client.stop(disconnect: true, timeout: 2)
        logger.info("agent \(settings.id) stopped")
    }

    /// Stops accepting commands, cancels the running job and answers the waiting ones.
    func beginShutdown() async {
        let already = memory.withLock { m -> Bool in
            defer { m.stopping = true }
            return m.stopping
        }
        guard !already else { return }
        logger.info("shutting down: cancelling the running job, answering waiting ones")
        for job in await queue.close() {
            await finish(job, status: "cancelled", result: nil, error: CommandError("cancelled", "agent \(settings.id) is shutting down"))
        }
    }

    // MARK: connection

    private func watchConnection() async {
        for await event in client.events {
            if Task.isCancelled { break }
            switch event {
            case .connected:
                logger.info("connected to \(settings.broker.url)")
                // Retained state may be gone (a broker without persistence): publish it again.
                try? await publish(settings.availabilityTopic, "online", retain: true)
                await publishState()
                await publishMetrics()
                await republishAlerts()
            case .disconnected(let code, let reason):
                logger.warning("disconnected from \(settings.broker.url): \(reason) (\(code))")
            }
        }
    }

    private func metricsTimer() async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(settings.metricsInterval * 1e9))
            if Task.isCancelled { break }
            await publishMetrics()
        }
    }

    // MARK: commands

    private func receiveCommands() async {
        for await message in client.messages {
            if Task.isCancelled { break }
            await handle(message)
        }
    }

    func handle(_ message: MQTTMessage) async {
        switch parser.route(message) {
        case .ignore:
            return
        case .reject(let action, let requestID, let error, let responseTopic, let correlation):
            logger.notice("rejected \(action) on \(message.topic): \(error.message)")
            let doc = response(requestID: requestID, jobID: nil, action: action, status: "rejected", result: nil, error: error)
            await respond(action: action, document: doc, responseTopic: responseTopic, correlationData: correlation)
        case .accept(let command):
            await accept(command)
        }
    }

    private func nextJobID() -> String {
        "\(startID)-\(counter.add(1, ordering: .relaxed).newValue)"
    }

    private func accept(_ command: Command) async {
        if let rid = command.requestID, let seen = ledger.lookup(rid) {
            // A redelivery: answer again, never run again.
            if let final = seen.final {
                await respond(action: seen.action, document: Array(final.utf8), responseTopic: command.responseTopic, correlationData: command.correlationData)
            } else {
                let doc = response(requestID: rid, jobID: seen.jobID, action: seen.action, status: "accepted", result: ["duplicate": true], error: nil)
                try? await publish(settings.responseTopic(seen.action), doc)
            }
            return
        }
        let jobID = nextJobID()
        switch command.work {
        case .ping:
            let accepted = response(requestID: command.requestID, jobID: jobID, action: "ping", status: "accepted", result: nil, error: nil)
            try? await publish(settings.responseTopic("ping"), accepted)
            let result: [String: Any] = ["pong": true, "agent": settings.id, "version": AgentSettings.version, "time": Timestamp.now().iso8601]
            await complete(command, jobID: jobID, status: "succeeded", result: result, error: nil)
        case .cancel(let target):
            let accepted = response(requestID: command.requestID, jobID: jobID, action: "cancel", status: "accepted", result: nil, error: nil)
            try? await publish(settings.responseTopic("cancel"), accepted)
            switch await queue.cancel(target) {
            case .removedWaiting(let job):
                await finish(job, status: "cancelled", result: nil, error: CommandError("cancelled", "cancelled by request before it started"))
                await complete(command, jobID: jobID, status: "succeeded", result: ["job_id": target, "was": "queued"], error: nil)
                await publishState()
            case .signalledRunning:
                await complete(command, jobID: jobID, status: "succeeded", result: ["job_id": target, "was": "running"], error: nil)
            case .notFound:
                await complete(command, jobID: jobID, status: "failed", result: nil, error: CommandError("not_found", "no queued or running job \(target)"))
            }
        default:
            let job = Job(id: jobID, command: command)
            let position: Int
            do {
                position = try await queue.enqueue(job)
            } catch {
                let reason = (error as? JobQueue.EnqueueError) == .full ? "the job queue is full" : "agent \(settings.id) is shutting down"
                let doc = response(requestID: command.requestID, jobID: nil, action: command.action, status: "rejected", result: nil, error: CommandError("busy", reason))
                await respond(action: command.action, document: doc, responseTopic: command.responseTopic, correlationData: command.correlationData)
                return
            }
            if let rid = command.requestID {
                ledger.record(.init(requestID: rid, jobID: jobID, action: command.action, status: "accepted", final: nil))
            }
            let doc = response(requestID: command.requestID, jobID: jobID, action: command.action, status: "accepted", result: ["queue_position": position], error: nil)
            try? await publish(settings.responseTopic(command.action), doc)
            await publishState()
        }
    }

    /// Publishes a final response for a command that ran inline (ping, cancel) and records it.
    private func complete(_ command: Command, jobID: String, status: String, result: Any?, error: CommandError?) async {
        let doc = response(requestID: command.requestID, jobID: jobID, action: command.action, status: status, result: result, error: error)
        // A ping has no effect to protect against repetition: it is not written to the ledger.
        if let rid = command.requestID, command.action != "ping" {
            ledger.record(.init(requestID: rid, jobID: jobID, action: command.action, status: status, final: String(decoding: doc, as: UTF8.self)))
        }
        await respond(action: command.action, document: doc, responseTopic: command.responseTopic, correlationData: command.correlationData)
    }

    // MARK: jobs

    private func runJobs() async {
        while let job = await queue.next() {
            if let rid = job.command.requestID {
                ledger.record(.init(requestID: rid, jobID: job.id, action: job.command.action, status: "running", final: nil))
            }
            await publishState()
            let pacer = ProgressPacer()
            let reports = job.reportsProgress
            let reporter = Task { if reports { await self.reportProgress(job, pacer: pacer) } }
            let outcome = await execute(job)
            reporter.cancel()
            _ = await reporter.value
            if reports && outcome.status == "succeeded" {
                // At most two progress messages a second: the 100 % one keeps its distance too.
                try? await Task.sleep(nanoseconds: pacer.waitBeforeNext())
                await publishProgress(job, final: true)
            }
            await queue.finished()
            await finish(job, status: outcome.status, result: outcome.result, error: outcome.error)
            await publishState()
            await publishMetrics()
            await evaluateAlerts()
        }
    }

    struct Outcome {
        var status: String
        var result: Any?
        var error: CommandError?
    }

    private func execute(_ job: Job) async -> Outcome {
        let service = self.service
        do {
            switch job.command.work {
            case .create(let options):
                let request = try await service.prepareCreate(options, progress: job.progress, cancellation: job.cancellation)
                let record = try await blocking { try service.commitCreate(request, progress: job.progress, cancellation: job.cancellation) }
                memory.withLock { m in
                    m.lastCreate = record.metadata
                    m.last[record.type.name] = LastOutcome(id: record.id, timestamp: record.metadata.timestamp, ok: true)
                }
                return Outcome(status: "succeeded", result: try jsonObject(record.metadata))
            case .verify(let options):
                let report = try await blocking { try service.verify(options, progress: job.progress) }
                return Outcome(status: report.ok ? "succeeded" : "failed", result: try jsonObject(report),
                    error: report.ok ? nil : CommandError("damaged", "verify found damage in \(report.snapshots.filter { !$0.ok }.map(\.snapshotID).joined(separator: ", "))"))
            case .restore(let options) where options.target == nil:
                let restored = try await service.restoreInPlace(options, configuredOnly: true, progress: job.progress, cancellation: job.cancellation)
                if let summary = restored.summary {
                    memory.withLock { $0.lastRestoreSeconds = summary.seconds }
                    return Outcome(status: "succeeded", result: try jsonObject(summary))
                }
                return Outcome(status: "succeeded", result: try jsonObject(restored.planned))
            case .restore(let options):
                let restored = try await blocking { try service.restore(options, progress: job.progress, cancellation: job.cancellation) }
                if let summary = restored.summary {
                    memory.withLock { $0.lastRestoreSeconds = summary.seconds }
                    return Outcome(status: summary.ok ? "succeeded" : "failed", result: try jsonObject(summary),
                        error: summary.ok ? nil : CommandError("mismatch", "restored files differ from the snapshot: \(summary.mismatches.joined(separator: ", "))"))
                }
                return Outcome(status: "succeeded", result: try jsonObject(restored.plannedEntries))
            case .list(let options):
                let records = try await blocking { try service.list(options) }
                return Outcome(status: "succeeded", result: try jsonObject(records.map(\.metadata)))
            case .show(let options):
                let record = try await blocking { try service.show(options) }
                return Outcome(status: "succeeded", result: try jsonObject(record.metadata))
            case .testRecovery(let options):
                let report = try await blocking { try service.testRecovery(options, progress: job.progress, cancellation: job.cancellation) }
                memory.withLock {
                    $0.lastRestoreSeconds = report.seconds
                    $0.recoveryFailure = report.ok ? nil : "test-recovery of \(report.snapshotID) failed: \(report.errors.first ?? "")"
                }
                return Outcome(status: report.ok ? "succeeded" : "failed", result: try jsonObject(report),
                    error: report.ok ? nil : CommandError("damaged", report.errors.first ?? "test recovery failed"))
            case .recover(let options):
                let report = try await service.recover(options, configuredOnly: true, progress: job.progress, cancellation: job.cancellation)
                let failed = report.steps.first { !$0.ok }
                return Outcome(status: report.ok ? "succeeded" : "failed", result: try jsonObject(report),
                    error: report.ok ? nil : CommandError("recover_failed", failed.map { "component \($0.component): \($0.error ?? "")" } ?? "health_check: \(report.health ?? "")"))
            case .prune(let options):
                let report = try await blocking { try service.prune(options, progress: job.progress) }
                return Outcome(status: "succeeded", result: try jsonObject(report))
            case .delete(let options):
                let record = try await blocking { try service.delete(options) }
                return Outcome(status: "succeeded", result: try jsonObject(record.metadata))
            case .monitor(let options):
                let report = try await blocking { try service.monitor(options) }
                return Outcome(status: "succeeded", result: try jsonObject(report))
            case .scheduled(let type):
                var options = CreateOptions()
                options.type = type
                options.auto = true
                let request = try await service.prepareCreate(options, progress: job.progress, cancellation: job.cancellation)
                let record = try await blocking { try service.commitCreate(request, progress: job.progress, cancellation: job.cancellation) }
                memory.withLock { m in
                    m.lastCreate = record.metadata
                    m.last[record.type.name] = LastOutcome(id: record.id, timestamp: record.metadata.timestamp, ok: true)
                }
                var retention = PruneOptions()
                retention.type = type
                let prune = retention
                let pruned = try await blocking { try service.prune(prune) }
                return Outcome(status: "succeeded", result: ["snapshot": try jsonObject(record.metadata), "prune": try jsonObject(pruned)])
            case .ping, .cancel:
                return Outcome(status: "succeeded")
            }
        } catch {
            if job.cancellation.isCancelled || (error as? EngineError).map({ if case .cancelled = $0 { return true } else { return false } }) == true {
                return Outcome(status: "cancelled", error: CommandError("cancelled", "cancelled; nothing was committed"))
            }
            if case .create(let o) = job.command.work {
                memory.withLock { $0.last[o.type.name] = LastOutcome(id: nil, timestamp: Timestamp.now().iso8601, ok: false) }
            }
            return Outcome(status: "failed", error: Self.commandError(error))
        }
    }

    /// Runs blocking engine work on a thread outside the cooperative pool.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await Blocking.run(body)
    }

    static func commandError(_ error: any Error) -> CommandError {
        switch error {
        case let e as RepositoryError:
            switch e {
            case .locked: return CommandError("locked", "\(e)")
            case .snapshotNotFound: return CommandError("not_found", "\(e)")
            case .permission: return CommandError("permission", "\(e)")
            case .notFound, .io: return CommandError("io_error", "\(e)")
            case .corrupt, .unsupportedVersion, .missingBlob: return CommandError("damaged", "\(e)")
            }
        case let e as EngineError:
            switch e {
            case .usage, .unknownComponent, .unknownType: return CommandError("bad_payload", "\(e)")
            case .config: return CommandError("bad_config", "\(e)")
            case .unsafePath: return CommandError("unsafe_target", "\(e)")
            case .hookFailed: return CommandError("hook_failed", "\(e)")
            default: return CommandError("failed", "\(e)")
            }
        default:
            return CommandError("failed", "\(error)")
        }
    }

    private func finish(_ job: Job, status: String, result: Any?, error: CommandError?) async {
        let doc = response(requestID: job.command.requestID, jobID: job.id, action: job.command.action, status: status, result: result, error: error)
        if let rid = job.command.requestID {
            ledger.record(.init(requestID: rid, jobID: job.id, action: job.command.action, status: status, final: String(decoding: doc, as: UTF8.self)))
        }
        logger.info("\(job.command.action) \(job.id) \(status)\(error.map { ": " + $0.message } ?? "")")
        await respond(action: job.command.action, document: doc, responseTopic: job.command.responseTopic, correlationData: job.command.correlationData)
    }

    // MARK: progress

    private func reportProgress(_ job: Job, pacer: ProgressPacer) async {
        await publishProgress(job, final: false)
        pacer.sent()
        var last = job.progress.reading()
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 500_000_000)
            if Task.isCancelled { break }
            let now = job.progress.reading()
            if now != last {
                last = now
                await publishProgress(job, final: false)
                pacer.sent()
            }
        }
    }

    private func publishProgress(_ job: Job, final: Bool) async {
        var r = job.progress.reading()
        if final {
            r.bytesDone = r.bytesTotal
            r.filesDone = r.filesTotal
            r.phase = "done"
        }
        let elapsed = max(0.001, Date().timeIntervalSince(job.accepted))
        let rate = Double(r.bytesDone) / elapsed
        let remaining = r.bytesTotal - r.bytesDone
        var doc: [String: Any] = [
            "job_id": job.id, "action": job.command.action, "phase": r.phase,
            "percent": final ? 100 : (r.percent * 10).rounded() / 10,
            "bytes_done": r.bytesDone, "bytes_total": r.bytesTotal, "files_done": r.filesDone, "files_total": r.filesTotal,
            "rate_bps": Int(rate),
        ]
        doc["eta_s"] = final ? 0.0 : (rate > 0 && remaining > 0 ? ((Double(remaining) / rate * 10).rounded() / 10) as Any : NSNull())
        doc["request_id"] = job.command.requestID ?? NSNull()
        try? await publish(settings.progressTopic, encode(doc), qos: 0)
    }

    // MARK: alerts and schedule

    private func alertTimer() async {
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
        guard let report = try? await blocking({ try service.monitor(options) }) else { return }
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

    private func alertDocument(_ a: Alert) -> [String: Any] {
        ["level": a.level, "value": a.value, "threshold": a.threshold, "message": a.message, "since": a.since]
    }

    private func republishAlerts() async {
        let all = memory.withLock { $0.alerts }
        for (check, alert) in all {
            try? await publish(settings.alertTopic(check), encode(alertDocument(alert)), retain: true)
        }
    }

    private func runSchedule() async {
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

    // MARK: state and metrics

    private func loadLast() {
        guard let records = try? service.catalog.all() else { return }
        var last: [String: LastOutcome] = [:]
        for r in records where last[r.type.name] == nil {
            last[r.type.name] = LastOutcome(id: r.id, timestamp: r.metadata.timestamp, ok: r.metadata.verified?.ok ?? true)
        }
        memory.withLock { $0.last = last }
    }

    func publishState() async {
        let (running, waiting) = await queue.status
        let last = memory.withLock { $0.last }.mapValues(\.json)
        var doc: [String: Any] = ["state": running == nil ? "idle" : "busy", "queue": waiting, "last": last, "version": AgentSettings.version]
        if let running {
            let job: [String: Any] = [
                "job_id": running.id, "action": running.command.action, "request_id": (running.command.requestID as Any?) ?? NSNull(),
                "accepted": Timestamp(seconds: Int64(running.accepted.timeIntervalSince1970)).iso8601,
            ]
            doc["job"] = job
        } else {
            doc["job"] = NSNull()
        }
        try? await publish(settings.stateTopic, encode(doc), retain: true)
    }

    func publishMetrics() async {
        guard let records = try? service.catalog.all() else { return }
        var counts: [String: Int] = [:]
        var lastSuccessAge: [String: Double] = [:]
        let now = Date().timeIntervalSince1970
        var logical: UInt64 = 0
        for r in records {
            counts[r.type.name, default: 0] += 1
            logical += r.metadata.sizeBytes
            if lastSuccessAge[r.type.name] == nil, let t = Timestamp(iso8601: r.metadata.timestamp) {
                lastSuccessAge[r.type.name] = max(0, (now - t.timeInterval).rounded())
            }
        }
        let repoBytes = SnapshotService.storeBytes(service.repositoryPath + "/.store")
        let (lastCreate, restoreSeconds) = memory.withLock { ($0.lastCreate, $0.lastRestoreSeconds) }
        let newest = lastCreate ?? records.first?.metadata
        let doc: [String: Any] = [
            "creation_time_s": newest?.durationS ?? NSNull(),
            "restoration_time_s": restoreSeconds ?? NSNull(),
            "compression_ratio": newest?.compressionRatio ?? NSNull(),
            "dedup_ratio": repoBytes > 0 ? (Double(logical) / Double(repoBytes) * 100).rounded() / 100 : NSNull(),
            "repository_bytes": repoBytes,
            "snapshots": counts,
            "last_success_age_s": lastSuccessAge,
            "timestamp": Timestamp.now().iso8601,
        ]
        try? await publish(settings.metricsTopic, encode(doc), retain: true)
    }

    /// Remembers when the last progress message of a job went out.
    final class ProgressPacer: Sendable {
        private let last = Mutex<Date?>(nil)

        func sent() { last.withLock { $0 = Date() } }

        /// Nanoseconds until 0.5 s have passed since the last message.
        func waitBeforeNext() -> UInt64 {
            guard let t = last.withLock({ $0 }) else { return 0 }
            return UInt64(max(0, 0.5 - Date().timeIntervalSince(t)) * 1e9)
        }
    }

    // MARK: publishing

    func response(requestID: String?, jobID: String?, action: String, status: String, result: Any?, error: CommandError?) -> [UInt8] {
        var doc: [String: Any] = ["action": action, "status": status, "agent": settings.id]
        doc["request_id"] = requestID ?? NSNull()
        doc["job_id"] = jobID ?? NSNull()
        doc["result"] = result ?? NSNull()
        doc["error"] = error.map { ["code": $0.code, "message": $0.message] } ?? NSNull()
        return encode(doc)
    }

    /// A response goes to `response/<action>`; a final one also to the v5 Response Topic.
    private func respond(action: String, document: [UInt8], responseTopic: String?, correlationData: [UInt8]?) async {
        let topicAction = CommandParser.actions[action] == nil ? "unknown" : action
        try? await publish(settings.responseTopic(topicAction), document)
        if let responseTopic, !responseTopic.isEmpty, !responseTopic.contains("+"), !responseTopic.contains("#") {
            _ = try? client.enqueue(responseTopic, document, qos: 1, retain: false, correlationData: correlationData)
        }
    }

    private func publish(_ topic: String, _ text: String, retain: Bool = false, timeout: Double? = nil) async throws {
        try await publish(topic, Array(text.utf8), retain: retain, timeout: timeout)
    }

    /// Queues a message in libmosquitto without waiting for its PUBACK (QoS 1 messages are
    /// kept and resent across reconnects), so that a burst of commands is answered at the
    /// broker's pace rather than one round trip at a time. With `timeout`, waits for the
    /// acknowledgement (the final `offline`).
    private func publish(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false, timeout: Double? = nil) async throws {
        guard let timeout else {
            try client.enqueue(topic, payload, qos: qos, retain: retain)
            return
        }
        try await client.publish(topic, payload, qos: qos, retain: retain, timeout: timeout)
    }

    func encode(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8))
    }

    func jsonObject<T: Encodable>(_ value: T) throws -> Any {
        try JSONSerialization.jsonObject(with: JSONEncoder.snapshot.encode(value), options: [.fragmentsAllowed])
    }
}
