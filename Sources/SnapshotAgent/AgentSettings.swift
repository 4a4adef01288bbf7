import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT

/// Everything the agent needs to know about itself, from the config's `mqtt:` section and
/// the command line (flags win).
public struct AgentSettings: Sendable {
    public var id: String
    public var groups: [String]
    public var prefix: String
    public var allow: Set<String>
    public var maxPayload: Int
    /// Directories a restore over MQTT may write into: the config's root and `restore_targets`.
    public var restoreRoots: [String]
    /// What `create` with `path` over MQTT may read: the configured files components' paths
    /// and `mqtt.create_paths` (and what lies below them).
    public var createRoots: [String] = []
    /// Key for HMAC signatures of destructive actions; nil when not required.
    public var hmacKey: [UInt8]?
    public var broker: BrokerSettings
    /// How long the broker keeps our session after a disconnect (MQTT 5).
    public var sessionExpiry: UInt32 = 3600
    /// Interval of the metrics timer, in seconds.
    public var metricsInterval: Double = 60
    /// Where the request-id ledger lives (survives restarts).
    public var ledgerPath: String
    /// The config's `schedule:` and its time zone.
    public var schedule: [Scheduler.Entry] = []
    public var timeZone: TimeZone = .current
    /// Where the scheduler remembers when each entry last fired.
    public var schedulePath: String = ""
    /// How often the alert checks run (they also run after every job), in seconds.
    public var alertInterval: Double = 60
    /// The types `create` accepts (built-in and configured): others are refused at once.
    public var createTypes: Set<SnapshotType> = Set(SnapshotType.builtIn)
    /// Home Assistant discovery prefix (`mqtt.homeassistant`); nil: off, and documents
    /// published before are cleared.
    public var homeAssistantPrefix: String?
    /// Where the agent remembers which discovery documents it published.
    public var discoveryPath: String = ""
    /// The types the config defines (`types:`), and whether continuous snapshots run: what
    /// the Home Assistant entities cover.
    public var configuredTypes: [SnapshotType] = []
    public var continuous = false
    /// The alert checks the agent publishes.
    public static let alertChecks = ["snapshot_age", "snapshot_size", "snapshot_integrity"]
    /// The scheduler's clock (tests inject one).
    public var clock: any ScheduleClock = SystemScheduleClock()

    public static let version = "0.1.0"
    /// Actions that need a signature when an HMAC key is configured.
    public static let destructive: Set<String> = ["restore", "recover", "delete", "prune"]

    public init(
        id: String, groups: [String], prefix: String, allow: Set<String>, maxPayload: Int, restoreRoots: [String],
        hmacKey: [UInt8]?, broker: BrokerSettings, ledgerPath: String
    ) {
        self.id = id
        self.groups = groups
        self.prefix = prefix
        self.allow = allow
        self.maxPayload = maxPayload
        self.restoreRoots = restoreRoots
        self.hmacKey = hmacKey
        self.broker = broker
        self.ledgerPath = ledgerPath
    }

    /// Settings from a loaded config, with optional overrides from the command line.
    public static func from(config: SnapshotConfig, repositoryPath: String, broker: String? = nil, id: String? = nil, groups: [String] = []) throws -> AgentSettings {
        let q = config.mqtt
        let agentID = id ?? (q.id.isEmpty ? POSIX.hostName() : q.id)
        guard SnapshotConfigNames.isTopicLevel(agentID) else {
            throw EngineError.usage("agent id \"\(agentID)\" must be a single topic level (no '/', '+', '#')")
        }
        for g in groups where !SnapshotConfigNames.isTopicLevel(g) {
            throw EngineError.usage("group \"\(g)\" must be a single topic level (no '/', '+', '#')")
        }
        if let broker, MQTTOptions.parseBroker(broker) == nil {
            throw EngineError.usage("--broker \(broker): expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        }
        var key: [UInt8]?
        if !q.hmacKeyFile.isEmpty {
            do {
                let bytes = try POSIX.readSecret(q.hmacKeyFile, what: "mqtt.hmac_key_file")
                guard !bytes.isEmpty else { throw EngineError.config(file: q.hmacKeyFile, line: nil, message: "mqtt.hmac_key_file is empty") }
                key = bytes
            } catch let e as EngineError {
                throw e
            } catch RepositoryError.key(let path, let detail) {
                throw RepositoryError.key(path: path, detail: detail)  // open to others: exit 77 as it says
            } catch {
                throw EngineError.config(file: q.hmacKeyFile, line: nil, message: "mqtt.hmac_key_file: \(error)")
            }
        }
        var settings = AgentSettings(
            id: agentID, groups: q.groups + groups.filter { !q.groups.contains($0) }, prefix: q.prefix, allow: Set(q.allow),
            maxPayload: q.maxPayload, restoreRoots: [config.root] + q.restoreTargets, hmacKey: key,
            broker: try q.brokerSettings(overrideURL: broker),
            ledgerPath: repositoryPath + "/.store/agent/\(agentID)-requests.json")
        settings.createTypes = config.creatableTypes
        settings.createRoots = config.components.compactMap { c -> String? in
            if case .files(let path, _) = c.source { return path }
            return nil
        } + q.createPaths
        settings.schedule = config.schedule
        settings.timeZone = config.timeZone
        settings.schedulePath = repositoryPath + "/.store/agent/\(agentID)-schedule.json"
        settings.homeAssistantPrefix = q.homeAssistantPrefix
        settings.discoveryPath = repositoryPath + "/.store/agent/\(agentID)-homeassistant.json"
        settings.configuredTypes = config.types.keys.sorted()
        settings.continuous = !config.continuous.isEmpty
        return settings
    }

    // MARK: topics

    public var commandFilter: String { "\(prefix)/cmd/#" }
    public var statusBase: String { "\(prefix)/status/\(id)" }
    public var availabilityTopic: String { statusBase + "/availability" }
    public var stateTopic: String { statusBase + "/state" }
    public var progressTopic: String { statusBase + "/progress" }
    public var metricsTopic: String { statusBase + "/metrics" }
    public var continuousTopic: String { statusBase + "/continuous" }
    public var replicationTopic: String { statusBase + "/replication" }
    public func responseTopic(_ action: String) -> String { statusBase + "/response/" + action }
    public func alertTopic(_ check: String) -> String { statusBase + "/alerts/" + check }
}

enum SnapshotConfigNames {
    static func isTopicLevel(_ s: String) -> Bool {
        !s.isEmpty && !s.contains("/") && !s.contains("+") && !s.contains("#")
    }
}
