#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// `repair`: salvage into a new snapshot, healing from every other copy of the content.
@Suite struct RepairTests {
    func service(_ h: EngineHarness) throws -> SnapshotService {
        let config = try SnapshotConfig.parse("root: \(h.dir.path)\nrepository: \(h.repoPath)\n", file: "s.yaml", workingDirectory: h.dir.path)
        return SnapshotService(config: config, repositoryPath: h.repoPath, workingDirectory: h.dir.path)
    }

    func repair(_ h: EngineHarness, _ reference: String) throws -> RepairReport {
        var options = RepairOptions()
        options.snapshot = reference
        return try service(h).repair(options)
    }

    /// Flips a byte in the middle of the entry of the first chunk of `path` in `record`.
    func damageFirstChunk(of path: String, in record: SnapshotRecord, _ h: EngineHarness) throws {
        Damage.flipByte(of: try h.node(record, path).content[0], in: try h.open())
    }

    func files(of record: SnapshotRecord, _ h: EngineHarness) throws -> [String] {
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        return try Browser(repository: repo).list(manifest).filter { $0.type == "file" }.map(\.path).sorted()
    }

    @Test func whatCannotBeHealedIsLeftOutOfANewSnapshotThatNamesIt() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/models/w.bin", Fixture.bytes(600_000, seed: 1))
        Fixture.write(h.source + "/configs/a.yaml", Array("a: 1\n".utf8))
        Fixture.write(h.source + "/logs/deep/x.log", Fixture.text(lines: 2_000))
        let original = try h.create(type: .full, name: "before-upgrade")
        let originalFiles = try [original.directory + "/metadata.json", original.directory + "/manifest.json"].map { try POSIX.readFile($0) }
        try damageFirstChunk(of: "src/models/w.bin", in: original, h)
        Fixture.write(h.source + "/models/w.bin", Fixture.bytes(600_000, seed: 99))  // the live copy moved on

        let report = try repair(h, original.id)
        let made = try #require(report.snapshot)
        #expect(made.id == original.id + "-2" && made.type == .full)
        #expect(report.lost.map(\.path) == ["src/models/w.bin"])
        #expect(report.lost[0].reason.contains("does not match its hash"), "\(report.lost)")
        #expect(made.metadata.repairedFrom == original.id && made.metadata.lost == ["src/models/w.bin"])
        #expect(made.metadata.timestamp == original.metadata.timestamp && made.metadata.name.isEmpty)
        #expect(made.metadata.components["src"]?.files == 2)
        #expect(try files(of: made, h) == ["src/configs/a.yaml", "src/logs/deep/x.log"])
        // The original is untouched, still damaged; the salvage restores and verifies.
        #expect(try [original.directory + "/metadata.json", original.directory + "/manifest.json"].map { try POSIX.readFile($0) } == originalFiles)
        let report2 = try h.verify(readData: true)
        #expect(report2.snapshots.first { $0.snapshotID == original.id }?.ok == false)
        #expect(report2.snapshots.first { $0.snapshotID == made.id }?.ok == true)
        let out = h.dir.sub("out")
        _ = try h.restore(made.id, to: out)
        #expect(try POSIX.readFile(out + "/src/logs/deep/x.log") == Fixture.text(lines: 2_000))
        // With the damaged original deleted and pruned, the repository verifies clean.
        var delete = DeleteOptions()
        delete.snapshot = original.id
        _ = try service(h).delete(delete)
        _ = try Pruner(repository: try h.open()).prune(policy: RetentionPolicy(rules: [.full: RetentionRule(last: 10)]), type: nil, dryRun: false)
        try h.expectVerifies()
    }

    @Test func anIntactSnapshotNeedsNoRepair() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a.txt", Array("a\n".utf8))
        let record = try h.create()
        let report = try repair(h, record.id)
        #expect(report.snapshot == nil && report.lost.isEmpty && report.healed.isEmpty)
        #expect(try SnapshotCatalog(repositoryPath: h.repoPath).all().count == 1)
        try h.expectVerifies()
    }

    @Test func damageHealsFromTheLiveFileAndThenEverySnapshotSharingItIsWhole() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/shared.bin", Fixture.bytes(400_000, seed: 5))
        var records: [SnapshotRecord] = []
        for i in 0..<3 {
            Fixture.write(h.source + "/own.txt", Array("snapshot \(i)\n".utf8))
            records.append(try h.create(type: .full))
        }
        try damageFirstChunk(of: "src/shared.bin", in: records[0], h)
        #expect(try h.verify(readData: true).snapshots.allSatisfy { !$0.ok })
        let report = try repair(h, records[0].id)
        #expect(report.snapshot == nil, "nothing lost: no new snapshot")
        #expect(report.healed.map(\.path) == ["src/shared.bin"] && report.healed[0].from.contains("live file"))
        try h.expectVerifies()
        _ = try h.restore(records[1].id, to: h.dir.sub("out"))
    }

    @Test func damageHealsFromAnotherCopyInTheStore() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/w.bin", Fixture.bytes(300_000, seed: 6))
        let record = try h.create()
        // A second copy of the pack, as a killed create can leave one behind.
        let repo = try h.open()
        let node = try Browser(repository: repo).node(try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record), path: "src/w.bin")
        let pack = repo.packPath(try #require(repo.index.location(of: node.content[0])).pack)
        let twin = String(repeating: "ab", count: 32)
        try POSIX.makeDirectories(h.repoPath + "/.store/data/ab")
        Fixture.write(h.repoPath + "/.store/data/ab/" + twin, try POSIX.readFile(pack))
        try damageFirstChunk(of: "src/w.bin", in: record, h)
        Fixture.write(h.source + "/w.bin", Array("gone\n".utf8))
        let report = try repair(h, record.id)
        #expect(report.snapshot == nil && report.healed.map(\.path) == ["src/w.bin"], "\(report.lost)")
        #expect(report.healed.first?.from.contains("in the store") == true)
        try h.expectVerifies()
    }

    @Test func damageHealsFromTheSamePathInAnotherSnapshotStoredInOtherChunks() throws {
        let h = try EngineHarness()
        let content = Fixture.bytes(900_000, seed: 7)
        Fixture.write(h.source + "/w.bin", content)
        // An older snapshot of the same file in fixed 64 KiB blocks (another chunking policy,
        // as an older version or another configuration stores it).
        let repo = try h.open()
        let fixed = ChunkingPolicy(defaultScheme: .fixed(size: 64 << 10), fixedSuffixes: [], fixedScheme: .fixed(size: 64 << 10))
        let older = try Archiver(repository: repo).create(CreateRequest(type: .full, time: Timestamp(iso8601: "2026-01-01T00:00:00Z"), sources: [FileSource(name: "src", path: h.source)], chunking: fixed))
        let record = try h.create(type: .full)
        try damageFirstChunk(of: "src/w.bin", in: record, h)
        Fixture.write(h.source + "/w.bin", Array("gone\n".utf8))
        let report = try repair(h, record.id)
        #expect(report.snapshot == nil, "\(report.lost)")
        #expect(report.healed.first?.from == "snapshot full/\(older.id)")
        try h.expectVerifies()
        let out = h.dir.sub("out")
        _ = try h.restore(record.id, to: out)
        #expect(try POSIX.readFile(out + "/src/w.bin") == content)
    }

    @Test func aLostDirectoryListingHealsFromTheUnchangedLiveDirectoryOrIsLeftOut() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/keep/a.txt", Array("a\n".utf8))
        Fixture.write(h.source + "/gone/b.txt", Array("b\n".utf8))
        Fixture.write(h.source + "/gone/deeper/c.txt", Array("c\n".utf8))
        let record = try h.create(type: .full)
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let gone = try #require(try Browser(repository: repo).node(manifest, path: "src/gone").subtree)
        let location = try #require(repo.index.location(of: gone))
        let fd = open(repo.packPath(location.pack), O_RDWR)
        var zeros = [UInt8](repeating: 0, count: Int(location.length))
        _ = pwrite(fd, &zeros, zeros.count, off_t(location.offset))
        close(fd)
        let saved = h.dir.sub("saved")
        #expect(rename(h.source + "/gone", saved) == 0)
        // The live directory is gone: the listing is lost, and with it everything below.
        let salvaged = try repair(h, record.id)
        #expect(salvaged.lost.map(\.path) == ["src/gone/"], "\(salvaged.lost)")
        #expect(try files(of: try #require(salvaged.snapshot), h) == ["src/keep/a.txt"])
        // Put back unchanged (same inode, times, contents), it heals the listing exactly.
        #expect(rename(saved, h.source + "/gone") == 0)
        let healed = try repair(h, record.id)
        #expect(healed.snapshot == nil && healed.healed.map(\.path) == ["src/gone/"], "\(healed.lost) \(healed.healed)")
        try h.expectVerifies()
    }
}
