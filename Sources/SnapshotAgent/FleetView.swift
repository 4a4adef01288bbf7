import Foundation
import SnapshotCore
import SnapshotMQTT

/// What `snapshot fleet` shows: every agent's retained status (`availability`, `state`,
/// `alerts/<check>`) folded into one row per agent, from the messages under
/// `<prefix>/status/`.
public struct FleetView: Sendable {
    public struct Agent: Sendable, Equatable {
        public var id: String
        /// `online`, `offline`, or nil before anything was heard.
        public var availability: String?
        public var state: String?
        public var queue: Int?
        /// The running job's action.
        public var job: String?
        /// Newest snapshot per type.
        public var last: [String: Last] = [:]
        /// Alert level per check.
        public var alerts: [String: String] = [:]

        public struct Last: Sendable, Equatable {
            public var id: String
            public var timestamp: String
            public var ok: Bool
        }

        /// The worst alert: its level and check (nil when none is raised).
        public var worstAlert: (level: String, check: String)? {
            let rank = ["ok": 0, "warning": 1, "critical": 2]
            guard let w = alerts.filter({ (rank[$0.value] ?? 0) > 0 }).max(by: { (rank[$0.value] ?? 0, $1.key) < (rank[$1.value] ?? 0, $0.key) }) else { return nil }
            return (w.value, w.key)
        }
    }

    public let prefix: String
    public private(set) var agents: [String: Agent] = [:]

    public init(prefix: String) { self.prefix = prefix }

    /// The subscriptions that feed it.
    public var filters: [String] {
        ["\(prefix)/status/+/availability", "\(prefix)/status/+/state", "\(prefix)/status/+/alerts/#"]
    }

    /// Folds one message in; returns whether anything shown changed.
    @discardableResult
    public mutating func apply(_ m: MQTTMessage) -> Bool {
        let levels = m.topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let base = prefix.split(separator: "/", omittingEmptySubsequences: false).count
        guard levels.count > base + 1, levels[..<base].joined(separator: "/") == prefix, levels[base] == "status" else { return false }
        let id = levels[base + 1]
        let rest = levels[(base + 2)...].joined(separator: "/")
        var a = agents[id] ?? Agent(id: id)
        let before = a
        let text = String(decoding: m.payload, as: UTF8.self)
        let doc = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any]
        switch rest {
        case "availability":
            a.availability = m.payload.isEmpty ? nil : text
        case "state":
            if m.payload.isEmpty {
                (a.state, a.queue, a.job, a.last) = (nil, nil, nil, [:])
                break
            }
            guard let doc else { return false }
            a.state = doc["state"] as? String
            a.queue = doc["queue"] as? Int
            a.job = (doc["job"] as? [String: Any])?["action"] as? String
            a.last = [:]
            for (type, v) in doc["last"] as? [String: Any] ?? [:] {
                guard let o = v as? [String: Any], let ts = o["timestamp"] as? String else { continue }
                a.last[type] = Agent.Last(id: o["id"] as? String ?? "", timestamp: ts, ok: o["ok"] as? Bool ?? true)
            }
        default:
            guard rest.hasPrefix("alerts/") else { return false }
            let check = String(rest.dropFirst("alerts/".count))
            a.alerts[check] = m.payload.isEmpty ? nil : (doc?["level"] as? String)
        }
        // A topic cleared of everything (empty retained payloads) takes the agent away.
        if a.availability == nil && a.state == nil && a.alerts.isEmpty {
            agents[id] = nil
            return before.availability != nil || before.state != nil || !before.alerts.isEmpty
        }
        agents[id] = a
        return a != before
    }

    /// "3s", "5m", "2h", "4d": how long ago.
    static func age(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }

    /// One line per agent, by id, under a header.
    public func lines(now: Date = Date()) -> [String] {
        let rows = agents.values.sorted { $0.id < $1.id }.map { a -> [String] in
            let last = a.last.sorted { $0.value.timestamp > $1.value.timestamp }.map { type, v in
                let age = Timestamp(iso8601: v.timestamp).map { Self.age(now.timeIntervalSince1970 - $0.timeInterval) } ?? "?"
                return "\(type) \(age)\(v.ok ? "" : " (failed)")"
            }
            let alert = a.worstAlert.map { "\($0.level) (\($0.check))" } ?? (a.alerts.isEmpty ? "-" : "ok")
            return [a.id, a.availability ?? "?", a.job.map { "busy: \($0)" } ?? a.state ?? "-", a.queue.map(String.init) ?? "-",
                    last.isEmpty ? "-" : last.joined(separator: ", "), alert]
        }
        let header = ["AGENT", "STATUS", "STATE", "QUEUE", "LAST SNAPSHOTS (age)", "ALERT"]
        let table = [header] + rows
        let widths = (0..<header.count).map { c in table.map { $0[c].count }.max() ?? 0 }
        return table.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
    }

    /// `--json`: an array of agents, by id.
    public func json(now: Date = Date()) -> [[String: Any]] {
        agents.values.sorted { $0.id < $1.id }.map { a in
            var last: [String: Any] = [:]
            for (type, v) in a.last {
                let age = Timestamp(iso8601: v.timestamp).map { max(0, (now.timeIntervalSince1970 - $0.timeInterval).rounded()) }
                last[type] = ["id": v.id, "timestamp": v.timestamp, "ok": v.ok, "age_s": (age as Any?) ?? NSNull()]
            }
            let worst: Any = a.worstAlert.map { ["level": $0.level, "check": $0.check] } ?? NSNull()
            return [
                "agent": a.id, "availability": (a.availability as Any?) ?? NSNull(), "state": (a.state as Any?) ?? NSNull(),
                "queue": (a.queue as Any?) ?? NSNull(), "job": (a.job as Any?) ?? NSNull(), "last": last,
                "alerts": a.alerts, "worst_alert": worst,
            ]
        }
    }
}
