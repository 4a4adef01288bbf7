import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// `snapshot dashboard`: the fleet's retained status (FleetView) plus each agent's running
/// job's progress, served as one page that the process's own subscription keeps live through
/// Server-Sent Events, with buttons that publish `create` and `verify` commands when the
/// config's `mqtt.allow` lets them through (signed with `mqtt.hmac_key_file` when there is one).
public final class Dashboard: Sendable {
    public struct Progress: Sendable, Equatable {
        var action: String
        var phase: String
        var percent: Double
        var bytesDone: Int
        var bytesTotal: Int
        var rateBps: Double
        var etaS: Double?
        /// When the job ended: the bar stays, as it ended, for `keepFinished` seconds.
        var finished: Date?
    }

    /// How long a finished job's bar stays on the page.
    static let keepFinished: Double = 5

    struct Model: Sendable {
        var fleet: FleetView
        var progress: [String: Progress] = [:]
        var version = 0
    }

    public let prefix: String
    let broker: String
    let actions: [String]
    let types: [String]
    let hmacKey: [UInt8]?
    private let model: Mutex<Model>
    /// Publishes a command: topic, payload.
    private let publish: @Sendable (String, [UInt8]) -> Bool

    public init(prefix: String, broker: String, allow: [String], types: [String], hmacKey: [UInt8]?, publish: @escaping @Sendable (String, [UInt8]) -> Bool) {
        self.prefix = prefix
        self.broker = broker
        actions = ["create", "verify"].filter(allow.contains)
        self.types = types
        self.hmacKey = hmacKey
        self.publish = publish
        model = Mutex(Model(fleet: FleetView(prefix: prefix)))
    }

    /// What it subscribes to.
    public var filters: [String] { FleetView(prefix: prefix).filters + ["\(prefix)/status/+/progress"] }

    /// Folds a status message in.
    public func apply(_ m: MQTTMessage) {
        model.withLock { s in
            let levels = m.topic.split(separator: "/").map(String.init)
            if levels.count >= 2, levels.last == "progress", let id = levels.dropLast().last {
                guard let d = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] else { return }
                s.progress[id] = Progress(
                    action: d["action"] as? String ?? "", phase: d["phase"] as? String ?? "", percent: (d["percent"] as? NSNumber)?.doubleValue ?? 0,
                    bytesDone: (d["bytes_done"] as? NSNumber)?.intValue ?? 0, bytesTotal: (d["bytes_total"] as? NSNumber)?.intValue ?? 0,
                    rateBps: (d["rate_bps"] as? NSNumber)?.doubleValue ?? 0, etaS: (d["eta_s"] as? NSNumber)?.doubleValue)
                s.version += 1
                return
            }
            if s.fleet.apply(m) {
                // A job that ended keeps its bar a moment, as it ended; an agent that died has none.
                if let id = levels.dropLast().last {
                    let a = s.fleet.agents[id]
                    if a == nil || a?.availability == "offline" {
                        s.progress[id] = nil
                    } else if a?.job == nil, s.progress[id]?.finished == nil {
                        s.progress[id]?.finished = Date()
                    }
                }
                s.version += 1
            }
        }
    }

    public var version: Int { model.withLock { $0.version } }

    /// Drops the bars of jobs finished `keepFinished` seconds ago (a change for the page).
    func expire(now: Date = Date()) {
        model.withLock { s in
            let old = s.progress.filter { $0.value.finished.map { now.timeIntervalSince($0) > Self.keepFinished } ?? false }.keys
            guard !old.isEmpty else { return }
            for id in old { s.progress[id] = nil }
            s.version += 1
        }
    }

    /// The page's data: the fleet, each agent's progress, and what the page may ask.
    public func json() -> [UInt8] {
        let (fleet, progress) = model.withLock { ($0.fleet, $0.progress) }
        let agents: [[String: Any]] = fleet.json().map { a in
            var a = a
            if let id = a["agent"] as? String, let p = progress[id] {
                a["progress"] = ["action": p.action, "phase": p.phase, "percent": p.percent, "bytes_done": p.bytesDone, "bytes_total": p.bytesTotal,
                                 "rate_bps": p.rateBps, "eta_s": (p.etaS as Any?) ?? NSNull(), "finished": p.finished != nil]
            } else {
                a["progress"] = NSNull()
            }
            return a
        }
        let doc: [String: Any] = ["broker": broker, "prefix": prefix, "actions": actions, "types": types, "agents": agents, "now": Timestamp.now().iso8601]
        return Array((try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8))
    }

    /// The HTTP side: `/` the page, `/events` the stream, `/api/state` one snapshot of it,
    /// `POST /api/command` a button.
    public func handle(_ request: HTTPRequest) -> HTTPReply {
        switch (request.method, request.path) {
        case ("GET", "/"), ("HEAD", "/"):
            return .full(status: 200, type: "text/html; charset=utf-8", body: Array(DashboardPage.html.utf8))
        case ("GET", "/api/state"):
            return .full(status: 200, type: "application/json", body: json())
        case ("GET", "/events"):
            return .stream(type: "text/event-stream") { [self] write in
                var sent = -1
                var quiet = 0
                while true {
                    expire()
                    let v = version
                    if v != sent {
                        sent = v
                        quiet = 0
                        guard write(Array("data: ".utf8) + json() + Array("\n\n".utf8)) else { return }
                    } else {
                        quiet += 1
                        // A comment now and then finds a client that went away.
                        if quiet % 150 == 0 { guard write(Array(": keep-alive\n\n".utf8)) else { return } }
                    }
                    usleep(100_000)
                }
            }
        case ("POST", "/api/command"):
            return command(request.body)
        case (_, "/"), (_, "/events"), (_, "/api/state"):
            return .text(405, "method not allowed\n")
        default:
            return .text(404, "not found\n")
        }
    }

    /// A button: `{"agent","action","type"?}` → a command on `<prefix>/cmd/<agent>/<action>`.
    func command(_ body: [UInt8]) -> HTTPReply {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any], let agent = o["agent"] as? String,
            let action = o["action"] as? String
        else { return .text(400, "expected {\"agent\",\"action\",\"type\"}\n") }
        guard actions.contains(action) else { return .text(403, "\(action) is not allowed by this dashboard's config (mqtt.allow)\n") }
        guard SnapshotConfigNames.isTopicLevel(agent), model.withLock({ $0.fleet.agents[agent] != nil }) else { return .text(404, "no agent \(agent)\n") }
        var fields: [String: Any] = ["request_id": "dashboard-\(BlobID.random().hex.prefix(12))"]
        if action == "create" {
            let type = o["type"] as? String ?? "full"
            guard types.contains(type) else { return .text(400, "unknown type \(type)\n") }
            fields["type"] = type
        } else {
            fields["snapshot"] = "latest"
        }
        if let hmacKey {
            fields["ts"] = Int(Date().timeIntervalSince1970)
            fields["signature"] = CommandParser.sign(action: action, fields: fields, key: hmacKey)
        }
        let payload = Array((try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data())
        guard publish("\(prefix)/cmd/\(agent)/\(action)", payload) else { return .text(502, "the broker did not take the command\n") }
        return .full(status: 202, type: "application/json", body: Array((try? JSONSerialization.data(withJSONObject: ["request_id": fields["request_id"]!, "topic": "\(prefix)/cmd/\(agent)/\(action)"])) ?? Data()))
    }
}
