#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import SnapshotCore
import Testing
import TestSupport

@Suite struct RepositoryTests {
    @Test func concurrentWritersStoreEachBlobOnceAndReopenReadsThem() throws {
        let dir = TemporaryDirectory()
        let repo = try Repository.initialize(at: dir.path)
        let blobs = (0..<64).map { Fixture.bytes(50_000 + $0, seed: UInt64($0 % 32)) }  // 32 distinct
        DispatchQueue.concurrentPerform(iterations: 4) { w in
            let writer = repo.makeBlobWriter(compressionLevel: 3)
            for (i, b) in blobs.enumerated() where i % 4 == w || i % 3 == w {
                _ = try! writer.store(b, type: .data)
            }
            try! writer.flush()
        }
        try repo.commitIndex()
        let reopened = try Repository.open(at: dir.path)
        let ids = Set(blobs.map { BlobID.hash($0) })
        #expect(reopened.index.count == ids.count)
        let reader = BlobReader(repository: reopened)
        for b in blobs {
            #expect(try reader.read(BlobID.hash(b)) == b)
        }
        // Each distinct blob is in exactly one pack entry across all packs.
        var total = 0
        for name in try POSIX.listDirectory(dir.path + "/.store/data") {
            for pack in try POSIX.listDirectory(dir.path + "/.store/data/" + name) {
                total += try PackFormat.readTrailer(path: dir.path + "/.store/data/\(name)/\(pack)").count
            }
        }
        #expect(total == ids.count)
    }

    @Test func openingRejectsMissingAndDamagedRepositories() throws {
        let dir = TemporaryDirectory()
        #expect(throws: RepositoryError.self) { try Repository.open(at: dir.path + "/nothing") }
        try Repository.initialize(at: dir.path)
        #expect(throws: RepositoryError.self) { try Repository.initialize(at: dir.path) }
        // A damaged index file is set aside, named; the repository still opens.
        Fixture.write(dir.path + "/.store/index/bad", Array("SNIX garbage".utf8))
        let repo = try Repository.open(at: dir.path)
        #expect(repo.damagedIndexFiles.count == 1)
        #expect(repo.damagedIndexFiles.first?.contains(".store/index/bad") == true)
    }

    @Test func exclusiveLockExcludesOthersUntilReleased() throws {
        let dir = TemporaryDirectory()
        try Repository.initialize(at: dir.path)
        let store = dir.path + "/.store"
        let writer = try RepositoryLock(storePath: store, mode: .exclusive, purpose: "create")
        do {
            _ = try RepositoryLock(storePath: store, mode: .shared, purpose: "list")
            Issue.record("shared lock taken while an exclusive one is held")
        } catch let RepositoryError.locked(_, holder) {
            #expect(holder.contains("PID \(getpid())"))
            #expect(holder.contains("create"))
        }
        writer.release()
        let r1 = try RepositoryLock(storePath: store, mode: .shared, purpose: "list")
        let r2 = try RepositoryLock(storePath: store, mode: .shared, purpose: "verify")
        #expect(throws: RepositoryError.self) { try RepositoryLock(storePath: store, mode: .exclusive, purpose: "create") }
        r1.release()
        r2.release()
        _ = try RepositoryLock(storePath: store, mode: .exclusive, purpose: "create")
    }
}
