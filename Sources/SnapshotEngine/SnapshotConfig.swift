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
    public var repository: String
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
        let top = try r.mapping(node, "top level", allowed: ["root", "repository", "compression", "components", "types", "hooks", "mqtt", "schedule", "timezone", "prune", "retention", "alerts", "environments"])
        var rootDir = workingDirectory
        if let v = top["root"] { rootDir = POSIX.absolute(try r.string(v, "root"), relativeTo: workingDirectory) }
        var config = defaults(root: rootDir)
        config.file = file
        func p(_ s: String) -> String { POSIX.absolute(s, relativeTo: rootDir) }
        if let v = top["repository"] { config.repository = p(try r.string(v, "repository")) }
        if let v = top["compression"] {
            let m = try r.mapping(v, "compression", allowed: ["level"])
            if let l = m["level"] {
                let level = try r.int(l, "compression.level")
                guard (1...19).contains(level) else { throw r.error(l, "compression.level must be 1..19, got \(level)") }
                config.compressionLevel = level
            }
        }
        if let v = top["components"] {
            config.components = []
            for (keyNode, value) in try r.orderedMapping(v, "components") {
                let name = try r.string(keyNode, "component name")
                guard Self.isValidName(name) else {
                    throw r.error(keyNode, "component name \"\(name)\" must be letters, digits, '_' or '-'")
                }
                guard !config.components.contains(where: { $0.name == name }) else {
                    throw r.error(keyNode, "duplicate component \"\(name)\"")
                }
                let where_ = "components.\(name)"
                let m = try r.mapping(value, where_, allowed: ["path", "exclude", "mqtt", "command", "parse", "output", "optional", "env", "qdrant", "collections", "api_key_env"])
                let kinds = ["path", "mqtt", "command", "env", "qdrant"].filter { m[$0] != nil }
                guard kinds.count == 1 else {
                    throw r.error(value, "\(where_) needs exactly one of path, mqtt, command, env, qdrant (has \(kinds.isEmpty ? "none" : kinds.joined(separator: ", ")))")
                }
                let source: ComponentSource
                switch kinds[0] {
                case "path":
                    source = .files(path: p(try r.string(m["path"]!, where_ + ".path")), exclude: try m["exclude"].map { try r.strings($0, where_ + ".exclude") } ?? [])
                case "mqtt":
                    source = .mqtt(filters: try r.strings(m["mqtt"]!, where_ + ".mqtt"))
                case "command":
                    let parse = try m["parse"].map { try r.string($0, where_ + ".parse") }
                    if let parse, parse != "csv" { throw r.error(m["parse"]!, "\(where_).parse must be csv") }
                    source = .command(
                        command: try r.string(m["command"]!, where_ + ".command"), parse: parse,
                        output: try m["output"].map { try r.string($0, where_ + ".output") },
                        optional: try m["optional"].map { try r.bool($0, where_ + ".optional") } ?? false)
                case "qdrant":
                    let url = try r.string(m["qdrant"]!, where_ + ".qdrant")
                    guard url.hasPrefix("http://") || url.hasPrefix("https://"), URL(string: url) != nil else {
                        throw r.error(m["qdrant"]!, "\(where_).qdrant must be an http:// or https:// URL")
                    }
                    source = .qdrant(url: url, collections: try m["collections"].map { try r.strings($0, where_ + ".collections") } ?? [],
                                     apiKeyEnv: try m["api_key_env"].map { try r.string($0, where_ + ".api_key_env") } ?? "QDRANT_API_KEY")
                default:
                    source = .env(patterns: try r.strings(m["env"]!, where_ + ".env"))
                }
                let allowedExtras: Set<String> = switch source {
                case .files: ["path", "exclude"]
                case .mqtt: ["mqtt"]
                case .command: ["command", "parse", "output", "optional"]
                case .env: ["env"]
                case .qdrant: ["qdrant", "collections", "api_key_env"]
                }
                for (k, v) in m where !allowedExtras.contains(k) {
                    throw r.error(v, "\(where_).\(k) does not apply to a \(source.kind) component")
                }
                config.components.append((name, source))
            }
        }
        if let v = top["types"] {
            config.types = [:]
            for (keyNode, value) in try r.orderedMapping(v, "types") {
                let name = try r.string(keyNode, "type name")
                guard let type = SnapshotType(name) else {
                    throw r.error(keyNode, "types: \"\(name)\" is not a valid type name (\(SnapshotType.nameRule))")
                }
                guard type != .preRestore, type.componentsFrom == type else {
                    throw r.error(keyNode, "types: \(type) cannot be configured (\(type == .preRestore ? "in-place restores take it" : "it captures full's components"))")
                }
                let names = try r.strings(value, "types.\(type)")
                for n in names where !config.components.contains(where: { $0.name == n }) {
                    throw r.error(value, "types.\(type) names unknown component \"\(n)\"")
                }
                config.types[type] = names
            }
        }
        if let v = top["environments"] {
            for (keyNode, value) in try r.orderedMapping(v, "environments") {
                let name = try r.string(keyNode, "environment name")
                guard Self.isValidName(name) else { throw r.error(keyNode, "environment name \"\(name)\" must be letters, digits, '_' or '-'") }
                let m = try r.mapping(value, "environments.\(name)", allowed: ["root", "health_check"])
                guard let root = m["root"] else { throw r.error(value, "environments.\(name) needs root (the directory the copy is restored into)") }
                let dir = p(try r.string(root, "environments.\(name).root"))
                guard dir != "/" else { throw r.error(root, "environments.\(name).root must not be /") }
                config.environments[name] = RecoveryEnvironment(
                    root: dir, healthCheck: try m["health_check"].map { try r.string($0, "environments.\(name).health_check") } ?? "")
            }
        }
        if let v = top["hooks"] {
            let m = try r.mapping(v, "hooks", allowed: ["stop_services", "start_services", "health_check"])
            for (k, n) in m { config.hooks[k] = try r.string(n, "hooks.\(k)") }
        }
        if let v = top["mqtt"] {
            let m = try r.mapping(v, "mqtt", allowed: ["broker", "id", "groups", "prefix", "username", "password_file", "tls", "allow", "max_payload", "restore_targets", "hmac_key_file"])
            var q = MQTTSection()
            if let n = m["broker"] {
                q.broker = try r.string(n, "mqtt.broker")
                guard MQTTOptions.parseBroker(q.broker) != nil else { throw r.error(n, "mqtt.broker must look like mqtt://HOST:PORT or mqtts://HOST:PORT, not \"\(q.broker)\"") }
            }
            if let n = m["id"] { q.id = try r.string(n, "mqtt.id") }
            if let n = m["groups"] { q.groups = try r.strings(n, "mqtt.groups") }
            if let n = m["prefix"] {
                q.prefix = try r.string(n, "mqtt.prefix")
                guard !q.prefix.isEmpty, !q.prefix.contains("+"), !q.prefix.contains("#"), !q.prefix.hasSuffix("/") else {
                    throw r.error(n, "mqtt.prefix must be a topic without wildcards or a trailing '/'")
                }
            }
            for (key, value) in [("id", q.id)] + q.groups.map({ ("groups", $0) }) where value.contains(where: { "+#/".contains($0) }) {
                throw r.error(m[key]!, "mqtt.\(key) \"\(value)\" must not contain '/', '+' or '#'")
            }
            if let n = m["username"] { q.username = try r.string(n, "mqtt.username") }
            if let n = m["password_file"] { q.passwordFile = try r.string(n, "mqtt.password_file").isEmpty ? "" : p(try r.string(n, "mqtt.password_file")) }
            if let n = m["tls"] {
                let t = try r.mapping(n, "mqtt.tls", allowed: ["ca", "cert", "key"])
                func path(_ k: String) throws -> String {
                    guard let v = t[k] else { return "" }
                    let s = try r.string(v, "mqtt.tls.\(k)")
                    return s.isEmpty ? "" : p(s)
                }
                q.tls = MQTTTLS(caFile: try path("ca"), certFile: try path("cert"), keyFile: try path("key"))
            }
            if let n = m["allow"] {
                q.allow = try r.strings(n, "mqtt.allow")
                for a in q.allow where !MQTTSection.actions.contains(a) {
                    throw r.error(n, "mqtt.allow: unknown action \"\(a)\" (actions: \(MQTTSection.actions.joined(separator: ", ")))")
                }
            }
            if let n = m["max_payload"] {
                q.maxPayload = try r.int(n, "mqtt.max_payload")
                guard q.maxPayload > 0 && q.maxPayload <= 268_435_455 else { throw r.error(n, "mqtt.max_payload must be 1..268435455") }
            }
            if let n = m["restore_targets"] { q.restoreTargets = try r.strings(n, "mqtt.restore_targets").map { p($0) } }
            if let n = m["hmac_key_file"] { q.hmacKeyFile = try r.string(n, "mqtt.hmac_key_file").isEmpty ? "" : p(try r.string(n, "mqtt.hmac_key_file")) }
            config.mqtt = q
        }
        if let v = top["schedule"] {
            guard case .sequence(let seq) = v else { throw r.error(v, "schedule must be a list") }
            config.schedule = try seq.map { item in
                let m = try r.mapping(item, "schedule entry", allowed: ["cron", "type", "action", "snapshot"])
                guard let c = m["cron"] else { throw r.error(item, "schedule entry needs cron") }
                let cron: CronExpression
                do {
                    cron = try CronExpression(try r.string(c, "schedule.cron"))
                } catch let e as CronExpression.ParseError {
                    throw r.error(c, "schedule.cron: \(e)")
                }
                let action = try m["action"].map { try r.string($0, "schedule.action") } ?? "create"
                guard ScheduleEntry.actions.contains(action) else {
                    throw r.error(m["action"]!, "schedule.action must be one of \(ScheduleEntry.actions.joined(separator: ", ")), not \(action)")
                }
                if action == "create" {
                    guard let t = m["type"] else { throw r.error(item, "schedule entry needs cron and type") }
                    let name = try r.string(t, "schedule.type")
                    guard let type = SnapshotType(name), config.types[type.componentsFrom] != nil else {
                        throw r.error(t, "schedule.type must be a configured type (\(config.configuredTypes.map(\.name).joined(separator: ", "))), not \(name)")
                    }
                    return ScheduleEntry(cron: cron, work: .create(type))
                }
                return ScheduleEntry(cron: cron, work: .testRecovery(snapshot: try m["snapshot"].map { try r.string($0, "schedule.snapshot") } ?? "latest"))
            }
        }
        if let v = top["prune"] {
            let m = try r.mapping(v, "prune", allowed: ["repack_threshold"])
            if let t = m["repack_threshold"] {
                guard case .scalar(let sc) = t, let value = Double(sc.string), value > 0, value <= 1 else {
                    throw r.error(t, "prune.repack_threshold must be a number in (0, 1], the unused share of a pack that makes prune repack it")
                }
                config.repackThreshold = value
            }
        }
        if let v = top["timezone"] {
            let name = try r.string(v, "timezone")
            guard let tz = TimeZone(identifier: name) else { throw r.error(v, "timezone \"\(name)\" is not a known time zone (e.g. UTC, Europe/Berlin)") }
            config.timeZone = tz
        }
        if let v = top["retention"] { config.retention = p(try r.string(v, "retention")) }
        if let v = top["alerts"] { config.alerts = p(try r.string(v, "alerts")) }
        return config
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

/// Typed access to YAML nodes with file:line errors.
struct ConfigReader {
    let file: String

    func error(_ node: Yams.Node, _ message: String) -> EngineError {
        EngineError.config(file: file, line: node.mark?.line, message: message)
    }

    func orderedMapping(_ node: Yams.Node, _ what: String) throws -> [(Yams.Node, Yams.Node)] {
        guard case .mapping(let m) = node else { throw error(node, "\(what) must be a mapping") }
        return m.map { ($0.key, $0.value) }
    }

    /// A mapping with only `allowed` keys; duplicate keys are errors.
    func mapping(_ node: Yams.Node, _ what: String, allowed: Set<String>) throws -> [String: Yams.Node] {
        var out: [String: Yams.Node] = [:]
        for (k, v) in try orderedMapping(node, what) {
            let key = try string(k, "\(what) key")
            guard allowed.contains(key) else {
                throw error(k, "unknown key \"\(key)\" in \(what) (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard out[key] == nil else { throw error(k, "duplicate key \"\(key)\" in \(what)") }
            out[key] = v
        }
        return out
    }

    func string(_ node: Yams.Node, _ what: String) throws -> String {
        guard case .scalar(let s) = node else { throw error(node, "\(what) must be a string") }
        return s.string
    }

    func int(_ node: Yams.Node, _ what: String) throws -> Int {
        guard case .scalar(let s) = node, let v = Int(s.string) else { throw error(node, "\(what) must be an integer") }
        return v
    }

    func bool(_ node: Yams.Node, _ what: String) throws -> Bool {
        guard case .scalar(let s) = node else { throw error(node, "\(what) must be true or false") }
        switch s.string {
        case "true", "True", "yes": return true
        case "false", "False", "no": return false
        default: throw error(node, "\(what) must be true or false")
        }
    }

    func strings(_ node: Yams.Node, _ what: String) throws -> [String] {
        guard case .sequence(let seq) = node else { throw error(node, "\(what) must be a list") }
        return try seq.map { try string($0, what + " item") }
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
    public var hmacKeyFile = ""

    public init() {}

    /// Broker settings, reading the password file (trailing newline stripped).
    public func brokerSettings(overrideURL: String? = nil) throws -> BrokerSettings {
        var password: String?
        if !passwordFile.isEmpty {
            do {
                var text = String(decoding: try POSIX.readFile(passwordFile), as: UTF8.self)
                while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
                password = text
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
