#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// A tree of many small files, larger than one batch of the archiver (8,192 files) and one
/// batch of the restorer: directories are stored as their files are read, hard links and
/// extended attributes cross batch boundaries, and the result is exact.
@Suite struct BatchedTreeTests {
    static let directories = 200
    static let perDirectory = 100

    static func name(_ d: Int, _ f: Int) -> String { "d\(d)/f\(f).txt" }

    /// 20,000 text files of 1–4 KiB in 200 directories; a hard link from the last directory
    /// to a file of the first (files far apart in every batch order) and an extended
    /// attribute on a file in the middle.
    static func makeTree(_ root: String) {
        for d in 0..<directories {
            for f in 0..<perDirectory {
                let text = "directory \(d) file \(f)\n" + String(repeating: "line \(d * perDirectory + f)\n", count: 100 + (d * 7 + f * 13) % 400)
                Fixture.write(root + "/" + name(d, f), Array(text.utf8), mtime: 1_700_000_000 + d)
            }
            Fixture.setMtime(root + "/d\(d)", 1_700_000_000)
        }
        link(root + "/" + name(0, 1), root + "/d\(directories - 1)/link-to-first.txt")
        POSIX.setXattr(root + "/" + name(100, 50), "user.origin", Array("middle".utf8))
    }

    @Test func twentyThousandFilesRoundTripExactlyThroughEveryBatch() throws {
        let h = try EngineHarness()
        Self.makeTree(h.source)
        var archiver: Archiver?
        let first = try h.create { archiver = $0 }
        // Both names of the hard link count as read; the inode is read once.
        #expect(archiver?.lastRead.files == Self.directories * Self.perDirectory + 1)
        #expect(first.metadata.components["src"]?.files == Self.directories * Self.perDirectory + 1)
        let out = h.dir.sub("out")
        let result = try h.restore(first.id, to: out)
        #expect(result.files == Self.directories * Self.perDirectory + 1 && result.mismatches.isEmpty)
        #expect(TreeComparison.differences(h.source, out + "/src") == [])
        #expect(POSIX.xattrs(out + "/src/" + Self.name(100, 50)) == POSIX.xattrs(h.source + "/" + Self.name(100, 50)))

        // Nothing changed: nothing read, the same trees (and so the same checksum).
        let same = try h.create { archiver = $0 }
        #expect(archiver?.lastRead.files == 0)
        #expect(same.metadata.checksums == first.metadata.checksums)

        // Two files rewritten (first and last batch), one given an attribute only: exactly
        // those three are read, the attribute is kept, the rest comes from the parent.
        Fixture.write(h.source + "/" + Self.name(0, 0), Array("changed early\n".utf8))
        Fixture.write(h.source + "/" + Self.name(199, 99), Array("changed late\n".utf8))
        POSIX.setXattr(h.source + "/" + Self.name(150, 3), "user.tag", Array("late".utf8))
        let changed = try h.create { archiver = $0 }
        #expect(archiver?.lastRead.files == 3)
        #expect(changed.metadata.checksums != first.metadata.checksums)
        let again = h.dir.sub("again")
        _ = try h.restore(changed.id, to: again)
        #expect(TreeComparison.differences(h.source, again + "/src") == [])
        #expect(POSIX.xattrs(again + "/src/" + Self.name(150, 3)).map(\.name) == ["user.tag"])
        #expect(POSIX.xattrs(again + "/src/" + Self.name(100, 50)).map(\.name) == ["user.origin"], "an unchanged file keeps its attribute")
        try h.expectVerifies()
    }

    /// Files are written batch by batch, yet a chunk missing from the index — here the last
    /// file's, in the second batch — stops the restore before it writes anything.
    @Test func aChunkMissingFromTheIndexStopsARestoreBeforeItWritesAnything() throws {
        let h = try EngineHarness()
        for i in 0..<8_300 { Fixture.write(h.source + "/f\(10_000 + i).txt", Array("file \(i)\n".utf8)) }
        let record = try h.create(type: .full)
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let tree = try BlobReader(repository: repo).readTree(try #require(manifest.components["src"]).treeID, path: "src")
        let lost = try #require(tree.nodes.last?.content.first)
        // The index rewritten without it (its pack stays).
        let kept = Dictionary(grouping: repo.index.allLocations().filter { $0.key != lost }, by: { $0.value.pack }).map { pack, blobs in
            (pack: pack, entries: blobs.map { PackEntry(id: $0.key, type: $0.value.type, offset: $0.value.offset, length: $0.value.length, rawLength: $0.value.rawLength) })
        }
        let old = try repo.indexFileNames()
        try repo.writeIndex(kept)
        for name in old { unlink(h.repoPath + "/.store/index/" + name) }

        let out = h.dir.sub("out")
        #expect(throws: RepositoryError.self) { try h.restore(record.id, to: out) }
        #expect(!POSIX.exists(out + "/src/f10000.txt"), "nothing written before the missing chunk was found")
        let report = try h.verify(readData: false)
        #expect(!report.ok, "verify names the missing chunk too")
    }
}
