import Foundation
import SnapshotCore
import Yams

/// `configs/snapshot_alerts.yaml` (the seed's format).
public struct AlertThresholds: Sendable, Equatable {
    public var ageWarning: Double = 24 * 3600
    public var ageCritical: Double = 48 * 3600
    public var sizeWarning: UInt64 = 10_000_000_000
    public var sizeCritical: UInt64 = 20_000_000_000
    public var integrityInterval: Double = 3600
    public var integrityFailures: Int = 3
    /// `read_data: "1/N"`: each integrity check also re-reads the next 1/N of the packs, so
    /// every stored byte is read again every N checks; 0 (`"0"`) checks presence only.
    public var readDataSlices: Int = 0

    public init() {}

    /// Loads the file; a missing file gives the seed's defaults.
    public static func load(path: String) throws -> AlertThresholds {
        var t = AlertThresholds()
        guard POSIX.exists(path) else { return t }
        let text = String(decoding: try POSIX.readFile(path), as: UTF8.self)
        let node: Yams.Node?
        do { node = try Yams.compose(yaml: text) } catch { throw EngineError.config(file: path, line: nil, message: "invalid YAML: \(error)") }
        let r = ConfigReader(file: path)
        guard let node else { return t }
        let top = try r.mapping(node, "top level", allowed: ["alerts"])
        guard let alerts = top["alerts"] else { return t }
        let m = try r.mapping(alerts, "alerts", allowed: ["snapshot_age", "snapshot_size", "snapshot_integrity"])
        func duration(_ n: Yams.Node, _ what: String) throws -> Double {
            guard let d = parseDuration(try r.string(n, what)) else { throw r.error(n, "\(what) must be a duration like 30m, 24h, 7d") }
            return d
        }
        func size(_ n: Yams.Node, _ what: String) throws -> UInt64 {
            guard let s = parseSize(try r.string(n, what)) else { throw r.error(n, "\(what) must be a size like 500MB, 10GB, 2TiB") }
            return s
        }
        if let a = m["snapshot_age"] {
            let x = try r.mapping(a, "alerts.snapshot_age", allowed: ["warning_threshold", "critical_threshold"])
            if let v = x["warning_threshold"] { t.ageWarning = try duration(v, "alerts.snapshot_age.warning_threshold") }
            if let v = x["critical_threshold"] { t.ageCritical = try duration(v, "alerts.snapshot_age.critical_threshold") }
        }
        if let a = m["snapshot_size"] {
            let x = try r.mapping(a, "alerts.snapshot_size", allowed: ["warning_threshold", "critical_threshold"])
            if let v = x["warning_threshold"] { t.sizeWarning = try size(v, "alerts.snapshot_size.warning_threshold") }
            if let v = x["critical_threshold"] { t.sizeCritical = try size(v, "alerts.snapshot_size.critical_threshold") }
        }
        if let a = m["snapshot_integrity"] {
            let x = try r.mapping(a, "alerts.snapshot_integrity", allowed: ["check_interval", "failure_threshold", "read_data"])
            if let v = x["read_data"] {
                let text = try r.string(v, "alerts.snapshot_integrity.read_data")
                let parts = text.split(separator: "/")
                if text == "0" {
                    t.readDataSlices = 0
                } else if parts.count == 2, parts[0] == "1", let n = Int(parts[1]), (1...100_000).contains(n) {
                    t.readDataSlices = n
                } else {
                    throw r.error(v, "alerts.snapshot_integrity.read_data must be \"1/N\" (re-read a 1/N share of the data at each check) or \"0\", not \"\(text)\"")
                }
            }
            if let v = x["check_interval"] { t.integrityInterval = try duration(v, "alerts.snapshot_integrity.check_interval") }
            if let v = x["failure_threshold"] {
                t.integrityFailures = try r.int(v, "alerts.snapshot_integrity.failure_threshold")
                guard t.integrityFailures >= 1 else { throw r.error(v, "alerts.snapshot_integrity.failure_threshold must be 1 or more") }
            }
        }
        return t
    }

    /// `90s`, `30m`, `24h`, `7d`, `2w` → seconds.
    public static func parseDuration(_ s: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
        guard let u = s.last, let f = units[u], let n = Double(s.dropLast()), n >= 0, (n * f).isFinite else { return nil }
        return n * f
    }

    /// `500MB`, `10GB` (powers of 1000), `2GiB` (powers of 1024), `1024` bytes.
    public static func parseSize(_ s: String) -> UInt64? {
        let units: [(String, UInt64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
                                         ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000), ("kB", 1000), ("B", 1)]
        let t = s.trimmingCharacters(in: .whitespaces)
        let (number, factor) = units.first { t.hasSuffix($0.0) }.map { (String(t.dropLast($0.0.count)).trimmingCharacters(in: .whitespaces), $0.1) } ?? (t, 1)
        // Checked both ways: 1e30GB or 99999999999999999999B is more than a UInt64 holds.
        if let whole = UInt64(number) {
            let (bytes, overflow) = whole.multipliedReportingOverflow(by: factor)
            return overflow ? nil : bytes
        }
        guard let n = Double(number), n >= 0 else { return nil }
        return UInt64(exactly: (n * Double(factor)).rounded(.down))
    }
}

/// The level of a check (Nagios convention: exit 0, 1, 2).
public enum AlertLevel: String, Codable, Sendable, Comparable {
    case ok, warning, critical

    public var exitCode: Int32 { self == .ok ? 0 : self == .warning ? 1 : 2 }

    public static func < (a: AlertLevel, b: AlertLevel) -> Bool { a.exitCode < b.exitCode }
}

/// One check's outcome: `{"check","level","value","threshold","message"}`.
public struct CheckResult: Codable, Sendable, Equatable {
    public var check: String
    public var level: AlertLevel
    public var value: Double
    public var threshold: String
    public var message: String
}

/// `monitor --json`: `{"level","checks":[…]}`.
public struct MonitorReport: Codable, Sendable, Equatable {
    public var level: AlertLevel
    public var checks: [CheckResult]
}

/// Options of `monitor`.
public struct MonitorOptions: OperationOptions, Codable, Equatable {
    public static let metricNames = ["creation-time", "restoration-time", "compression-ratio"]
    public var checkIntegrity = false
    public var checkAge = false
    public var checkSize = false
    public var metrics: [String] = []
    public var type: SnapshotType?

    public init() {}

    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case checkIntegrity = "check_integrity"
        case checkAge = "check_age"
        case checkSize = "check_size"
        case metrics, type
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        checkIntegrity = try c.decodeIfPresent(Bool.self, forKey: .checkIntegrity) ?? false
        checkAge = try c.decodeIfPresent(Bool.self, forKey: .checkAge) ?? false
        checkSize = try c.decodeIfPresent(Bool.self, forKey: .checkSize) ?? false
        metrics = try c.decodeStrings(.metrics)
        type = try c.decodeIfPresent(SnapshotType.self, forKey: .type)
    }

    public func validate() throws {
        for m in metrics where !Self.metricNames.contains(m) {
            throw EngineError.usage("metrics must be one of \(Self.metricNames.joined(separator: ", ")), not \(m)")
        }
    }

    /// No check named: age, size and integrity.
    var effective: MonitorOptions {
        guard !checkIntegrity && !checkAge && !checkSize && metrics.isEmpty else { return self }
        var o = self
        o.checkAge = true
        o.checkSize = true
        o.checkIntegrity = true
        return o
    }
}

/// What `monitor --check-integrity` remembers between runs, and the history of
/// `test-recovery` runs for `--metrics restoration-time` (`.store/monitor/*.json`).
struct MonitorState: Codable {
    var lastCheck: Double?
    var consecutiveFailures = 0
    /// Which 1/N share of the packs the next integrity check re-reads (nil: the first).
    var readDataSlice: Int?
    /// Shares that showed damage: re-read at every check until they read clean, so that the
    /// alert stays raised while the damage is there.
    var damagedSlices: [Int]?
    var lastErrors: [String] = []
    var recoveries: [RecoveryRun] = []

    struct RecoveryRun: Codable {
        var time: Double
        var seconds: Double
        var mbPerS: Double
        var ok: Bool
    }

    static let key = ".store/monitor/state.json"

    static func load(_ storage: any RepositoryStorage) -> MonitorState {
        guard let bytes = try? storage.load(key), let s = try? JSONDecoder().decode(MonitorState.self, from: Data(bytes)) else {
            return MonitorState()
        }
        return s
    }

    func save(_ storage: any RepositoryStorage) throws {
        try storage.save(Self.key, Array(try JSONEncoder().encode(self)))
    }
}

extension SnapshotService {
    static func human(_ seconds: Double) -> String {
        if seconds >= 3 * 86400 { return String(format: "%.1fd", seconds / 86400) }
        if seconds >= 3600 { return String(format: "%.1fh", seconds / 3600) }
        if seconds >= 60 { return String(format: "%.0fm", seconds / 60) }
        return String(format: "%.0fs", seconds)
    }

    static func level(_ value: Double, warning: Double, critical: Double) -> AlertLevel {
        value >= critical ? .critical : value >= warning ? .warning : .ok
    }

    /// Runs the checks against `configs/snapshot_alerts.yaml`. `now` is injectable for tests.
    public func monitor(_ options: MonitorOptions, now: Date = Date()) throws -> MonitorReport {
        try options.validate()
        try checkKnown(options.type)
        let o = options.effective
        let thresholds = try AlertThresholds.load(path: config.alerts)
        let (repository, lock) = try open(.shared, purpose: "monitor")
        defer { lock.release() }
        let records = try catalog.all(type: o.type).filter { $0.type != .preRestore || o.type == .preRestore }
        var checks: [CheckResult] = []
        if o.checkAge {
            var newest: [SnapshotType: Double] = [:]
            for r in records where newest[r.type] == nil {
                newest[r.type] = Timestamp(iso8601: r.metadata.timestamp).map { now.timeIntervalSince1970 - $0.timeInterval } ?? .infinity
            }
            let threshold = "warning \(Self.human(thresholds.ageWarning)), critical \(Self.human(thresholds.ageCritical))"
            if newest.isEmpty {
                checks.append(CheckResult(check: "snapshot_age", level: .critical, value: -1, threshold: threshold, message: o.type.map { "no \($0) snapshots" } ?? "no snapshots"))
            } else {
                let worst = newest.max { a, b in a.value < b.value }!
                let level = Self.level(worst.value, warning: thresholds.ageWarning, critical: thresholds.ageCritical)
                let parts = newest.sorted { $0.key < $1.key }.map { "\($0.key) \(Self.human(max(0, $0.value))) ago" }
                checks.append(CheckResult(check: "snapshot_age", level: level, value: (worst.value * 10).rounded() / 10, threshold: threshold,
                                          message: "newest snapshots: " + parts.joined(separator: ", ")))
            }
        }
        if o.checkSize {
            let repoBytes = Double(try Self.storeBytes(repository.storage))
            let largest = records.map { Double($0.metadata.sizeBytes) }.max() ?? 0
            let value = max(repoBytes, largest)
            let level = Self.level(value, warning: Double(thresholds.sizeWarning), critical: Double(thresholds.sizeCritical))
            checks.append(CheckResult(check: "snapshot_size", level: level, value: value,
                                      threshold: "warning \(thresholds.sizeWarning) B, critical \(thresholds.sizeCritical) B",
                                      message: "repository \(Int(repoBytes)) B, largest snapshot \(Int(largest)) B"))
        }
        if o.checkIntegrity {
            var state = MonitorState.load(repository.storage)
            if state.lastCheck == nil || now.timeIntervalSince1970 - state.lastCheck! >= thresholds.integrityInterval {
                let (records, damaged) = try catalog.scan()
                // The next 1/N of the packs (in id order), rolling: all of them every N checks.
                let n = thresholds.readDataSlices
                let slice = (state.readDataSlice ?? 0) % max(1, n)
                let shares = Set([slice]).union((state.damagedSlices ?? []).filter { $0 < n })
                let packs = n == 0 ? nil : Set(Set(repository.index.allLocations().values.map(\.pack)).sorted { $0.hex < $1.hex }
                    .enumerated().filter { shares.contains($0.offset % n) }.map(\.element))
                let verifier = Verifier(repository: repository)
                let report = verifier.verify(records, readData: n > 0, packs: packs)
                if let failure = verifier.resourceError {
                    // Not damage, and not a check that passed: critical, saying why, and the
                    // rolling state stays where it was so this share is read again.
                    checks.append(CheckResult(check: "snapshot_integrity", level: .critical, value: Double(state.consecutiveFailures),
                                              threshold: "critical after \(thresholds.integrityFailures) failed checks", message: "could not check: \(failure)"))
                    return MonitorReport(level: checks.map(\.level).max() ?? .ok, checks: checks)
                }
                if n > 0 {
                    state.readDataSlice = (slice + 1) % n
                    state.damagedSlices = report.ok ? [] : shares.sorted()
                }
                state.lastCheck = now.timeIntervalSince1970
                state.consecutiveFailures = report.ok && damaged.isEmpty ? 0 : state.consecutiveFailures + 1
                state.lastErrors = (damaged.map { "\($0.id): \($0.problem)" } + report.snapshots.flatMap { s in s.errors.map { "\(s.snapshotID): \($0)" } }
                    + report.repositoryErrors).prefix(5).map { $0 }
                try? state.save(repository.storage)
            }
            let failures = state.consecutiveFailures
            let level: AlertLevel = failures == 0 ? .ok : failures >= thresholds.integrityFailures ? .critical : .warning
            checks.append(CheckResult(check: "snapshot_integrity", level: level, value: Double(failures),
                                      threshold: "critical after \(thresholds.integrityFailures) failed checks, every \(Self.human(thresholds.integrityInterval))",
                                      message: (failures == 0 ? "last check passed" : "\(failures) failed check(s) in a row: \(state.lastErrors.first ?? "")")
                                        + (thresholds.readDataSlices > 0 ? " (each check re-reads 1/\(thresholds.readDataSlices) of the data)" : "")))
        }
        for metric in o.metrics {
            switch metric {
            case "creation-time":
                let durations = records.map(\.metadata.durationS)
                let avg = durations.isEmpty ? 0 : durations.reduce(0, +) / Double(durations.count)
                checks.append(CheckResult(check: "creation_time", level: .ok, value: (avg * 1000).rounded() / 1000, threshold: "",
                                          message: durations.isEmpty ? "no snapshots" : "average \(String(format: "%.2f", avg)) s over \(durations.count) snapshots, last \(String(format: "%.2f", durations[0])) s"))
            case "restoration-time":
                let runs = MonitorState.load(repository.storage).recoveries
                let last = runs.last
                checks.append(CheckResult(check: "restoration_time", level: last.map { $0.ok ? .ok : .warning } ?? .ok, value: last?.seconds ?? 0, threshold: "",
                                          message: last.map { "last test-recovery \(String(format: "%.2f", $0.seconds)) s at \(String(format: "%.1f", $0.mbPerS)) MB/s (\(runs.count) runs)" } ?? "no test-recovery runs yet"))
            default:
                let ratios = records.map(\.metadata.compressionRatio)
                let avg = ratios.isEmpty ? 1 : ratios.reduce(0, +) / Double(ratios.count)
                checks.append(CheckResult(check: "compression_ratio", level: .ok, value: (avg * 1000).rounded() / 1000, threshold: "",
                                          message: "stored/logical of new data, average over \(ratios.count) snapshots"))
            }
        }
        return MonitorReport(level: checks.map(\.level).max() ?? .ok, checks: checks)
    }

    /// Records a test-recovery run for `--metrics restoration-time`.
    func recordRecovery(_ report: TestRecoveryReport) {
        var state = MonitorState.load(storage)
        state.recoveries.append(.init(time: Date().timeIntervalSince1970, seconds: report.seconds, mbPerS: report.mbPerS, ok: report.ok))
        if state.recoveries.count > 100 { state.recoveries.removeFirst(state.recoveries.count - 100) }
        try? state.save(storage)
    }

    /// Bytes of the regular files under `path` (the store's size).
    /// The bytes under `.store/` of a repository in any storage.
    public static func storeBytes(_ storage: any RepositoryStorage) throws -> UInt64 {
        if let local = storage as? LocalStorage { return storeBytes(local.root + "/.store") }
        return try storage.list(prefix: ".store/").reduce(0) { $0 + UInt64($1.size) }
    }

    public static func storeBytes(_ path: String) -> UInt64 {
        var total: UInt64 = 0
        let e = FileManager.default.enumerator(atPath: path)
        while let f = e?.nextObject() as? String {
            if let size = e?.fileAttributes?[.size] as? NSNumber, e?.fileAttributes?[.type] as? FileAttributeType == .typeRegular {
                total += size.uint64Value
            }
            _ = f
        }
        return total
    }
}
