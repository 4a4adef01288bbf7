#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// The one suite every storage backend passes: a local directory, S3 (moto on loopback), and
/// S3 through a proxy that answers with 503 SlowDown, stalls and cuts responses short.
@Suite("Storage conformance", .serialized)
struct StorageConformanceTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case local, s3, faultyS3
        var testDescription: String { rawValue }
    }

    /// A fresh, empty storage of the kind, kept alive with what serves it.
    static func make(_ backend: Backend) throws -> (storage: any RepositoryStorage, keep: [AnyObject]) {
        switch backend {
        case .local:
            let dir = TemporaryDirectory("storage")
            return (LocalStorage(root: dir.path), [dir])
        case .s3, .faultyS3:
            let server = try S3Server(faulty: backend == .faultyS3)
            var settings = S3Settings(location: S3Location("s3://conformance/repo/one")!)
            settings.complete(environment: server.environment)
            settings.listPageSize = 7  // several pages from a few dozen objects
            let s3 = S3Storage(settings: settings, credentials: S3Settings.credentials(environment: server.environment)!)
            try s3.createBucketIfMissing()
            return (s3, [server])
        }
    }

    @Test("save, load, ranges, list, size, remove", arguments: Backend.allCases)
    func objects(_ backend: Backend) throws {
        let (storage, keep) = try Self.make(backend)
        defer { withExtendedLifetime(keep) {} }
        let big = Fixture.bytes(3 << 20 + 17, seed: 7)
        try storage.save(".store/data/ab/pack", big)
        #expect(try storage.load(".store/data/ab/pack") == big)
        #expect(try storage.load(".store/data/ab/pack", offset: 1_000_003, length: 4096) == Array(big[1_000_003..<1_004_099]))
        #expect(try storage.size(".store/data/ab/pack") == big.count)
        // A range past the end is an error, never a short answer.
        for (offset, length) in [(big.count - 10, 20), (big.count + 10, 20)] {
            do {
                _ = try storage.load(".store/data/ab/pack", offset: offset, length: length)
                Issue.record("a range past the end loaded")
            } catch RepositoryError.corrupt(let file, _) {
                #expect(file.hasSuffix(".store/data/ab/pack"))
            }
        }

        // Replacing is whole; saving again is harmless.
        try storage.save(".store/config", Array("first".utf8))
        try storage.save(".store/config", Array("second, longer".utf8))
        try storage.save(".store/config", Array("second, longer".utf8))
        #expect(try storage.load(".store/config") == Array("second, longer".utf8))

        // Missing objects: ENOENT on load, nil size, and removing one succeeds.
        do {
            _ = try storage.load(".store/index/missing")
            Issue.record("a missing object loaded")
        } catch RepositoryError.io(_, _, let code) {
            #expect(code == ENOENT)
        }
        #expect(try storage.size(".store/index/missing") == nil)
        #expect(try storage.loadIfPresent(".store/index/missing") == nil)
        try storage.remove(".store/index/missing")

        // Listing: every object under the prefix, with sizes, in key order, across pages.
        var expected: [StoredObject] = []
        for i in 0..<23 {
            let key = ".store/index/" + String(format: "%02d", i) + "-" + BlobID.random().hex.prefix(8)
            let bytes = Fixture.bytes(i * 13, seed: UInt64(i))
            try storage.save(key, bytes)
            expected.append(StoredObject(key: key, size: bytes.count))
        }
        try storage.save("system/2026-11-28_10-00-00/metadata.json", Array("{}".utf8))
        try storage.save("system/2026-11-28_10-00-00/manifest.json", Array("{}".utf8))
        #expect(try storage.list(prefix: ".store/index/") == expected)
        #expect(try storage.list(prefix: ".store/index/0").map(\.key) == expected.prefix(10).map(\.key))
        #expect(try storage.list(prefix: "system/").map(\.key) == ["system/2026-11-28_10-00-00/manifest.json", "system/2026-11-28_10-00-00/metadata.json"])
        #expect(try storage.names(under: "") == [".store", "system"])
        #expect(try storage.names(under: "system/") == ["2026-11-28_10-00-00"])
        #expect(try storage.list(prefix: "nothing/").isEmpty)

        // Removal.
        for o in expected { try storage.remove(o.key) }
        #expect(try storage.list(prefix: ".store/index/").isEmpty)
        try storage.remove(".store/data/ab/pack")
        #expect(try storage.size(".store/data/ab/pack") == nil)

        if backend == .faultyS3, let server = keep.first as? S3Server {
            let stats = server.faultStats
            // The road was bad, and everything above still held.
            #expect((stats["slowdown"] ?? 0) > 0)
            #expect((stats["stall"] ?? 0) > 0)
            #expect((stats["cut"] ?? 0) > 0)
        }
    }

    @Test("S3 prefixes do not leak into each other, and a missing bucket says so")
    func s3Isolation() throws {
        let server = try S3Server()
        let a = try server.storage("s3://iso/a")
        let ab = try server.storage("s3://iso/ab")
        try a.save("x", [1])
        try ab.save("x", [2])
        #expect(try a.list(prefix: "").map(\.key) == ["x"])
        #expect(try ab.load("x") == [2])
        let missing = try S3Storage.open("s3://no-such-bucket/p", environment: server.environment)
        do {
            _ = try missing.load(".store/config")
            Issue.record("loaded from a missing bucket")
        } catch RepositoryError.io(let path, _, let code) {
            #expect(code == ENOENT)
            #expect(path.contains("no such bucket"))
        }
        #expect(try missing.size(".store/config") == nil)
    }
}
