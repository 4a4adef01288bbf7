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
    let gate = RepositoryGate()
    let logger: Logger
    let counter = Atomic<Int>(0)
    let startID = String(Int(Date().timeIntervalSince1970), radix: 36)
    let memory = Mutex(Memory())
    /// Wakes the replication loop when a snapshot has been committed.
    let replicationWakeup = Wakeup()
    /// The Prometheus families (`metrics: {listen}`).
    let prometheus = AgentMetrics()

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
        /// Response Topics of redeliveries of a request still queued or running: each gets
        /// the final response too (topics.md: exactly one per command that asks).
        var waitingReplies: [String: [(topic: String, correlation: [UInt8]?)]] = [:]
        /// The last `continuous` status published (again after a reconnect).
        var continuousStatus: [UInt8]?
        /// The last `replication` status published (again after a reconnect).
        var replicationStatus: [UInt8]?
        /// Retention ran here: the replication targets follow at the next round.
        var replicaPruneDue = false
    }

    public init(settings: AgentSettings, service: SnapshotService, logger: Logger = Logger(label: "snapshot.agent")) throws {
        self.settings = settings
        var service = service
        if !service.config.continuous.isEmpty && service.lockWait == 0 {
            // A continuous snapshot holds the repository for moments at a time: a job that
            // needs it alone (prune, delete) waits for it rather than failing at once.
            service.lockWait = 30
        }
        self.service = service
        self.logger = logger
        parser = CommandParser(settings: settings)
        ledger = RequestLedger(path: settings.ledgerPath)
        var options = try settings.broker.options(clientID: "snapshot-agent-\(settings.id)")
        options.will = MQTTWill(topic: settings.availabilityTopic, payload: Array("offline".utf8), qos: 1, retain: true)
        options.cleanSession = false
        options.sessionExpiry = settings.sessionExpiry
        options.reconnectDelay = Self.reconnectDelay
        client = try MQTTClient(options: options)
    }

    /// Back-off between connection attempts, doubling from the first to the second.
    static let reconnectDelay = (minimum: 0.2, maximum: 10.0)
    /// A broker still down is logged again every this many failed attempts.
    static let retryReminder = 30

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
        // Shut down in reverse: the job runner drains first, the intake keeps answering
        // (refusing new jobs) until it has.
        let parts = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [
                .init(service: Loop(description: "connection watch") { await self.watchConnection() }),
                .init(service: Loop(description: "metrics timer") { await self.metricsTimer() }),
                .init(service: Loop(description: "command intake") { await self.receiveCommands() }),
                .init(service: Loop(description: "alert checks") { await self.alertTimer() }),
                // With no schedule: entries there is nothing to run, and it ends at once.
                .init(service: Loop(description: "schedule") { await self.runSchedule() }, successTerminationBehavior: .ignore),
                // With no continuous: entry it ends at once too.
                .init(service: Loop(description: "continuous snapshots") { await self.runContinuous() }, successTerminationBehavior: .ignore),
                // With no metrics: entry it ends at once too.
                .init(service: Loop(description: "metrics endpoint") { await self.runMetricsServer() }, successTerminationBehavior: .ignore),
                // With no replicate: entry it ends at once too.
                .init(service: Loop(description: "replication") { await self.runReplication() }, successTerminationBehavior: .ignore),
                .init(service: JobRunner(agent: self), successTerminationBehavior: .gracefullyShutdownGroup),
            ],
            logger: logger))
        try await parts.run()
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

}
