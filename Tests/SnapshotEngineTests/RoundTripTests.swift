#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct RoundTripTests {
    @Test func everyFidelityCaseRestoresExactly() throws {
        let h = try EngineHarness()
        Fixture.fidelityTree(at: h.source)
        let record = try h.create(type: .full)
        #expect(record.metadata.components["src"]?.skipped == [])
        let out = h.dir.sub("out")
        let result = try h.restore(record.id, to: out)
        #expect(result.mismatches.isEmpty)
        #expect(TreeComparison.differences(h.source, out + "/src") == [])
        // The outward symlink is restored as a link, not followed.
        var st = stat()
        #expect(lstat(out + "/src/names/outside-link", &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK)
        try h.expectVerifies()
    }

    @Test func aNoChangeSnapshotAddsNoDataAndReadsNoFile() throws {
        let h = try EngineHarness()
        Fixture.fidelityTree(at: h.source)
        try h.create()
        let before = try h.open().index.allLocations()
        var archiver: Archiver?
        let second = try h.create { archiver = $0 }
        let after = try h.open().index.allLocations()
        let added = after.filter { before[$0.key] == nil }
        #expect(added.values.allSatisfy { $0.type == .manifest }, "new blobs: \(added.values.map(\.type))")
        #expect(archiver?.lastRead.files == 0)
        #expect(second.metadata.parent != nil)
        try h.expectVerifies()
    }

    @Test func incrementalAfterChangesReadsOnlyChangedFilesAndRestoresOnItsOwn() throws {
        let h = try EngineHarness()
        Fixture.fidelityTree(at: h.source)
        let first = try h.create(time: "2024-01-01T00:00:00Z")
        Fixture.write(h.source + "/logs/system.log", Fixture.text(lines: 20_500), mtime: 1_700_100_000)
        Fixture.write(h.source + "/configs/new.yaml", Array("new: true\n".utf8))
        unlink(h.source + "/exec.sh")
        var archiver: Archiver?
        let second = try h.create(time: "2024-01-02T00:00:00Z") { archiver = $0 }
        #expect(second.metadata.parent == first.id)
        #expect(archiver?.lastRead.files == 2)
        // Stored bytes for a small change stay small: the log's unchanged prefix is deduplicated.
        #expect(second.metadata.storedBytes < 400_000, "stored \(second.metadata.storedBytes)")
        let out = h.dir.sub("out")
        _ = try h.restore(second.id, to: out)
        #expect(TreeComparison.differences(h.source, out + "/src") == [])
        // The first snapshot still restores to the old state.
        let old = h.dir.sub("old")
        _ = try h.restore(first.id, to: old)
        #expect(POSIX.exists(old + "/src/exec.sh") && !POSIX.exists(old + "/src/configs/new.yaml"))
        try h.expectVerifies()
    }

    @Test func fullRereadsEverything() throws {
        let h = try EngineHarness()
        Fixture.fidelityTree(at: h.source)
        try h.create(type: .full)
        var archiver: Archiver?
        let again = try h.create(type: .full) { archiver = $0 }
        #expect(again.metadata.parent == nil)
        #expect((archiver?.lastRead.files ?? 0) >= 10)
        try h.expectVerifies()
    }

    @Test func excludesAndSnapshotIDsAndReferences() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/keep.txt", [1])
        Fixture.write(h.source + "/drop.tmp", [2])
        Fixture.write(h.source + "/sub/x.lock", [3])
        let a = try h.create(type: .incremental, name: "before-deploy", time: "2024-01-15T10:30:00Z", excludes: ["*.tmp", "sub/*.lock"])
        let b = try h.create(type: .full, time: "2024-01-15T10:30:00Z")
        #expect(a.id == "2024-01-15_10-30-00")
        #expect(b.id == "2024-01-15_10-30-00-2")
        let catalog = SnapshotCatalog(repositoryPath: h.repoPath)
        #expect(try catalog.resolve("before-deploy").id == a.id)
        #expect(try catalog.resolve("incremental/latest").id == a.id)
        #expect(try catalog.resolve("latest").id == b.id)
        #expect(throws: RepositoryError.self) { try catalog.resolve("no-such-name") }
        let entries = try Browser(repository: try h.open()).list(try catalog.readManifest(try catalog.resolve(a.id))).map(\.path)
        #expect(entries == ["src", "src/keep.txt", "src/sub"])
        #expect(POSIX.exists(h.repoPath + "/full/latest"))
        try h.expectVerifies()
    }

    @Test func diffReportsAddedRemovedModified() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a", [1])
        Fixture.write(h.source + "/b", [2])
        let first = try h.create()
        Fixture.write(h.source + "/a", [1, 1])
        unlink(h.source + "/b")
        Fixture.write(h.source + "/c", [3])
        let second = try h.create()
        let catalog = SnapshotCatalog(repositoryPath: h.repoPath)
        let changes = try Browser(repository: try h.open()).diff(
            try catalog.readManifest(try catalog.resolve(first.id)), try catalog.readManifest(try catalog.resolve(second.id)))
        #expect(changes.map { "\($0.change.rawValue) \($0.path)" } == ["modified src/a", "removed src/b", "added src/c"])
        try h.expectVerifies()
    }
}
