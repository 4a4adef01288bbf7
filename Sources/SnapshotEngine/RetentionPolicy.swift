import Foundation
import SnapshotCore
import Yams

/// How many snapshots of one type to keep: the newest snapshot of each of the last `n`
/// calendar buckets (UTC hours, days, ISO weeks Monday to Sunday, months, years) per rule, plus the
/// `last` n snapshots.
public struct RetentionRule: Sendable, Equatable {
    public var last = 0
    public var hourly = 0
    public var daily = 0
    public var weekly = 0
    public var monthly = 0
    public var yearly = 0

    public init(last: Int = 0, hourly: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0, yearly: Int = 0) {
        self.last = last
        self.hourly = hourly
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
        self.yearly = yearly
    }

    public var isEmpty: Bool { last + hourly + daily + weekly + monthly + yearly == 0 }
}

/// A snapshot's verdict with the rules that keep it (`prune --dry-run`).
public struct RetentionDecision: Sendable, Equatable {
    public var snapshotID: String
    public var type: SnapshotType
    public var keep: Bool
    public var reasons: [String]
}

/// `configs/retention.yaml` (the seed's format) and the restic ≥ 0.16 `forget` semantics
/// over it: every rule is evaluated over all snapshots of a type, newest first; a rule
/// keeps the newest snapshot of each bucket it has counts for; a rule that still has counts
/// left after the oldest snapshot keeps the oldest one too (so that a young repository never
/// loses its first backup); the newest snapshot of a type is always kept; `pre-restore`
/// snapshots are kept for 7 days; types without a rule are kept whole.
public struct RetentionPolicy: Sendable, Equatable {
    public var rules: [SnapshotType: RetentionRule]
    public var preRestoreDays = 7

    public init(rules: [SnapshotType: RetentionRule]) {
        self.rules = rules
    }

    /// The type a section of retention.yaml is for: `<type>_snapshots` (`nightly_snapshots`),
    /// and the seed's `model_snapshots` for `models`.
    static func type(ofSection key: String) -> SnapshotType? {
        if key == "model_snapshots" { return .models }
        guard key.hasSuffix("_snapshots") else { return nil }
        return SnapshotType(String(key.dropLast("_snapshots".count)))
    }

    /// Loads the seed's retention file; a missing file keeps everything. A section must
    /// name one of `knownTypes` (the built-in and the configured ones), so that a typo is
    /// an error rather than a rule that never applies.
    public static func load(path: String, knownTypes: Set<SnapshotType>) throws -> RetentionPolicy {
        guard POSIX.exists(path) else { return RetentionPolicy(rules: [:]) }
        let text = String(decoding: try POSIX.readFile(path), as: UTF8.self)
        let node: Yams.Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw EngineError.config(file: path, line: nil, message: "invalid YAML: \(error)")
        }
        let r = ConfigReader(file: path)
        guard let node else { return RetentionPolicy(rules: [:]) }
        let top = try r.mapping(node, "top level", allowed: ["retention"])
        guard let section = top["retention"] else { return RetentionPolicy(rules: [:]) }
        var rules: [SnapshotType: RetentionRule] = [:]
        for (keyNode, value) in try r.orderedMapping(section, "retention") {
            let key = try r.string(keyNode, "retention key")
            guard let type = type(ofSection: key), knownTypes.contains(type) else {
                let allowed = knownTypes.subtracting([.preRestore]).sorted().map(\.retentionSection)
                throw r.error(keyNode, "unknown key \"\(key)\" in retention (allowed: \(allowed.joined(separator: ", ")); a type of your own needs its entry under types: in the config)")
            }
            guard rules[type] == nil else { throw r.error(keyNode, "retention has two sections for \(type)") }
            let m = try r.mapping(value, "retention.\(key)", allowed: ["last", "hourly", "daily", "weekly", "monthly", "yearly"])
            var rule = RetentionRule()
            for (k, v) in m {
                let n = try r.int(v, "retention.\(key).\(k)")
                guard n >= 0 else { throw r.error(v, "retention.\(key).\(k) must be 0 or more") }
                switch k {
                case "last": rule.last = n
                case "hourly": rule.hourly = n
                case "daily": rule.daily = n
                case "weekly": rule.weekly = n
                case "monthly": rule.monthly = n
                default: rule.yearly = n
                }
            }
            rules[type] = rule
        }
        return RetentionPolicy(rules: rules)
    }

    static let utc: Calendar = {
        var c = Calendar(identifier: .iso8601)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    /// The bucket of a time for a rule: `2024-01-15T10`, `2024-01-15`, `2024-W03` (ISO week),
    /// `2024-01`, `2024`.
    static func bucket(_ rule: String, _ t: Timestamp) -> String {
        let date = Date(timeIntervalSince1970: TimeInterval(t.seconds))
        switch rule {
        case "hourly":
            // Hours of UTC: whole multiples of 3600 s since the epoch.
            return String(t.seconds >= 0 ? t.seconds / 3600 : (t.seconds - 3599) / 3600)
        case "daily":
            let c = utc.dateComponents([.year, .month, .day], from: date)
            return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
        case "weekly":
            let c = utc.dateComponents([.yearForWeekOfYear, .weekOfYear], from: date)
            return String(format: "%04d-W%02d", c.yearForWeekOfYear!, c.weekOfYear!)
        case "monthly":
            let c = utc.dateComponents([.year, .month], from: date)
            return String(format: "%04d-%02d", c.year!, c.month!)
        default:
            return String(utc.component(.year, from: date))
        }
    }

    /// Decides for every snapshot (any order in, newest first out).
    public func decide(_ records: [SnapshotRecord], now: Timestamp = .now()) -> [RetentionDecision] {
        var out: [RetentionDecision] = []
        let byType = Dictionary(grouping: records, by: \.type)
        for (type, list) in byType.sorted(by: { $0.key < $1.key }) {
            let sorted = list.sorted { a, b in
                let ta = Timestamp(iso8601: a.metadata.timestamp) ?? Timestamp(seconds: 0)
                let tb = Timestamp(iso8601: b.metadata.timestamp) ?? Timestamp(seconds: 0)
                return ta != tb ? ta > tb : SnapshotCatalog.idOrder(a.id, b.id)
            }
            var reasons = [[String]](repeating: [], count: sorted.count)
            if type == .preRestore {
                for (i, r) in sorted.enumerated() {
                    let t = Timestamp(iso8601: r.metadata.timestamp) ?? now
                    if now.seconds - t.seconds < Int64(preRestoreDays) * 86400 { reasons[i].append("pre-restore within \(preRestoreDays) days") }
                }
            } else if let rule = rules[type], !rule.isEmpty {
                let times = sorted.map { Timestamp(iso8601: $0.metadata.timestamp) ?? Timestamp(seconds: 0) }
                if rule.last > 0 {
                    for i in 0..<min(rule.last, sorted.count) { reasons[i].append("last snapshot") }
                    if rule.last > sorted.count, !sorted.isEmpty { reasons[sorted.count - 1].append("oldest last snapshot") }
                }
                for (name, count) in [("hourly", rule.hourly), ("daily", rule.daily), ("weekly", rule.weekly), ("monthly", rule.monthly), ("yearly", rule.yearly)] where count > 0 {
                    var left = count
                    var lastBucket: String?
                    for i in sorted.indices where left > 0 {
                        let b = Self.bucket(name, times[i])
                        if b != lastBucket {
                            reasons[i].append("\(name) snapshot")
                            lastBucket = b
                            left -= 1
                        }
                    }
                    if left > 0, !sorted.isEmpty, !reasons[sorted.count - 1].contains("\(name) snapshot") {
                        reasons[sorted.count - 1].append("oldest \(name) snapshot")
                    }
                }
            } else {
                for i in sorted.indices { reasons[i].append("no retention rule for \(type)") }
            }
            if type != .preRestore, !sorted.isEmpty, reasons[0].isEmpty { reasons[0].append("newest snapshot") }
            for (i, r) in sorted.enumerated() {
                out.append(RetentionDecision(snapshotID: r.id, type: type, keep: !reasons[i].isEmpty, reasons: reasons[i]))
            }
        }
        return out
    }
}
