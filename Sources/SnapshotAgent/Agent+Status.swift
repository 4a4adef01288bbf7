import Foundation
import Logging
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// Retained state and metrics, responses and the publishing helpers; republished after
/// every (re)connect.
extension Agent {
    // MARK: connection

    /// Logs the connection's changes, not every retry: a broker that stays down is one
    /// warning, then one every `retryReminder` failed attempts (~5 minutes at the 10 s
    /// back-off), and a reason that changes; the rest is debug.
    func watchConnection() async {
        let url = settings.broker.url
        var up = false, failures = 0, lastReason = ""
        for await event in client.events {
            if Task.isCancelled { break }
            switch event {
            case .connected:
                logger.info(failures > 0 ? "connected to \(url) after \(failures) failed attempt\(failures == 1 ? "" : "s")" : "connected to \(url)")
                (up, failures, lastReason) = (true, 0, "")
                // Retained state may be gone (a broker without persistence): publish it again.
                try? await publish(settings.availabilityTopic, "online", retain: true)
                await publishState()
                await publishMetrics()
                await republishAlerts()
                if let status = memory.withLock({ $0.continuousStatus }) {
                    try? await publish(settings.continuousTopic, status, retain: true)
                }
                if let status = memory.withLock({ $0.replicationStatus }) {
                    try? await publish(settings.replicationTopic, status, retain: true)
                }
                await publishDiscovery()
            case .disconnected(_, let reason):
                if up {
                    logger.warning("disconnected from \(url): \(reason); reconnecting")
                    (up, lastReason) = (false, "")
                    continue
                }
                failures += 1
                if reason != lastReason {
                    logger.warning("cannot connect to \(url): \(reason); retrying every \(Int(Self.reconnectDelay.maximum)) s at most")
                } else if failures % Self.retryReminder == 0 {
                    logger.warning("still cannot connect to \(url) after \(failures) attempts: \(reason)")
                } else {
                    logger.debug("cannot connect to \(url): \(reason) (attempt \(failures))")
                }
                lastReason = reason
            }
        }
    }

    func metricsTimer() async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(settings.metricsInterval * 1e9))
            if Task.isCancelled { break }
            await publishMetrics()
        }
    }


    // MARK: state and metrics

    func loadLast() {
        guard let records = try? service.catalog.all() else { return }
        var last: [String: LastOutcome] = [:]
        for r in records where last[r.type.name] == nil {
            last[r.type.name] = LastOutcome(id: r.id, timestamp: r.metadata.timestamp, ok: r.metadata.verified?.ok ?? true)
        }
        memory.withLock { $0.last = last }
    }

    func publishState() async {
        let (running, waiting) = await queue.status
        prometheus.live.withLock {
            $0.queue = waiting
            $0.busy = running != nil
        }
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
        guard let figures = AgentMetrics.CatalogFigures.read(service) else { return }
        let now = Date().timeIntervalSince1970
        let counts = figures.counts, logical = figures.logical, repoBytes = figures.stored
        let lastSuccessAge = figures.newest.mapValues { max(0, (now - $0).rounded()) }
        let (lastCreate, restoreSeconds) = memory.withLock { ($0.lastCreate, $0.lastRestoreSeconds) }
        let newest = lastCreate ?? figures.newestMetadata
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
    func respond(action: String, document: [UInt8], responseTopic: String?, correlationData: [UInt8]?) async {
        let topicAction = CommandParser.actions[action] == nil ? "unknown" : action
        try? await publish(settings.responseTopic(topicAction), document)
        if let responseTopic, !responseTopic.isEmpty, !responseTopic.contains("+"), !responseTopic.contains("#") {
            _ = try? client.enqueue(responseTopic, document, qos: 1, retain: false, correlationData: correlationData)
        }
    }

    func publish(_ topic: String, _ text: String, retain: Bool = false, timeout: Double? = nil) async throws {
        try await publish(topic, Array(text.utf8), retain: retain, timeout: timeout)
    }

    /// Queues a message in libmosquitto without waiting for its PUBACK (QoS 1 messages are
    /// kept and resent across reconnects), so that a burst of commands is answered at the
    /// broker's pace rather than one round trip at a time. With `timeout`, waits for the
    /// acknowledgement (the final `offline`).
    func publish(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false, timeout: Double? = nil) async throws {
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
