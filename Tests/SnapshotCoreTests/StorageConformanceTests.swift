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

@Suite struct SigV4Tests {
    /// The GET Object example of the S3 API reference ("Signature Calculations for the
    /// Authorization Header: Transferring Payload in a Single Chunk").
    @Test func documentedExample() {
        let auth = SigV4.authorization(
            method: "GET", path: "/test.txt", query: [],
            headers: ["Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9", "x-amz-content-sha256": SigV4.emptyHash, "x-amz-date": "20130524T000000Z"],
            payloadHash: SigV4.emptyHash,
            credentials: S3Credentials(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1", amzDate: "20130524T000000Z")
        #expect(auth == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func addressingAndSettings() throws {
        var s = S3Settings(location: S3Location("s3://bucket/a/b/")!)
        #expect(s.location.prefix == "a/b")
        #expect(s.baseURL == "https://bucket.s3.us-east-1.amazonaws.com")
        s.region = "eu-west-1"
        #expect(s.baseURL == "https://bucket.s3.eu-west-1.amazonaws.com")
        s.endpoint = "http://127.0.0.1:9000"
        #expect(s.baseURL == "http://127.0.0.1:9000/bucket")
        s.endpoint = "https://minio.example:9000"
        #expect(s.baseURL == "https://bucket.minio.example:9000")
        s.pathStyle = true
        #expect(s.baseURL == "https://minio.example:9000/bucket")
        #expect(S3Location("s3://ab/x")?.problem != nil)
        #expect(S3Location("s3://bucket/x/../y")?.problem != nil)
        let dir = TemporaryDirectory("aws")
        Fixture.write(dir.sub("credentials"), Array("[default]\naws_access_key_id = A\naws_secret_access_key = B\n[ci]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n".utf8))
        Fixture.write(dir.sub("config"), Array("[default]\nregion = us-west-2\n[profile ci]\nregion = ap-south-1\n".utf8))
        let env = ["AWS_SHARED_CREDENTIALS_FILE": dir.sub("credentials"), "AWS_CONFIG_FILE": dir.sub("config")]
        #expect(S3Settings.credentials(environment: env) == S3Credentials(accessKey: "A", secretKey: "B"))
        #expect(S3Settings.credentials(environment: env.merging(["AWS_PROFILE": "ci"]) { $1 }) == S3Credentials(accessKey: "C", secretKey: "D", sessionToken: "T"))
        #expect(S3Settings.credentials(environment: env.merging(["AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "F"]) { $1 }) == S3Credentials(accessKey: "E", secretKey: "F"))
        var t = S3Settings(location: S3Location("s3://bucket")!)
        t.complete(environment: env.merging(["AWS_PROFILE": "ci"]) { $1 })
        #expect(t.resolvedRegion == "ap-south-1")
        var u = S3Settings(location: S3Location("s3://bucket")!)
        u.complete(environment: env.merging(["AWS_REGION": "ca-central-1", "AWS_ENDPOINT_URL": "http://localhost:4566"]) { $1 })
        #expect(u.resolvedRegion == "ca-central-1")
        #expect(u.baseURL == "http://localhost:4566/bucket")
    }
}

@Suite struct RemoteLockTests {
    @Test("lock objects: readers beside a create, one create at a time, exclusive alone, expired ones ignored")
    func kinds() throws {
        let server = try S3Server()
        let s3 = try server.storage("s3://locks/repo")
        func take(_ kind: RemoteLock.Kind) throws -> RemoteLock { try RemoteLock(storage: s3, kind: kind, purpose: "test", wait: 0) }
        func refused(_ kind: RemoteLock.Kind) -> Bool {
            do {
                _ = try take(kind).release()
                return false
            } catch RepositoryError.locked(_, let holder) {
                return holder.contains("PID \(getpid())")
            } catch {
                return false
            }
        }
        let create = try take(.create)
        let reader = try take(.shared)
        #expect(refused(.create))
        #expect(refused(.exclusive))
        reader.release()
        create.release()
        let exclusive = try take(.exclusive)
        #expect(refused(.shared))
        exclusive.release()
        #expect(try s3.list(prefix: ".store/locks/").isEmpty)

        // A holder on another host whose object has expired holds nothing.
        let stale = #"{"mode":"exclusive","holder":"PID 1 on host elsewhere (create)","host":"elsewhere","pid":1,"expires":1000}"#
        try s3.save(".store/locks/exclusive-elsewhere-1-00000000", Array(stale.utf8))
        try take(.exclusive).release()
        #expect(try s3.list(prefix: ".store/locks/").isEmpty)
        // One that has not expired does.
        let live = #"{"mode":"create","holder":"PID 1 on host elsewhere (create)","host":"elsewhere","pid":1,"expires":\#(Date().timeIntervalSince1970 + 60)}"#
        try s3.save(".store/locks/create-elsewhere-1-00000000", Array(live.utf8))
        do {
            _ = try take(.create)
            Issue.record("a live create lock of another host was ignored")
        } catch RepositoryError.locked(_, let holder) {
            #expect(holder.contains("host elsewhere"))
        }
        try take(.shared).release()
    }
}
