#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite(.serialized) struct PruneTests {
    func service(_ dir: TemporaryDirectory) throws -> SnapshotService {
        Fixture.write(dir.sub("configs/retention.yaml"), Array("retention:\n  system_snapshots: {daily: 7, weekly: 4, monthly: 12}\n".utf8))
        let yaml = """
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            components:
              data: {path: data}
            types:
              system: [data]
            """
        return SnapshotService(config: try SnapshotConfig.parse(yaml, file: "s.yaml", workingDirectory: dir.path), repositoryPath: dir.sub("repo"), workingDirectory: dir.path)
    }

    static func repositoryBytes(_ path: String) -> UInt64 {
        var total: UInt64 = 0
        let e = FileManager.default.enumerator(atPath: path)
        while let f = e?.nextObject() as? String {
            var st = stat()
            if lstat(path + "/" + f, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { total += UInt64(st.st_size) }
        }
        return total
    }

    @Test func pruneKeepsWhatTheRulesSayAndReclaimsTheRest() async throws {
        let dir = TemporaryDirectory("snapshot-prune")
        let service = try service(dir)
        Fixture.write(dir.sub("data/shared.bin"), Fixture.bytes(300_000, seed: 1))
        var times: [Int] = []
        for day in 0..<120 {
            // Each day some new data (a day's log), and the shared part unchanged.
            Fixture.write(dir.sub("data/day.log"), Fixture.bytes(40_000, seed: UInt64(1000 + day)))
            var o = CreateOptions()
            o.type = .system
            let t = 1_704_067_200 + day * 86400 + 7200
            o.time = Timestamp(seconds: Int64(t)).iso8601
            _ = try await service.create(o)
            times.append(t)
        }
        let rule = RetentionRule(daily: 7, weekly: 4, monthly: 12)
        let expected = RetentionTests.reference(times, rule: rule, bucket: RetentionTests.bucket)
        var dry = PruneOptions()
        dry.dryRun = true
        let plan = try service.prune(dry)
        let timestamps = Dictionary(uniqueKeysWithValues: try service.catalog.all().map { ($0.id, $0.metadata.timestamp) })
        let keptTimes = Set(plan.keep.compactMap { timestamps[$0.snapshotID].flatMap { Timestamp(iso8601: $0) }.map { Int($0.seconds) } })
        #expect(keptTimes == expected)
        #expect(plan.keep.count + plan.remove.count == 120)
        #expect(plan.reclaimedBytes > 0)
        #expect(try service.catalog.all().count == 120, "the dry run removed something")

        let before = Self.repositoryBytes(dir.sub("repo/.store"))
        let report = try service.prune(PruneOptions())
        let after = Self.repositoryBytes(dir.sub("repo/.store"))
        #expect(report.remove.count == 120 - expected.count)
        #expect(try service.catalog.all().count == expected.count)
        #expect(before - after >= UInt64(report.remove.count) * 30_000, "reclaimed \(before - after) bytes")
        #expect(report.reclaimedBytes > 0)
        // What is left restores and verifies; system/latest still points at the newest.
        var o = VerifyOptions()
        o.all = true
        o.readData = true
        #expect(try service.verify(o).ok)
        var r = RestoreOptions()
        r.snapshot = "system/latest"
        r.target = dir.sub("out")
        _ = try service.restore(r)
        #expect(try POSIX.readFile(dir.sub("out/data/day.log")) == Fixture.bytes(40_000, seed: 1119))
        // Pruning again changes nothing.
        let again = try service.prune(PruneOptions())
        #expect(again.remove.isEmpty && again.reclaimedBytes == 0)
    }

    @Test func deleteRemovesOneSnapshotAndPruneReclaimsItsData() async throws {
        let dir = TemporaryDirectory("snapshot-delete")
        let service = try service(dir)
        Fixture.write(dir.sub("data/a.bin"), Fixture.bytes(2_000_000, seed: 5))
        var o = CreateOptions()
        o.type = .system
        o.name = "big"
        _ = try await service.create(o)
        unlink(dir.sub("data/a.bin"))
        Fixture.write(dir.sub("data/b.bin"), Fixture.bytes(1000, seed: 6))
        o.name = "small"
        _ = try await service.create(o)
        var d = DeleteOptions()
        d.snapshot = "big"
        _ = try service.delete(d)
        #expect(try service.catalog.all().map(\.metadata.name) == ["small"])
        #expect(POSIX.exists(dir.sub("repo/system/latest")))
        let report = try service.prune(PruneOptions())
        #expect(report.reclaimedBytes > 1_900_000)
        var v = VerifyOptions()
        v.all = true
        v.readData = true
        #expect(try service.verify(v).ok)
    }

    @Test func aMostlyUnusedPackIsRepackedAndStaysReadable() async throws {
        let dir = TemporaryDirectory("snapshot-repack")
        let service = try service(dir)
        // Fixed 64 KiB blocks (*.mmap) make the sharing exact; with content-defined chunks
        // the shared part depends on the repository's random chunker seed.
        let a = Fixture.bytes(46 << 16, seed: 21), b = Fixture.bytes(46 << 16, seed: 22)
        Fixture.write(dir.sub("data/f.mmap"), a + b)
        var o = CreateOptions()
        o.type = .system
        o.name = "both"
        _ = try await service.create(o)
        Fixture.write(dir.sub("data/f.mmap"), b)
        o.name = "second-half"
        _ = try await service.create(o)
        var d = DeleteOptions()
        d.snapshot = "both"
        _ = try service.delete(d)
        let report = try service.prune(PruneOptions())
        #expect(report.packsRepacked >= 1, "\(report)")
        #expect(report.reclaimedBytes > 2_500_000)
        var v = VerifyOptions()
        v.all = true
        v.readData = true
        #expect(try service.verify(v).ok)
        var r = RestoreOptions()
        r.snapshot = "second-half"
        r.target = dir.sub("out")
        _ = try service.restore(r)
        #expect(try POSIX.readFile(dir.sub("out/data/f.mmap")) == b)
    }
}
