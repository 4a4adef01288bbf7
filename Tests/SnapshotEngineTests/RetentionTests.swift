import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct RetentionTests {
    /// A reference written differently from the engine: group by bucket, keep the newest of
    /// the newest `n` buckets, and the oldest snapshot when fewer than `n` buckets exist.
    static func reference(_ times: [Int], rule: RetentionRule, bucket: (String, Int) -> String) -> Set<Int> {
        var keep = Set<Int>()
        let newestFirst = times.sorted(by: >)
        keep.insert(newestFirst[0])
        keep.formUnion(newestFirst.prefix(rule.last))
        for (name, n) in [("hourly", rule.hourly), ("daily", rule.daily), ("weekly", rule.weekly), ("monthly", rule.monthly), ("yearly", rule.yearly)] where n > 0 {
            let groups = Dictionary(grouping: newestFirst) { bucket(name, $0) }
            let buckets = groups.keys.sorted { groups[$0]!.max()! > groups[$1]!.max()! }
            for b in buckets.prefix(n) { keep.insert(groups[b]!.max()!) }
            if buckets.count < n { keep.insert(newestFirst.last!) }
        }
        return keep
    }

    static func bucket(_ rule: String, _ t: Int) -> String {
        let d = Date(timeIntervalSince1970: TimeInterval(t))
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        c.firstWeekday = 2
        c.minimumDaysInFirstWeek = 4
        switch rule {
        case "hourly": return "\(c.component(.year, from: d))-\(c.ordinality(of: .hour, in: .year, for: d)!)"
        case "daily": return "\(c.component(.year, from: d))-\(c.ordinality(of: .day, in: .year, for: d)!)"
        case "weekly":
            let comps = c.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d)
            return "\(comps.yearForWeekOfYear!)w\(comps.weekOfYear!)"
        case "monthly": return "\(c.component(.year, from: d))m\(c.component(.month, from: d))"
        default: return "\(c.component(.year, from: d))"
        }
    }

    func record(_ type: SnapshotType, _ t: Int) -> SnapshotRecord {
        let ts = Timestamp(seconds: Int64(t))
        let m = SnapshotMetadata(snapshotID: ts.snapshotID, timestamp: ts.iso8601, type: type.name, name: "", components: [:], checksums: [:],
                                 sizeBytes: 0, storedBytes: 0, compressionRatio: 1, durationS: 0, parent: nil, hostname: "h", tags: [:], auto: true, manifest: "")
        return SnapshotRecord(type: type, id: ts.snapshotID, directory: "/x/\(type)/\(ts.snapshotID)", metadata: m)
    }

    @Test(arguments: [
        RetentionRule(daily: 7, weekly: 4, monthly: 12),
        RetentionRule(daily: 30, weekly: 12),
        RetentionRule(daily: 7, weekly: 4),
        RetentionRule(weekly: 52),
        RetentionRule(daily: 3, monthly: 2, yearly: 5),
    ])
    func matchesAnIndependentReferenceOver120BackDatedDailySnapshots(rule: RetentionRule) {
        // 120 days of 02:00 snapshots, with a few extra ones the same day, from 2024-01-01.
        var times: [Int] = []
        for day in 0..<120 {
            times.append(1_704_067_200 + day * 86400 + 7200)
            if day % 9 == 0 { times.append(1_704_067_200 + day * 86400 + 50_000) }
        }
        let policy = RetentionPolicy(rules: [.system: rule])
        let decisions = policy.decide(times.map { record(.system, $0) })
        let keptTimes = Set(zip(times.sorted(by: >), decisions).filter { $0.1.keep }.map(\.0))
        #expect(decisions.count == times.count)
        #expect(keptTimes == Self.reference(times, rule: rule, bucket: Self.bucket))
    }

    /// Continuous snapshots: one a minute for three days, thinned by `{last: 60, hourly: 24, daily: 7}`.
    @Test func continuousSnapshotsThinByHour() {
        let start = 1_764_288_000  // 2025-11-28T00:00:00Z
        let times = (0..<(3 * 1440)).map { start + $0 * 60 + 7 }
        let rule = RetentionRule(last: 60, hourly: 24, daily: 7)
        let decisions = RetentionPolicy(rules: [.continuous: rule]).decide(times.map { record(.continuous, $0) })
        let keptTimes = Set(zip(times.sorted(by: >), decisions).filter { $0.1.keep }.map(\.0))
        #expect(keptTimes == Self.reference(times, rule: rule, bucket: Self.bucket))
        // The last hour whole, then one per hour back to a day ago, then one per day.
        #expect(keptTimes.count == 60 + 23 + 3)
        #expect(decisions.first { $0.keep && $0.reasons == ["hourly snapshot"] } != nil)
    }

    @Test func aYoungRepositoryKeepsItsFirstBackupAndReasonsAreNamed() {
        let start = 1_717_200_000  // 2024-06-01
        let times = [start, start + 86400, start + 2 * 86400]
        let decisions = RetentionPolicy(rules: [.system: RetentionRule(daily: 2, weekly: 4)]).decide(times.map { record(.system, $0) })
        #expect(decisions.allSatisfy { $0.keep })
        #expect(decisions.last?.reasons.contains("oldest weekly snapshot") == true)
        #expect(decisions.first?.reasons.contains("daily snapshot") == true)
        // No rule for a type: everything is kept. pre-restore: 7 days.
        let now = Timestamp(seconds: Int64(start + 30 * 86400))
        let other = RetentionPolicy(rules: [:]).decide([record(.data, start), record(.preRestore, start), record(.preRestore, start + 25 * 86400)], now: now)
        #expect(other.first { $0.type == .data }?.keep == true)
        #expect(other.filter { $0.type == .preRestore }.map(\.keep).sorted { !$0 && $1 } == [false, true])
    }

    @Test func theSeedsRetentionFileLoads() throws {
        let here = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let known = Set(SnapshotType.builtIn)
        let bundled = try SnapshotConfig.load(path: here + "/configs/snapshots.yaml", required: true, workingDirectory: here)
        let p = try RetentionPolicy.load(path: here + "/configs/retention.yaml", knownTypes: known.union(bundled.types.keys))
        #expect(p.rules[try #require(SnapshotType("nightly"))] == RetentionRule(last: 14))
        #expect(p.rules[.system] == RetentionRule(daily: 7, weekly: 4, monthly: 12))
        #expect(p.rules[.models] == RetentionRule(daily: 7, weekly: 4))
        let dir = TemporaryDirectory()
        Fixture.write(dir.sub("r.yaml"), Array("retention:\n  system_snapshots: {daily: 7, minutely: 3}\n".utf8))
        #expect(throws: EngineError.self) { try RetentionPolicy.load(path: dir.sub("r.yaml"), knownTypes: known) }
        // A type of one's own has a section once the config defines it; a typo is an error.
        Fixture.write(dir.sub("n.yaml"), Array("retention:\n  nightly_snapshots: {last: 3}\n".utf8))
        let nightly = try #require(SnapshotType("nightly"))
        #expect(try RetentionPolicy.load(path: dir.sub("n.yaml"), knownTypes: known.union([nightly])).rules[nightly] == RetentionRule(last: 3))
        do {
            _ = try RetentionPolicy.load(path: dir.sub("n.yaml"), knownTypes: known)
            Issue.record("an unconfigured type's section was accepted")
        } catch {
            #expect("\(error)".contains("unknown key \"nightly_snapshots\" in retention (allowed: config_snapshots, data_snapshots, differential_snapshots, full_snapshots, incremental_snapshots, model_snapshots, system_snapshots;"))
        }
    }
}
