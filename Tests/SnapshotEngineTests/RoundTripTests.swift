#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
@testable import SnapshotEngine
import Testing
import TestSupport

@Suite struct RoundTripTests {
    /// Snapshots written before checksum version 2 (metadata version "1") keep verifying with
    /// version 1; a checksum of the wrong version is a mismatch.
    @Test func snapshotsWithVersionOneChecksumsStillVerify() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a/b.txt", Array("b\n".utf8))
        Fixture.write(h.source + "/c.txt", Array("c\n".utf8))
        let record = try h.create()
        #expect(record.metadata.version == "2")
        let repository = try h.open()
        let catalog = SnapshotCatalog(repositoryPath: h.repoPath)
        let tree = try catalog.readManifest(record).components["src"]!.treeID
        let reader = BlobReader(repository: repository)
        let v1 = try ComponentDigest.compute(root: tree, version: 1) { id, path in try reader.readTree(id, path: path) }
        #expect(v1 != record.metadata.checksums["src"])
        var old = record.metadata
        old.version = "1"
        old.checksums["src"] = v1
        try catalog.rewriteMetadata(record, old)
        try h.expectVerifies()
        old.checksums["src"] = record.metadata.checksums["src"]
        try catalog.rewriteMetadata(record, old)
        let report = try h.verify()
        #expect(!report.ok && report.snapshots.flatMap(\.errors).contains { $0.contains("checksum mismatch") })
        try catalog.rewriteMetadata(record, record.metadata)
        try h.expectVerifies()
    }

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

    /// A restore reads each pack once and drops what it has read from the page cache as it
    /// goes: after restoring large files, few of their packs' pages are still cached (all of
    /// them were before), and the files come back whole; `verify --read-data` the same.
    @Test func aRestoreLeavesThePacksItReadOutOfThePageCache() throws {
        let h = try EngineHarness()
        for i in 0..<3 { Fixture.write(h.source + "/big\(i)", Fixture.bytes((8 << 20) + i * 4099, seed: UInt64(i))) }
        let record = try h.create()
        let data = h.repoPath + "/.store/data"
        let packs = try POSIX.listDirectory(data).flatMap { d in try POSIX.listDirectory(data + "/" + d).map { data + "/" + d + "/" + $0 } }
        // On tmpfs the cache is where the files live: nothing to drop.
        let mounts = String(decoding: try POSIX.readFile("/proc/self/mounts"), as: UTF8.self).split(separator: "\n").map { $0.split(separator: " ") }
        let fileSystem = mounts.filter { $0.count > 2 && (data.hasPrefix($0[1] + "/") || $0[1] == "/") }.max { $0[1].count < $1[1].count }
        guard fileSystem?[2] != "tmpfs" else {
            try h.expectVerifies()
            return
        }
        /// Pages of the packs (or of `range` of one pack only) in the page cache, of all.
        func cachedPages(_ range: (pack: BlobID, from: Int, to: Int)? = nil) -> (cached: Int, total: Int) {
            var cached = 0, total = 0
            for path in packs where range.map({ path.hasSuffix($0.pack.hex) }) ?? true {
                let fd = open(path, O_RDONLY)
                defer { close(fd) }
                var st = stat()
                guard fd >= 0, fstat(fd, &st) == 0, st.st_size > 0 else { continue }
                let size = Int(st.st_size), page = sysconf(Int32(_SC_PAGESIZE))
                guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { continue }
                defer { munmap(map, size) }
                var resident = [UInt8](repeating: 0, count: (size + page - 1) / page)
                guard mincore(map, size, &resident) == 0 else { continue }
                let pages = range.map { $0.from / page ... ($0.to - 1) / page } ?? 0...(resident.count - 1)
                cached += resident[pages].filter { $0 & 1 != 0 }.count
                total += pages.count
            }
            return (cached, total)
        }
        // Read once through the cache, as a verify would: every page is cached.
        for path in packs { _ = try POSIX.readFile(path) }
        let before = cachedPages()
        #expect(before.total >= 6000 && before.cached == before.total)
        let result = try h.restore(record.id, to: h.dir.sub("out"))
        #expect(result.mismatches.isEmpty && result.files == 3)
        let after = cachedPages()
        #expect(after.cached * 10 < after.total, "\(after.cached) of \(after.total) pack pages still cached")

        // As the reads go, not once the file is written: a file's first entries are dropped
        // while the stretch it is reading is still cached, until the file is done (whole
        // pages only: one shared with a neighbour at either end stays).
        let repository = try h.open()
        var largestStretch = 0
        for i in 0..<3 {
            for path in packs { _ = try POSIX.readFile(path) }
            let locations = try h.node(record, "src/big\(i)").content.map { try #require(repository.location(of: $0)) }
            #expect(locations.count >= 8)
            var trail = PackReadTrail(repository: repository)
            for location in locations { trail.reading(location) }
            let first = locations[0]
            #expect(cachedPages((first.pack, Int(first.offset), Int(first.offset + first.length))).cached <= 1)
            let pack = try #require(trail.pack)
            let stretch = cachedPages((pack, trail.start, trail.end))
            #expect(stretch.total >= 1 && stretch.cached == stretch.total)
            largestStretch = max(largestStretch, stretch.total)
            trail.release()
            #expect(cachedPages((pack, trail.start, trail.end)).cached <= 2)
        }
        // The stretch is the file's last entries since the last 2 MiB dropped: its last chunk
        // at least (the chunker's cuts differ per repository).
        #expect(largestStretch > 8)

        // So does `verify --read-data`, pack by pack.
        for path in packs { _ = try POSIX.readFile(path) }
        try h.expectVerifies()
        let verified = cachedPages()
        #expect(verified.cached * 10 < verified.total, "\(verified.cached) of \(verified.total) pack pages still cached after verify")
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

@Suite struct ExtendedAttributeTests {
    /// A POSIX access ACL as the kernel stores it in `system.posix_acl_access`: version 2,
    /// then (tag, permissions, id) entries.
    static func acl(_ entries: [(tag: UInt16, perm: UInt16, id: UInt32)]) -> [UInt8] {
        var out: [UInt8] = [2, 0, 0, 0]
        for e in entries {
            withUnsafeBytes(of: e.tag.littleEndian) { out += $0 }
            withUnsafeBytes(of: e.perm.littleEndian) { out += $0 }
            withUnsafeBytes(of: e.id.littleEndian) { out += $0 }
        }
        return out
    }

    @Test func extendedAttributesAndACLsSurviveARestore() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/model.bin", Fixture.bytes(200_000, seed: 1))
        Fixture.write(h.source + "/shared/notes.txt", Array("notes\n".utf8))
        Fixture.write(h.source + "/plain.txt", Array("no attributes\n".utf8))
        guard POSIX.setXattr(h.source + "/model.bin", "user.checksum", Array("sha256:abc".utf8)) else {
            return  // a file system without user xattrs: nothing to keep
        }
        POSIX.setXattr(h.source + "/model.bin", "user.empty", [])
        // user rw, user 1234 r, group r, mask r, other none; the directory also gets a default ACL.
        let access = Self.acl([(0x01, 6, UInt32.max), (0x02, 4, 1234), (0x04, 4, UInt32.max), (0x10, 4, UInt32.max), (0x20, 0, UInt32.max)])
        let hasACLs = POSIX.setXattr(h.source + "/shared/notes.txt", "system.posix_acl_access", access)
        if hasACLs { POSIX.setXattr(h.source + "/shared", "system.posix_acl_default", access) }
        // A file capability (cap_net_bind_service, permitted and effective): root only.
        let capability: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        let hasCaps = geteuid() == 0 && POSIX.setXattr(h.source + "/model.bin", "security.capability", capability)
        let wanted = [h.source + "/model.bin", h.source + "/shared/notes.txt", h.source + "/shared", h.source + "/plain.txt"].map { POSIX.xattrs($0) }
        #expect(wanted[0].contains { $0.name == "user.checksum" } && (!hasCaps || wanted[0].contains { $0.name == "security.capability" }))

        let record = try h.create(type: .full)
        let out = h.dir.sub("out")
        _ = try h.restore(record.id, to: out)
        let restored = [out + "/src/model.bin", out + "/src/shared/notes.txt", out + "/src/shared", out + "/src/plain.txt"].map { POSIX.xattrs($0) }
        #expect(restored == wanted, "\(restored) != \(wanted)")
        #expect(!hasACLs || restored[1].contains { $0.name == "system.posix_acl_access" })
        #expect(try POSIX.readFile(out + "/src/model.bin") == Fixture.bytes(200_000, seed: 1))
        try h.expectVerifies()
    }

    @Test func aTreeWithoutAttributesKeepsItsFormerBytes() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a.txt", Array("a\n".utf8))
        let record = try h.create(type: .full)
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let bytes = try BlobReader(repository: repo).read(try #require(manifest.components["src"]).treeID)
        #expect(bytes.first == 1, "a tree with no extended attributes is still written as version 1")
    }
}
