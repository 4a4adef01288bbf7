import Foundation
import SnapshotCore
import SnapshotMQTT
import Yams

/// Where a component's data comes from (`configs/snapshots.yaml` → `components`).
public enum ComponentSource: Sendable, Equatable {
    /// A file or directory; `path` is absolute after loading.
    case files(path: String, exclude: [String])
    /// Retained messages under these topic filters.
    case mqtt(filters: [String])
    /// A command's standard output.
    case command(command: String, parse: String?, output: String?, optional: Bool)
    /// Environment variables matching these patterns.
    case env(patterns: [String])
    /// Qdrant collections through its snapshot API (all when `collections` is empty).
    case qdrant(url: String, collections: [String], apiKeyEnv: String)

    public var kind: ComponentKind {
        switch self {
        case .files: return .files
        case .mqtt: return .mqtt
        case .command: return .command
        case .env: return .env
        case .qdrant: return .qdrant
        }
    }
}

/// The agent and components configuration (docs/configuration.md). Unknown keys and
/// wrong types are errors naming the file, line and key.
public struct SnapshotConfig: Sendable {
    public var file: String?
    public var root: String
    /// A local directory (absolute), or `s3://BUCKET/PREFIX`.
    public var repository: String
    /// The `repository:` mapping's endpoint, region and addressing for an S3 repository.
    public var s3: S3Settings?
    public var compressionLevel: Int
    /// Components in file order.
    public var components: [(name: String, source: ComponentSource)]
    /// Snapshot type → its components (incremental and differential use full's).
    public var types: [SnapshotType: [String]]
    public var hooks: [String: String]
    public var mqtt: MQTTSection
    public var schedule: [ScheduleEntry]
    /// Time zone of the schedule's cron expressions (`timezone:`, default the system's).
    public var timeZone: TimeZone = .current
    /// `prune: {repack_threshold: 0.2}`: repack a pack when at least this share of it is unused.
    public var repackThreshold: Double = 0.2
    public var retention: String
    public var alerts: String
    /// `environments:` — where `test-recovery --environment NAME` restores, and its check.
    public var environments: [String: RecoveryEnvironment] = [:]
    /// `sanitize:` — PII rules of one's own besides the built-in ones.
    public var sanitizePatterns: [(name: String, regex: String)] = []
    public var sanitizeKeys: [String] = []
    /// `continuous:` — files components the agent and `snapshot watch` snapshot as they change.
    public var continuous: [ContinuousEntry] = []
    /// `replicate:` — where the agent copies every new snapshot of the listed types.
    public var replicate: [ReplicationTarget] = []
    /// `metrics: {listen}` — where the agent serves Prometheus's text exposition.
    public var metricsListen: ListenAddress?

    public func component(_ name: String) -> ComponentSource? {
        components.first { $0.name == name }?.source
    }

    /// The built-in configuration, relative to `root`.
    public static func defaults(root: String) -> SnapshotConfig {
        func p(_ s: String) -> String { POSIX.absolute(s, relativeTo: root) }
        return SnapshotConfig(
            file: nil, root: root, repository: p("snapshots"), compressionLevel: 3,
            components: [
                ("configs", .files(path: p("configs"), exclude: ["*.tmp"])),
                ("storage", .files(path: p("storage"), exclude: ["*.tmp", "*.lock"])),
                ("logs", .files(path: p("logs"), exclude: [])),
                ("models", .files(path: p("models"), exclude: [])),
                ("workers", .mqtt(filters: ["workers/+/status", "workers/+/health"])),
                ("model_state", .mqtt(filters: ["models/+/state"])),
                ("gpu_usage", .command(
                    command: "nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv",
                    parse: "csv", output: "gpu_usage.json", optional: true)),
                ("environment", .env(patterns: ["MQTT_*", "QDRANT_*", "SNAPSHOT_*"])),
            ],
            types: [
                .system: ["configs", "storage", "models", "workers", "logs"],
                .config: ["configs", "environment"],
                .data: ["storage"],
                .models: ["models", "model_state", "gpu_usage"],
                .full: ["configs", "storage", "models", "workers", "logs", "model_state", "gpu_usage", "environment"],
            ],
            hooks: ["stop_services": "", "start_services": "", "health_check": ""],
            mqtt: MQTTSection(), schedule: [], retention: p("configs/retention.yaml"), alerts: p("configs/snapshot_alerts.yaml"))
    }

    /// Loads `path`. A missing file gives the defaults when `required` is false (the default
    /// path) and an error when the user named it.
    public static func load(path: String, required: Bool, workingDirectory: String = POSIX.currentDirectory()) throws -> SnapshotConfig {
        let absolute = POSIX.absolute(path, relativeTo: workingDirectory)
        guard POSIX.exists(absolute) else {
            if required { throw EngineError.config(file: path, line: nil, message: "file not found") }
            return defaults(root: workingDirectory)
        }
        let bytes: [UInt8]
        do {
            bytes = try POSIX.readFile(absolute)
        } catch {
            throw EngineError.config(file: path, line: nil, message: "\(error)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw EngineError.config(file: path, line: nil, message: "not UTF-8 text")
        }
        return try parse(text, file: path, workingDirectory: workingDirectory)
    }

    /// Parses configuration text; `file` is used in messages.
    public static func parse(_ text: String, file: String, workingDirectory: String) throws -> SnapshotConfig {
        let node: Yams.Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch YamlError.duplicatedKeysInMapping(let duplicates, _) {
            let key = duplicates.sorted().first ?? ""
            throw EngineError.config(file: file, line: Self.secondLine(defining: key, in: text), message: "duplicate key \"\(key)\"")
        } catch let e as YamlError {
            throw EngineError.config(file: file, line: Self.line(of: e), message: "invalid YAML: \(Self.summary(of: e))")
        } catch {
            throw EngineError.config(file: file, line: nil, message: "invalid YAML: \(error)")
        }
        let r = ConfigReader(file: file)
        guard let node else { return defaults(root: workingDirectory) }
        let top = try r.mapping(node, "top level", allowed: ["root", "repository", "compression", "components", "types", "hooks", "mqtt", "schedule", "timezone", "prune", "retention", "alerts", "environments", "sanitize", "continuous", "replicate", "metrics"])
        var rootDir = workingDirectory
        if let v = top["root"] { rootDir = POSIX.absolute(try r.string(v, "root"), relativeTo: workingDirectory) }
        var config = defaults(root: rootDir)
        config.file = file
        if let v = top["repository"] {
            var text: String
            if case .mapping = v {
                let m = try r.mapping(v, "repository", allowed: ["url", "path", "endpoint", "region", "path_style"])
                guard let u = m["url"] ?? m["path"] else { throw r.error(v, "repository: give url (s3://BUCKET/PREFIX) or path") }
                text = try r.string(u, "repository.url")
                if let location = S3Location(text) {
                    var s = S3Settings(location: location)
                    if let e = m["endpoint"] { s.endpoint = try r.string(e, "repository.endpoint") }
                    if let g = m["region"] { s.region = try r.string(g, "repository.region") }
                    if let p = m["path_style"] { s.pathStyle = try r.bool(p, "repository.path_style") }
                    if let problem = s.endpointProblem { throw r.error(m["endpoint"] ?? v, "repository: \(problem)") }
                    config.s3 = s
                } else if m["endpoint"] != nil || m["region"] != nil || m["path_style"] != nil {
                    throw r.error(v, "repository: endpoint, region and path_style are for an s3:// url")
                }
            } else {
                text = try r.string(v, "repository")
            }
            if let problem = Self.repositoryURLProblem(text) { throw r.error(v, "repository: \(problem)") }
            config.repository = S3Location(text)?.description ?? config.path(text)
        }
        if let v = top["compression"] {
            let m = try r.mapping(v, "compression", allowed: ["level"])
            if let l = m["level"] {
                let level = try r.int(l, "compression.level")
                guard (1...19).contains(level) else { throw r.error(l, "compression.level must be 1..19, got \(level)") }
                config.compressionLevel = level
            }
        }
        if let v = top["components"] { try config.readComponents(v, r) }
        if let v = top["types"] { try config.readTypes(v, r) }
        if let v = top["environments"] { try config.readEnvironments(v, r) }
        if let v = top["sanitize"] { try config.readSanitize(v, r) }
        if let v = top["continuous"] { try config.readContinuous(v, r) }
        if let v = top["replicate"] { try config.readReplicate(v, r) }
        if let v = top["metrics"] {
            let m = try r.mapping(v, "metrics", allowed: ["listen"])
            guard let l = m["listen"] else { throw r.error(v, "metrics needs listen (HOST:PORT, such as 127.0.0.1:9464)") }
            let text = try r.string(l, "metrics.listen")
            guard let address = ListenAddress(text) else { throw r.error(l, "metrics.listen: \(text) is not HOST:PORT (127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464)") }
            config.metricsListen = address
        }
        if let v = top["hooks"] { try config.readHooks(v, r) }
        if let v = top["mqtt"] { try config.readMQTT(v, r) }
        if let v = top["schedule"] { try config.readSchedule(v, r) }
        if let v = top["prune"] { try config.readPrune(v, r) }
        if let v = top["timezone"] { try config.readTimezone(v, r) }
        if let v = top["retention"] { config.retention = config.path(try r.string(v, "retention")) }
        if let v = top["alerts"] { config.alerts = config.path(try r.string(v, "alerts")) }
        return config
    }

    /// The storage of a repository location: a local directory, or an S3 client with the
    /// `repository:` section's endpoint, region and addressing (when it names an S3
    /// repository) and the environment's credentials.
    public func storage(for location: String, environment: [String: String]) throws -> any RepositoryStorage {
        guard let s3 = S3Location(location) else { return LocalStorage(root: location) }
        var configured = self.s3
        configured?.location = s3
        return try S3Storage.open(location, configured: configured, environment: environment)
    }

    /// Why a repository given as `scheme://…` cannot be used (nil for a plain path): it is
    /// never taken for a local directory named `scheme:`.
    public static func repositoryURLProblem(_ text: String) -> String? {
        guard let r = text.range(of: "://") else { return nil }
        let scheme = text[..<r.lowerBound]
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) else { return nil }
        if scheme == "s3" {
            return S3Location(text).flatMap { $0.problem.map { "\(text): \($0)" } }
        }
        return "\(text): \(scheme):// is not a repository location (a local path, or s3://BUCKET/PREFIX)"
    }

    static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c == 45 || c == 46
        } && s != "." && s != ".." && !s.hasPrefix(".")
    }

    /// The line of the second `key:` in `text` (Yams reports duplicates without a position).
    static func secondLine(defining key: String, in text: String) -> Int? {
        var seen = 0
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "-" }
            if trimmed.hasPrefix(key + ":") || trimmed.hasPrefix("\"\(key)\":") {
                seen += 1
                if seen == 2 { return i + 1 }
            }
        }
        return nil
    }

    static func line(of e: YamlError) -> Int? {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }

    static func summary(of e: YamlError) -> String {
        switch e {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        default:
            return "\(e)".split(separator: "\n").first.map(String.init) ?? "\(e)"
        }
    }
}

/// The `mqtt:` section: how the agent and MQTT components reach the broker, and what the
/// agent accepts.
public struct MQTTSection: Sendable, Equatable {
    /// Every action of topics.md.
    public static let actions = ["create", "verify", "restore", "list", "show", "prune", "delete", "monitor", "test-recovery", "recover", "cancel", "ping"]

    public var broker = "mqtt://127.0.0.1:1883"
    /// Agent id; empty means the host name.
    public var id = ""
    public var groups: [String] = []
    public var prefix = "snapshots"
    public var username = ""
    public var passwordFile = ""
    public var tls = MQTTTLS()
    public var allow = MQTTSection.actions
    public var maxPayload = 65536
    public var restoreTargets: [String] = []
    /// Paths besides the configured files components that `create --path` over MQTT may read.
    public var createPaths: [String] = []
    public var hmacKeyFile = ""
    /// `homeassistant: {discovery_prefix: …}`: Home Assistant MQTT discovery under this
    /// prefix; nil when the option is absent (documents published before are cleared).
    public var homeAssistantPrefix: String?

    public init() {}

    /// Broker settings, reading the password file (trailing newline stripped).
    public func brokerSettings(overrideURL: String? = nil) throws -> BrokerSettings {
        var password: String?
        if !passwordFile.isEmpty {
            do {
                password = String(decoding: try POSIX.readSecret(passwordFile, what: "mqtt.password_file"), as: UTF8.self)
            } catch RepositoryError.key(let path, let detail) {
                throw RepositoryError.key(path: path, detail: detail)  // open to others: exit 77 as it says
            } catch {
                throw EngineError.config(file: passwordFile, line: nil, message: "mqtt.password_file: \(error)")
            }
        }
        let url = overrideURL ?? broker
        let usesTLS = MQTTOptions.parseBroker(url)?.tls ?? false
        return BrokerSettings(url: url, username: username.isEmpty ? nil : username, password: password, tls: usesTLS ? tls : nil)
    }
}

/// One `environments:` entry: a directory where `test-recovery --environment NAME` restores
/// a snapshot (and leaves it, for whatever runs there next), and a command that checks it.
public struct RecoveryEnvironment: Sendable, Equatable {
    /// Absolute; components are restored as `<root>/<component>/`.
    public var root: String
    /// Run from the config's root with `SNAPSHOT_RECOVERY_ROOT` set; empty: none.
    public var healthCheck: String

    public init(root: String, healthCheck: String) {
        self.root = root
        self.healthCheck = healthCheck
    }
}

/// One `schedule:` entry: a cron expression and what it runs — an `--auto` snapshot of a
/// type followed by retention (`action: create`, the default), or a `test-recovery` of a
/// snapshot whose outcome becomes the `snapshot_integrity` alert.
public struct ScheduleEntry: Sendable, Equatable {
    public static let actions = ["create", "test-recovery"]

    public enum Work: Sendable, Equatable {
        case create(SnapshotType)
        case testRecovery(snapshot: String)
    }

    public var cron: CronExpression
    public var work: Work

    public init(cron: CronExpression, work: Work) {
        self.cron = cron
        self.work = work
    }

    /// What the entry runs, for messages: `system` or `test-recovery of latest`.
    public var what: String {
        switch work {
        case .create(let type): return type.name
        case .testRecovery(let snapshot): return "test-recovery of \(snapshot)"
        }
    }
}

/// `HOST:PORT` to listen on: an IPv4 address, `localhost`, or an IPv6 address in brackets.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            guard host.contains(":"), host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else if host != "localhost" {
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else { return nil }
        }
        self.host = host == "localhost" ? "127.0.0.1" : host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
