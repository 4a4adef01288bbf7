import Foundation
import Prometheus
import SnapshotCore
import SnapshotEngine
import Synchronization

/// Prometheus's text exposition (format 0.0.4) at `GET /metrics` with `metrics: {listen}`.
///
/// swift-prometheus's registry holds the families and writes the text (`# HELP`, `# TYPE`,
/// samples); the values are set at each scrape from what the agent knows (its memory, its
/// queue, the connection) and from the repository's catalog, read at most every 10 s. The job
/// histogram is recorded as jobs end.
final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// The catalog's figures, read at most this often (each read opens every metadata.json).
    static let catalogInterval: Double = 10
    private let catalogCache = Mutex<(at: Date, figures: CatalogFigures)?>(nil)
    /// What async parts of the agent last knew, for the scrape thread.
    let live = Mutex(Live())

    struct Live {
        var queue = 0
        var busy = false
        var replication: [(to: String, lag: Double, pending: Int)] = []
    }

    /// What the metrics topic and `/metrics` say of the repository, from one reading of it.
    struct CatalogFigures {
        var counts: [String: Int] = [:]
        /// When the newest snapshot of each type was taken (Unix time).
        var newest: [String: Double] = [:]
        var logical: UInt64 = 0
        var stored: UInt64 = 0
        /// The newest snapshot of any type.
        var newestMetadata: SnapshotMetadata?

        /// nil when the catalog cannot be read.
        static func read(_ service: SnapshotService) -> CatalogFigures? {
            guard let records = try? service.catalog.all() else { return nil }
            var f = CatalogFigures()
            f.newestMetadata = records.first?.metadata
            for r in records {
                f.counts[r.type.name, default: 0] += 1
                f.logical += r.metadata.sizeBytes
                if f.newest[r.type.name] == nil, let t = Timestamp(iso8601: r.metadata.timestamp) { f.newest[r.type.name] = t.timeInterval }
            }
            f.stored = (try? SnapshotService.storeBytes(service.storage)) ?? 0
            return f
        }
    }

    static func name(_ metric: String, unit: String = "", help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "snapshot", metricName: metric, unitName: unit, helpText: help)
    }

    static let jobBuckets: [Duration] = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400].map { Duration.milliseconds(Int64($0 * 1000)) }

    /// A job ended: its duration by action, and a count by action and outcome.
    func recordJob(action: String, status: String, seconds: Double) {
        registry.makeDurationHistogram(
            descriptor: Self.name("job_duration", unit: "seconds", help: "How long agent jobs took, by action."),
            labels: [("action", action)], buckets: Self.jobBuckets
        ).recordNanoseconds(Int64(seconds * 1e9))
        registry.makeCounter(descriptor: Self.name("jobs", unit: "total", help: "Agent jobs ended, by action and outcome (succeeded, failed, cancelled)."),
                             labels: [("action", action), ("status", status)]).increment()
    }

    /// The exposition, with every gauge set from `agent` now.
    func render(_ agent: Agent) -> [UInt8] {
        let figures = catalogFigures(agent.service)
        for (type, n) in figures.counts {
            registry.makeGauge(descriptor: Self.name("snapshots", help: "Snapshots in the repository, by type."), labels: [("type", type)]).set(Double(n))
        }
        for (type, t) in figures.newest {
            registry.makeGauge(descriptor: Self.name("last_success_timestamp", unit: "seconds", help: "When the newest snapshot of each type was taken (Unix time)."),
                               labels: [("type", type)]).set(t)
        }
        registry.makeGauge(descriptor: Self.name("repository", unit: "bytes", help: "Bytes the repository's store takes (packs, index, keys).")).set(Double(figures.stored))
        registry.makeGauge(descriptor: Self.name("logical", unit: "bytes", help: "Bytes the snapshots hold before deduplication and compression (the sum of their sizes).")).set(Double(figures.logical))
        let alerts = agent.memory.withLock { $0.alerts }
        for check in Set(AgentSettings.alertChecks).union(alerts.keys).sorted() {
            let levels: [String: Double] = ["ok": 0, "warning": 1, "critical": 2]
            let level: Double = alerts[check].flatMap { levels[$0.level] } ?? 0
            registry.makeGauge(descriptor: Self.name("alert_level", help: "Each alert check's level: 0 ok, 1 warning, 2 critical."), labels: [("check", check)]).set(level)
        }
        let live = self.live.withLock { $0 }
        registry.makeGauge(descriptor: Self.name("queue_length", help: "Jobs waiting in the agent's queue (the running one not counted).")).set(Double(live.queue))
        registry.makeGauge(descriptor: Self.name("busy", help: "1 while the agent runs a job.")).set(Double(live.busy ? 1 : 0))
        registry.makeGauge(descriptor: Self.name("mqtt_connected", help: "1 while the agent is connected to its broker.")).set(Double(agent.client.isConnected ? 1 : 0))
        for r in live.replication {
            registry.makeGauge(descriptor: Self.name("replication_lag", unit: "seconds", help: "Age of the oldest snapshot a replication target lacks (0: none)."), labels: [("to", r.to)]).set(r.lag)
            registry.makeGauge(descriptor: Self.name("replication_pending", help: "Snapshots a replication target lacks."), labels: [("to", r.to)]).set(Double(r.pending))
        }
        return registry.emitToBuffer()
    }

    private func catalogFigures(_ service: SnapshotService) -> CatalogFigures {
        if let cached = catalogCache.withLock({ $0 }), Date().timeIntervalSince(cached.at) < Self.catalogInterval { return cached.figures }
        let f = CatalogFigures.read(service) ?? CatalogFigures()
        catalogCache.withLock { $0 = (Date(), f) }
        return f
    }
}

extension Agent {
    /// Serves `/metrics` until the agent stops; returns at once without `metrics:`.
    func runMetricsServer() async {
        guard let address = service.config.metricsListen else { return }
        let server: HTTPServer
        do {
            server = try HTTPServer(address: address) { [self] request in
                guard request.path == "/metrics" else { return .text(404, "not found: the metrics are at /metrics\n") }
                guard request.method == "GET" || request.method == "HEAD" else { return .text(405, "GET /metrics\n") }
                return .full(status: 200, type: "text/plain; version=0.0.4; charset=utf-8", body: prometheus.render(self))
            }
        } catch {
            logger.error("metrics: \(error)")
            return
        }
        server.start()
        logger.info("Prometheus metrics at http://\(address)/metrics")
        await withTaskCancellationHandler {
            while !Task.isCancelled { try? await Task.sleep(nanoseconds: 3_600_000_000_000) }
        } onCancel: {
            server.stop()
        }
        server.stop()
    }
}
