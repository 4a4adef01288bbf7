import Foundation
import Logging
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// The job runner: one job at a time, progress while it runs, one final response.
extension Agent {
    // MARK: jobs

    func runJobs() async {
        while let job = await queue.next() {
            if let rid = job.command.requestID {
                ledger.record(.init(requestID: rid, jobID: job.id, action: job.command.action, status: "running", final: nil))
            }
            await publishState()
            let pacer = ProgressPacer()
            let reports = job.reportsProgress
            let reporter = Task { if reports { await self.reportProgress(job, pacer: pacer) } }
            await gate.enter()
            let started = Date()
            let outcome = await execute(job)
            await gate.leave()
            prometheus.recordJob(action: job.command.action, status: outcome.status, seconds: Date().timeIntervalSince(started))
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

    func execute(_ job: Job) async -> Outcome {
        let service = self.service
        do {
            switch job.command.work {
            case .create(let options):
                let request = try await service.prepareCreate(options, progress: job.progress, cancellation: job.cancellation)
                let record = try await Blocking.run { try service.commitCreate(request, progress: job.progress, cancellation: job.cancellation) }
                memory.withLock { m in
                    m.lastCreate = record.metadata
                    m.last[record.type.name] = LastOutcome(id: record.id, timestamp: record.metadata.timestamp, ok: true)
                }
                replicationWakeup.signal()
                return Outcome(status: "succeeded", result: try jsonObject(record.metadata))
            case .verify(let options):
                let report = try await Blocking.run { try service.verify(options, progress: job.progress) }
                return Outcome(status: report.ok ? "succeeded" : "failed", result: try jsonObject(report),
                    error: report.ok ? nil : CommandError("damaged", "verify found damage in \((report.snapshots.filter { !$0.ok }.map(\.snapshotID) + report.repositoryErrors).joined(separator: ", "))"))
            case .restore(let options) where options.target == nil:
                let restored = try await service.restoreInPlace(options, configuredOnly: true, progress: job.progress, cancellation: job.cancellation)
                if let summary = restored.summary {
                    memory.withLock { $0.lastRestoreSeconds = summary.seconds }
                    return Outcome(status: "succeeded", result: try jsonObject(summary))
                }
                return Outcome(status: "succeeded", result: try jsonObject(restored.planned))
            case .restore(let options):
                let restored = try await Blocking.run { try service.restore(options, progress: job.progress, cancellation: job.cancellation) }
                if let summary = restored.summary {
                    memory.withLock { $0.lastRestoreSeconds = summary.seconds }
                    return Outcome(status: summary.ok ? "succeeded" : "failed", result: try jsonObject(summary),
                        error: summary.ok ? nil : CommandError("mismatch", "restored files differ from the snapshot: \(summary.mismatches.joined(separator: ", "))"))
                }
                return Outcome(status: "succeeded", result: try jsonObject(restored.plannedEntries))
            case .list(let options):
                let (records, damaged) = try await Blocking.run { try service.listing(options) }
                let listing = try records.map { try jsonObject($0.metadata) } + damaged.map { try jsonObject(DamagedListing(snapshotID: $0.id, type: $0.type, damaged: $0.problem)) }
                return Outcome(status: "succeeded", result: listing)
            case .show(let options):
                let record = try await Blocking.run { try service.show(options) }
                return Outcome(status: "succeeded", result: try jsonObject(record.metadata))
            case .testRecovery(let options):
                let report = try await Blocking.run { try service.testRecovery(options, progress: job.progress, cancellation: job.cancellation) }
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
                let report = try await Blocking.run { try service.prune(options, progress: job.progress) }
                if !options.dryRun && !service.config.replicate.isEmpty {
                    // Retention here: the replication targets follow.
                    memory.withLock { $0.replicaPruneDue = true }
                    replicationWakeup.signal()
                }
                return Outcome(status: "succeeded", result: try jsonObject(report))
            case .delete(let options):
                let deleted = try await Blocking.run { try service.delete(options) }
                return Outcome(status: "succeeded", result: try jsonObject(deleted))
            case .monitor(let options):
                let report = try await Blocking.run { try service.monitor(options) }
                return Outcome(status: "succeeded", result: try jsonObject(report))
            case .scheduled(let type):
                var options = CreateOptions()
                options.type = type
                options.auto = true
                let request = try await service.prepareCreate(options, progress: job.progress, cancellation: job.cancellation)
                let record = try await Blocking.run { try service.commitCreate(request, progress: job.progress, cancellation: job.cancellation) }
                memory.withLock { m in
                    m.lastCreate = record.metadata
                    m.last[record.type.name] = LastOutcome(id: record.id, timestamp: record.metadata.timestamp, ok: true)
                }
                var retention = PruneOptions()
                retention.type = type
                let prune = retention
                let pruned = try await Blocking.run { try service.prune(prune) }
                memory.withLock { $0.replicaPruneDue = true }
                replicationWakeup.signal()
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

    static func commandError(_ error: any Error) -> CommandError {
        switch error {
        case let e as RepositoryError:
            switch e {
            case .locked: return CommandError("locked", "\(e)")
            case .snapshotNotFound: return CommandError("not_found", "\(e)")
            case .permission, .key: return CommandError("permission", "\(e)")
            case .notFound, .io: return CommandError("io_error", "\(e)")
            case .remote(_, _, let status, _): return CommandError(status == 403 ? "permission" : "io_error", "\(e)")
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

    func finish(_ job: Job, status: String, result: Any?, error: CommandError?) async {
        let doc = response(requestID: job.command.requestID, jobID: job.id, action: job.command.action, status: status, result: result, error: error)
        if let rid = job.command.requestID {
            ledger.record(.init(requestID: rid, jobID: job.id, action: job.command.action, status: status, final: String(decoding: doc, as: UTF8.self)))
        }
        logger.info("\(job.command.action) \(job.id) \(status)\(error.map { ": " + $0.message } ?? "")")
        await respond(action: job.command.action, document: doc, responseTopic: job.command.responseTopic, correlationData: job.command.correlationData)
        // Redeliveries that arrived while it waited or ran, each on its own Response Topic.
        let waiting = job.command.requestID.map { rid in memory.withLock { $0.waitingReplies.removeValue(forKey: rid) ?? [] } } ?? []
        for reply in waiting {
            _ = try? client.enqueue(reply.topic, doc, qos: 1, retain: false, correlationData: reply.correlation)
        }
    }

    // MARK: progress

    func reportProgress(_ job: Job, pacer: ProgressPacer) async {
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

    func publishProgress(_ job: Job, final: Bool) async {
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
}
