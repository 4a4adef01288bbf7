#if canImport(Glibc)
import Glibc
#endif
@testable import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct DamageTests {
    func packFiles(_ repo: String) throws -> [String] {
        var out: [String] = []
        for d in try POSIX.listDirectory(repo + "/.store/data") {
            for f in try POSIX.listDirectory(repo + "/.store/data/" + d) { out.append(repo + "/.store/data/\(d)/\(f)") }
        }
        return out.sorted()
    }

    @Test func aFlippedByteInAnyPackIsCaughtNamingSnapshotAndFile() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/logs/system.log", Fixture.text(lines: 40_000))
        Fixture.write(h.source + "/models/w.bin", Fixture.bytes(2_000_000, seed: 4))
        let record = try h.create()
        let repo = try h.open()
        // Damage one content blob of models/w.bin, in the middle of its payload.
        let node = try h.node(record, "src/models/w.bin")
        Damage.flipByte(of: node.content[0], in: repo)
        #expect(try h.verify(readData: false).ok, "the quick check reads no data")
        let report = try h.verify(readData: true)
        #expect(!report.ok)
        let errors = report.snapshots.first { $0.snapshotID == record.id }?.errors ?? []
        #expect(errors.contains { $0.contains("src/models/w.bin") }, "\(errors)")
        // A restore refuses to write the damaged chunk.
        #expect(throws: RepositoryError.self) { try h.restore(record.id, to: h.dir.sub("out")) }
    }

    /// A restore decodes blobs into its write buffer and checks them against their ids in
    /// pairs: a damaged blob anywhere in a large file (first of a pair, second, or one left
    /// waiting when the buffer is written out) stops the restore before its bytes reach
    /// the file, and `verify --read-data`, which pairs them too, names it.
    @Test func noDamagedByteReachesARestoredFile() throws {
        let h = try EngineHarness()
        let original = Fixture.bytes(12_000_000, seed: 8)
        Fixture.write(h.source + "/big.bin", original)
        let record = try h.create()
        let repo = try h.open()
        let node = try h.node(record, "src/big.bin")
        #expect(node.content.count > 8, "\(node.content.count) chunks")
        var partial = 0
        for (i, id) in node.content.enumerated() {
            Damage.flipByte(of: id, in: repo)
            // verify --read-data checks blobs in pairs too: the damaged one is found wherever it is.
            let report = try h.verify(readData: true)
            #expect(report.snapshots.contains { s in s.errors.contains { $0.contains("src/big.bin") } }, "chunk \(i): \(report.snapshots.flatMap(\.errors))")
            let out = h.dir.sub("out\(i)")
            do {
                _ = try h.restore(record.id, to: out)
                Issue.record("chunk \(i): the restore succeeded")
            } catch {
                #expect("\(error)".contains("does not match its hash"), "chunk \(i): \(error)")
            }
            // What reached the file is the start of the original.
            if let written = try? POSIX.readFile(out + "/src/big.bin"), !written.isEmpty {
                partial += 1
                #expect(written.count < original.count && written == Array(original.prefix(written.count)), "chunk \(i): \(written.count) bytes written")
            }
            Damage.flipByte(of: id, in: repo)
        }
        #expect(partial > 0, "no restore wrote part of the file before stopping")
        try h.expectVerifies()
    }

    /// The last blob of a pack, when an odd one out of the pairs `verify --read-data` hashes,
    /// is checked on its own (fixed blocks: 3 or 5 of them, whatever the chunking version).
    @Test func theOddBlobOutOfThePairsIsChecked() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/tail.mmap", Fixture.bytes(5 * 32 << 10, seed: 12))
        let record = try h.create()
        let repo = try h.open()
        let node = try h.node(record, "src/tail.mmap")
        #expect(node.content.count % 2 == 1)
        Damage.flipByte(of: node.content.last!, in: repo)
        let errors = try h.verify(readData: true).snapshots.flatMap(\.errors)
        #expect(errors.contains { $0.contains("src/tail.mmap") && $0.contains("does not match its hash") }, "\(errors)")
        Damage.flipByte(of: node.content.last!, in: repo)
        try h.expectVerifies()
    }

    @Test func everySnapshotSharingADamagedBlobIsNamedHoweverManyThereAre() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/shared.bin", Fixture.bytes(300_000, seed: 9))
        var records: [SnapshotRecord] = []
        for i in 0..<12 {
            Fixture.write(h.source + "/own.txt", Array("snapshot \(i)\n".utf8))
            records.append(try h.create(type: .full))
        }
        let repo = try h.open()
        let node = try h.node(records[0], "src/shared.bin")
        Damage.flipByte(of: node.content[0], in: repo)
        let report = try h.verify(readData: true)
        let named = report.snapshots.filter { s in s.errors.contains { $0.contains("src/shared.bin") } }.map(\.snapshotID)
        #expect(Set(named) == Set(records.map(\.id)), "named \(named.count) of 12")
        #expect(report.snapshots.allSatisfy { !$0.ok })
    }

    @Test func readDataChecksPackTrailersAgainstTheIndex() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/f.bin", Fixture.bytes(300_000, seed: 3))
        _ = try h.create()
        #expect(try h.verify(readData: true).ok)
        for pack in try packFiles(h.repoPath) {
            let original = try POSIX.readFile(pack)
            // A flipped byte in the trailer's entry list, in its checksum, in the footer;
            // bytes appended after the footer; a truncated trailer.
            var variants: [(String, [UInt8])] = []
            for back in [PackFormat.footerSize + 40, PackFormat.footerSize + 3, 2] {
                var damaged = original
                damaged[damaged.count - back] ^= 0x10
                variants.append(("byte \(back) from the end", damaged))
            }
            variants.append(("garbage appended", original + [0, 1, 2, 3]))
            variants.append(("truncated", Array(original.dropLast(7))))
            for (what, bytes) in variants {
                Fixture.write(pack, bytes)
                let report = try h.verify(readData: true)
                #expect(!report.ok, "\(what) in \(pack) passed verify --read-data")
                #expect(report.repositoryErrors.contains { $0.contains(pack) }, "\(what): \(report.repositoryErrors)")
            }
            Fixture.write(pack, original)
        }
        try h.expectVerifies()
    }

    @Test func aMissingPackIsCaughtByTheQuickCheck() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/f.bin", Fixture.bytes(300_000, seed: 2))
        let record = try h.create()
        let repo = try h.open()
        let node = try h.node(record, "src/f.bin")
        unlink(repo.packPath(try #require(repo.index.location(of: node.content[0])).pack))
        let report = try h.verify(readData: false)
        #expect(!report.ok)
        #expect(report.snapshots[0].errors.joined().contains("src/f.bin"))
    }

    @Test func truncatedOrGarbledFilesGiveClearErrors() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a", [1, 2, 3])
        let record = try h.create()
        let catalog = SnapshotCatalog(repositoryPath: h.repoPath)
        // A truncated manifest: a clear error naming the file, and verify reports it.
        let manifest = record.directory + "/manifest.json"
        let bytes = try POSIX.readFile(manifest)
        Fixture.write(manifest, Array(bytes.prefix(bytes.count / 2)))
        do {
            _ = try catalog.readManifest(try catalog.resolve(record.id))
            Issue.record("a truncated manifest was accepted")
        } catch let e as RepositoryError {
            #expect("\(e)".contains("manifest.json"))
        }
        #expect(!(try h.verify()).ok)
        // Garbled metadata.json: the snapshot is set apart as damaged, naming the file.
        Fixture.write(record.directory + "/metadata.json", Array("{\"snapshot_id\": 3".utf8))
        #expect(try catalog.all().isEmpty)
        #expect(try catalog.damaged().map(\.id) == [record.id])
        #expect(try catalog.damaged().first?.problem.contains("metadata.json") == true)
        // A truncated index file: set aside and named; what only it listed reads as missing.
        let indexDir = h.repoPath + "/.store/index"
        let name = try #require(try POSIX.listDirectory(indexDir).first)
        let index = try POSIX.readFile(indexDir + "/" + name)
        Fixture.write(indexDir + "/" + name, Array(index.prefix(index.count - 7)))
        #expect(try h.open().damagedIndexFiles.first?.contains(name) == true)
    }

    /// A plain repository reads its metadata as it is, unless the file carries a sealed
    /// part (an encrypted repository's file put there): that is damage, named.
    @Test func aSealedMetadataFileInAPlainRepositoryIsDamage() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/a", [1, 2, 3])
        let record = try h.create()
        let catalog = SnapshotCatalog(repositoryPath: h.repoPath)
        let path = record.directory + "/metadata.json"
        var json = try POSIX.readFile(path)
        let close = try #require(json.lastIndex(of: UInt8(ascii: "}")))
        json.replaceSubrange(close...close, with: Array(",\"sealed\":\"AAAA\"}".utf8))
        Fixture.write(path, json)
        #expect(try catalog.all().isEmpty)
        #expect(try catalog.damaged().first?.problem.contains("sealed, in an unencrypted repository") == true)
        // Short and look-alike files are read as they are.
        #expect(!SnapshotCatalog.mentionsSealed(Array("\"seal".utf8)))
        #expect(!SnapshotCatalog.mentionsSealed(Array("\"sealeD\" \"sealed ".utf8)))
        #expect(SnapshotCatalog.mentionsSealed(Array("x\"sealed\"".utf8)))
    }
}
