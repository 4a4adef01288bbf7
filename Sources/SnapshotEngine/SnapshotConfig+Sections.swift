import Foundation
import SnapshotCore
import SnapshotMQTT
import Yams

/// The sections of `configs/snapshots.yaml`, one reader each (called from `parse` in file
/// order of the keys it knows). Each validates its section completely and names the
/// file, line and key of the first problem.
extension SnapshotConfig {
    /// A path from the file: relative paths resolve against `root`.
    func path(_ s: String) -> String { POSIX.absolute(s, relativeTo: root) }

    /// `components:` — the components, in file order.
    mutating func readComponents(_ v: Yams.Node, _ r: ConfigReader) throws {
        self.components = []
        for (keyNode, value) in try r.orderedMapping(v, "components") {
            let name = try r.string(keyNode, "component name")
            guard Self.isValidName(name) else {
                throw r.error(keyNode, "component name \"\(name)\" must be letters, digits, '_' or '-'")
            }
            guard !self.components.contains(where: { $0.name == name }) else {
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
                source = .files(path: path(try r.string(m["path"]!, where_ + ".path")), exclude: try m["exclude"].map { try r.strings($0, where_ + ".exclude") } ?? [])
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
            self.components.append((name, source))
        }
    }

    /// `types:` — snapshot type → components.
    mutating func readTypes(_ v: Yams.Node, _ r: ConfigReader) throws {
        self.types = [:]
        for (keyNode, value) in try r.orderedMapping(v, "types") {
            let name = try r.string(keyNode, "type name")
            guard let type = SnapshotType(name) else {
                throw r.error(keyNode, "types: \"\(name)\" is not a valid type name (\(SnapshotType.nameRule))")
            }
            guard type != .preRestore, type.componentsFrom == type else {
                throw r.error(keyNode, "types: \(type) cannot be configured (\(type == .preRestore ? "in-place restores take it" : "it captures full's components"))")
            }
            let names = try r.strings(value, "types.\(type)")
            for n in names where !self.components.contains(where: { $0.name == n }) {
                throw r.error(value, "types.\(type) names unknown component \"\(n)\"")
            }
            self.types[type] = names
        }
    }

    /// `continuous:` — `[{components: [...], debounce: "2s", max_interval: "60s"}]`; every
    /// component a files component, named once.
    mutating func readContinuous(_ v: Yams.Node, _ r: ConfigReader) throws {
        guard case .sequence(let items) = v else { throw r.error(v, "continuous must be a list of {components, debounce, max_interval}") }
        var seen = Set<String>()
        for item in items {
            let m = try r.mapping(item, "continuous entry", allowed: ["components", "debounce", "max_interval"])
            guard let c = m["components"] else { throw r.error(item, "continuous entry needs components (files components to watch)") }
            let names = try r.strings(c, "continuous.components")
            guard !names.isEmpty else { throw r.error(c, "continuous.components must name at least one files component") }
            for n in names {
                guard let source = component(n) else {
                    throw r.error(c, "continuous.components names unknown component \"\(n)\" (configured: \(components.map(\.name).joined(separator: ", ")))")
                }
                guard case .files = source else { throw r.error(c, "continuous.components: \(n) is a \(source.kind) component; only files components can be watched") }
                guard seen.insert(n).inserted else { throw r.error(c, "continuous.components: \(n) is named twice") }
            }
            func duration(_ key: String, _ fallback: Double) throws -> Double {
                guard let n = m[key] else { return fallback }
                guard let d = AlertThresholds.parseDuration(try r.string(n, "continuous.\(key)")), d >= 0.05, d <= 86400 else {
                    throw r.error(n, "continuous.\(key) must be a duration from 0.05s to 1d, like 2s or 1m")
                }
                return d
            }
            let entry = ContinuousEntry(components: names, debounce: try duration("debounce", 1), maxInterval: try duration("max_interval", 60))
            guard entry.maxInterval >= entry.debounce else {
                throw r.error(m["max_interval"] ?? item, "continuous.max_interval (\(Self.seconds(entry.maxInterval))) must not be shorter than debounce (\(Self.seconds(entry.debounce)))")
            }
            continuous.append(entry)
        }
    }

    /// `replicate:` — `[{to: URL or path, types: [T…]}]` (no types: every type).
    mutating func readReplicate(_ v: Yams.Node, _ r: ConfigReader) throws {
        guard case .sequence(let items) = v else { throw r.error(v, "replicate must be a list of {to, types}") }
        let known = Set(SnapshotType.builtIn).union(types.keys).union([.continuous])
        for item in items {
            let m = try r.mapping(item, "replicate entry", allowed: ["to", "types"])
            guard let t = m["to"] else { throw r.error(item, "replicate entry needs to (s3://BUCKET/PREFIX or a path)") }
            let text = try r.string(t, "replicate.to")
            if let problem = Self.repositoryURLProblem(text) { throw r.error(t, "replicate.to: \(problem)") }
            let to = S3Location(text)?.description ?? path(text)
            guard to != repository else { throw r.error(t, "replicate.to is the repository itself") }
            guard !replicate.contains(where: { $0.to == to }) else { throw r.error(t, "replicate.to: \(to) is named twice") }
            var list: [SnapshotType] = []
            if let n = m["types"] {
                for name in try r.strings(n, "replicate.types") {
                    guard let type = SnapshotType(name), known.contains(type) else {
                        throw r.error(n, "replicate.types: \(name) is not a snapshot type of this config (\(known.map(\.name).sorted().joined(separator: ", ")))")
                    }
                    list.append(type)
                }
            }
            replicate.append(ReplicationTarget(to: to, types: list))
        }
    }

    /// `2 s`, `0.25 s`: a duration from the config, for messages.
    public static func seconds(_ d: Double) -> String {
        d == d.rounded() ? "\(Int(d)) s" : String(format: "%.2f s", d)
    }

    /// `environments:` — named places for `test-recovery --environment`.
    mutating func readEnvironments(_ v: Yams.Node, _ r: ConfigReader) throws {
        for (keyNode, value) in try r.orderedMapping(v, "environments") {
            let name = try r.string(keyNode, "environment name")
            guard Self.isValidName(name) else { throw r.error(keyNode, "environment name \"\(name)\" must be letters, digits, '_' or '-'") }
            let m = try r.mapping(value, "environments.\(name)", allowed: ["root", "health_check"])
            guard let root = m["root"] else { throw r.error(value, "environments.\(name) needs root (the directory the copy is restored into)") }
            let dir = path(try r.string(root, "environments.\(name).root"))
            guard dir != "/" else { throw r.error(root, "environments.\(name).root must not be /") }
            self.environments[name] = RecoveryEnvironment(
                root: dir, healthCheck: try m["health_check"].map { try r.string($0, "environments.\(name).health_check") } ?? "")
        }
    }

    /// `sanitize:` — `patterns: [{name, regex}]` and `keys: [...]`; every regex must compile.
    mutating func readSanitize(_ v: Yams.Node, _ r: ConfigReader) throws {
        let m = try r.mapping(v, "sanitize", allowed: ["patterns", "keys"])
        if let p = m["patterns"] {
            guard case .sequence(let items) = p else { throw r.error(p, "sanitize.patterns must be a list of {name, regex}") }
            for item in items {
                let e = try r.mapping(item, "sanitize.patterns item", allowed: ["name", "regex"])
                guard let n = e["name"], let x = e["regex"] else { throw r.error(item, "sanitize.patterns items need name and regex") }
                let name = try r.string(n, "sanitize.patterns name"), regex = try r.string(x, "sanitize.patterns regex")
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { throw r.error(n, "sanitize.patterns name \"\(name)\" must be letters, digits or '_'") }
                do {
                    _ = try NSRegularExpression(pattern: regex)
                } catch {
                    throw r.error(x, "sanitize.patterns \(name): not a valid regular expression")
                }
                sanitizePatterns.append((name, regex))
            }
        }
        if let k = m["keys"] { sanitizeKeys = try r.strings(k, "sanitize.keys").filter { !$0.isEmpty } }
    }

    /// `hooks:` — the restore hooks.
    mutating func readHooks(_ v: Yams.Node, _ r: ConfigReader) throws {
        let m = try r.mapping(v, "hooks", allowed: ["stop_services", "start_services", "health_check"])
        for (k, n) in m { self.hooks[k] = try r.string(n, "hooks.\(k)") }
    }

    /// `mqtt:` — the agent's broker and what it accepts.
    mutating func readMQTT(_ v: Yams.Node, _ r: ConfigReader) throws {
        let m = try r.mapping(v, "mqtt", allowed: ["broker", "id", "groups", "prefix", "username", "password_file", "tls", "allow", "max_payload", "restore_targets", "create_paths", "hmac_key_file", "homeassistant"])
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
        if let n = m["password_file"] { q.passwordFile = try r.string(n, "mqtt.password_file").isEmpty ? "" : path(try r.string(n, "mqtt.password_file")) }
        if let n = m["tls"] {
            let t = try r.mapping(n, "mqtt.tls", allowed: ["ca", "cert", "key"])
            func file(_ k: String) throws -> String {
                guard let v = t[k] else { return "" }
                let s = try r.string(v, "mqtt.tls.\(k)")
                return s.isEmpty ? "" : path(s)
            }
            q.tls = MQTTTLS(caFile: try file("ca"), certFile: try file("cert"), keyFile: try file("key"))
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
        if let n = m["restore_targets"] { q.restoreTargets = try r.strings(n, "mqtt.restore_targets").map { path($0) } }
        if let n = m["create_paths"] { q.createPaths = try r.strings(n, "mqtt.create_paths").map { path($0) } }
        if let n = m["homeassistant"] {
            let h = try r.mapping(n, "mqtt.homeassistant", allowed: ["discovery_prefix"])
            let prefix = try h["discovery_prefix"].map { try r.string($0, "mqtt.homeassistant.discovery_prefix") } ?? "homeassistant"
            guard !prefix.isEmpty, !prefix.contains("+"), !prefix.contains("#"), !prefix.hasPrefix("/"), !prefix.hasSuffix("/") else {
                throw r.error(h["discovery_prefix"] ?? n, "mqtt.homeassistant.discovery_prefix must be a topic without wildcards or a leading or trailing '/' (Home Assistant's default: homeassistant)")
            }
            q.homeAssistantPrefix = prefix
        }
        if let n = m["hmac_key_file"] { q.hmacKeyFile = try r.string(n, "mqtt.hmac_key_file").isEmpty ? "" : path(try r.string(n, "mqtt.hmac_key_file")) }
        self.mqtt = q
    }

    /// `schedule:` — the agent's cron entries.
    mutating func readSchedule(_ v: Yams.Node, _ r: ConfigReader) throws {
        guard case .sequence(let seq) = v else { throw r.error(v, "schedule must be a list") }
        self.schedule = try seq.map { item in
            let m = try r.mapping(item, "schedule entry", allowed: ["cron", "type", "action", "snapshot"])
            guard let c = m["cron"] else { throw r.error(item, "schedule entry needs cron") }
            let cron: CronExpression
            do {
                cron = try CronExpression(try r.string(c, "schedule.cron"))
            } catch let e as CronExpression.ParseError {
                throw r.error(c, "schedule.cron: \(e)")
            }
            guard cron.next(after: Date(), in: TimeZone(identifier: "UTC")!) != nil else {
                throw r.error(c, "schedule.cron \"\(cron.text)\" never fires: no date matches its day-of-month, month and weekday fields")
            }
            let action = try m["action"].map { try r.string($0, "schedule.action") } ?? "create"
            guard ScheduleEntry.actions.contains(action) else {
                throw r.error(m["action"]!, "schedule.action must be one of \(ScheduleEntry.actions.joined(separator: ", ")), not \(action)")
            }
            if action == "create" {
                guard let t = m["type"] else { throw r.error(item, "schedule entry needs cron and type") }
                let name = try r.string(t, "schedule.type")
                guard let type = SnapshotType(name), self.types[type.componentsFrom] != nil else {
                    throw r.error(t, "schedule.type must be a configured type (\(self.configuredTypes.map(\.name).joined(separator: ", "))), not \(name)")
                }
                return ScheduleEntry(cron: cron, work: .create(type))
            }
            return ScheduleEntry(cron: cron, work: .testRecovery(snapshot: try m["snapshot"].map { try r.string($0, "schedule.snapshot") } ?? "latest"))
        }
    }

    /// `prune:` — prune settings.
    mutating func readPrune(_ v: Yams.Node, _ r: ConfigReader) throws {
        let m = try r.mapping(v, "prune", allowed: ["repack_threshold"])
        if let t = m["repack_threshold"] {
            guard case .scalar(let sc) = t, let value = Double(sc.string), value > 0, value <= 1 else {
                throw r.error(t, "prune.repack_threshold must be a number in (0, 1], the unused share of a pack that makes prune repack it")
            }
            self.repackThreshold = value
        }
    }

    /// `timezone:` — the schedule's time zone.
    mutating func readTimezone(_ v: Yams.Node, _ r: ConfigReader) throws {
        let name = try r.string(v, "timezone")
        guard let tz = TimeZone(identifier: name) else { throw r.error(v, "timezone \"\(name)\" is not a known time zone (e.g. UTC, Europe/Berlin)") }
        self.timeZone = tz
    }
}

/// One `replicate:` entry: every new snapshot of `types` (empty: of every type) is copied to
/// the repository at `to`, and retention there follows the same policy.
public struct ReplicationTarget: Sendable, Equatable {
    public var to: String
    public var types: [SnapshotType]

    public init(to: String, types: [SnapshotType]) {
        self.to = to
        self.types = types
    }

    /// Whether a snapshot of `type` goes there.
    public func wants(_ type: SnapshotType) -> Bool { types.isEmpty || types.contains(type) }
}
