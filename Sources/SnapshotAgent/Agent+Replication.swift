import Foundation
import Logging
import SnapshotCore
import SnapshotEngine
import Synchronization

/// Wakes a waiting task early: `signal()` from anywhere, `wait(timeout:)` in one task. A
/// signal while nobody waits is kept for the next wait.
final class Wakeup: Sendable {
    private let state = Mutex<(pending: Bool, generation: Int, waiter: CheckedContinuation<Void, Never>?)>((false, 0, nil))

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else {
                s.pending = true
                return nil
            }
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Returns after a signal, `timeout` seconds, or the task's cancellation.
    func wait(timeout: Double) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let generation = state.withLock { s -> Int? in
                    if s.pending {
                        s.pending = false
                        return nil
                    }
                    s.generation += 1
                    s.waiter = c
                    return s.generation
                }
                guard let generation else { return c.resume() }
                Task {
                    try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                    let w = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                        guard s.generation == generation, let w = s.waiter else { return nil }
                        s.waiter = nil
                        return w
                    }
                    w?.resume()
                }
            }
        } onCancel: {
            signal()
        }
    }
}

/// Replication (the config's `replicate:`): every new snapshot of a target's types is copied
/// there after it commits, retention there follows this repository's policy, and the
/// retained `status/<id>/replication` says how far behind each target is.
extension Agent {
    struct ReplicaState {
        var storage: (any RepositoryStorage)?
        /// The target's keys, kept: an encrypted target's key is derived once, not every round.
        var keyring: Keyring?
        var lastCopiedID: String?
        var lastError: String?
        var failures = 0
        var nextAttempt = Date.distantPast
        var pending: [SnapshotRecord] = []
        /// What the target had when last listed (`TYPE/ID`); nil before it could be.
        var there: Set<String>?
    }

    /// Runs until the agent stops; returns at once without `replicate:` entries.
    func runReplication() async {
        let targets = service.config.replicate
        guard !targets.isEmpty else { return }
        let service = self.service
        let environment = ProcessInfo.processInfo.environment
        var states = Array(repeating: ReplicaState(), count: targets.count)
        while !Task.isCancelled {
            let pruneNow = memory.withLock { m -> Bool in
                defer { m.replicaPruneDue = false }
                return m.replicaPruneDue
            }
            for (i, target) in targets.enumerated() {
                if Task.isCancelled { break }
                var s = states[i]
                // Pending: what this repository has and the target did not when last listed
                // (everything, before it ever could be).
                let known = s.there ?? []
                if let pending = try? await Blocking.run({ try service.replicationPending(types: target.types, present: known) }) { s.pending = pending }
                guard Date() >= s.nextAttempt else {
                    if pruneNow { memory.withLock { $0.replicaPruneDue = true } }
                    states[i] = s
                    continue
                }
                do {
                    if s.storage == nil {
                        let made = try service.config.storage(for: target.to, environment: environment)
                        s.storage = made
                        s.keyring = service.replicaKeyring(made)
                    }
                    let storage = s.storage!, keys = s.keyring!
                    let listed = try await Blocking.run { try service.replicaSnapshots(storage, keyring: keys) }
                    s.there = listed
                    s.pending = try await Blocking.run { try service.replicationPending(types: target.types, present: listed) }
                    if !s.pending.isEmpty {
                        await publishReplication(targets, states.enumerated().map { $0.offset == i ? s : $0.element })
                        let report = try await Blocking.run { try service.copy(to: storage, snapshots: [], type: nil, types: target.types, targetKeyring: keys) }
                        if let last = report.copied.last { s.lastCopiedID = String(last.split(separator: "/").last ?? "") }
                        if !report.copied.isEmpty { logger.info("replicated \(report.copied.count) snapshots to \(target.to): \(report.blobs) blobs, \(report.bytes) bytes in \(String(format: "%.2f", report.seconds)) s") }
                        let after = try await Blocking.run { try service.replicaSnapshots(storage, keyring: keys) }
                        s.there = after
                        s.pending = try await Blocking.run { try service.replicationPending(types: target.types, present: after) }
                    }
                    if pruneNow, let report = try await Blocking.run({ try service.pruneReplica(storage, keyring: keys) }), !report.remove.isEmpty {
                        logger.info("retention on \(target.to): removed \(report.remove.count) snapshots")
                    }
                    s.lastError = nil
                    s.failures = 0
                    s.nextAttempt = .distantPast
                } catch {
                    s.failures += 1
                    // 5 s, 10 s, 20 s … at most 10 minutes between attempts.
                    s.nextAttempt = Date().addingTimeInterval(min(600, 5 * pow(2, Double(min(s.failures - 1, 7)))))
                    let text = "\(error)".escapingControlCharacters
                    if s.lastError != text { logger.warning("replication to \(target.to) failed: \(text); trying again in \(Int(s.nextAttempt.timeIntervalSinceNow.rounded())) s") }
                    s.lastError = text
                    if pruneNow { memory.withLock { $0.replicaPruneDue = true } }
                }
                states[i] = s
            }
            await publishReplication(targets, states)
            await checkReplicationLag(targets, states)
            let soonest = states.filter { $0.lastError != nil }.map { $0.nextAttempt.timeIntervalSinceNow }.min() ?? 60
            await replicationWakeup.wait(timeout: max(1, min(60, soonest)))
        }
    }

    /// The oldest pending snapshot's age, per target (0 when nothing is pending).
    private func lag(_ s: ReplicaState) -> Double {
        guard let oldest = s.pending.first, let t = Timestamp(iso8601: oldest.metadata.timestamp) else { return 0 }
        return max(0, (Date().timeIntervalSince1970 - t.timeInterval).rounded())
    }

    private func publishReplication(_ targets: [ReplicationTarget], _ states: [ReplicaState]) async {
        prometheus.live.withLock { live in live.replication = zip(targets, states).map { ($0.0.to, lag($0.1), $0.1.pending.count) } }
        let docs: [[String: Any]] = zip(targets, states).map { target, s in
            [
                "to": target.to, "types": target.types.map(\.name), "lag_s": lag(s), "pending_snapshots": s.pending.count,
                "last_copied_id": (s.lastCopiedID as Any?) ?? NSNull(), "last_error": (s.lastError as Any?) ?? NSNull(),
            ]
        }
        guard let data = try? JSONSerialization.data(withJSONObject: docs, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        let payload = Array(data)
        let changed = memory.withLock { m -> Bool in
            defer { m.replicationStatus = payload }
            return m.replicationStatus != payload
        }
        if changed { try? await publish(settings.replicationTopic, payload, retain: true) }
    }

    /// `alerts/replication_lag`: the worst target's lag against `snapshot_age`'s thresholds.
    private func checkReplicationLag(_ targets: [ReplicationTarget], _ states: [ReplicaState]) async {
        let thresholds = (try? AlertThresholds.load(path: service.config.alerts)) ?? AlertThresholds()
        let worst = zip(targets, states).map { ($0.0, $0.1, lag($0.1)) }.max { $0.2 < $1.2 }
        guard let (target, s, seconds) = worst else { return }
        let level: AlertLevel = seconds >= thresholds.ageCritical ? .critical : seconds >= thresholds.ageWarning ? .warning : .ok
        let message = level == .ok
            ? "every replication target is up to date or within \(SnapshotConfig.seconds(thresholds.ageWarning))"
            : "\(target.to) is \(SnapshotConfig.seconds(seconds)) behind (\(s.pending.count) snapshots pending)\(s.lastError.map { "; last error: \($0)" } ?? "")"
        await setAlert("replication_lag", level: level.rawValue, value: seconds, threshold: "\(Int(thresholds.ageWarning))s/\(Int(thresholds.ageCritical))s", message: message)
    }
}
