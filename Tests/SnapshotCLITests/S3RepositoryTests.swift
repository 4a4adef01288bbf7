#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Repositories on S3 as a user meets them, against a real S3 API (moto's server on
/// loopback): the CLI on `s3://`, `copy` between local and S3 repositories, a road that
/// fails (503 SlowDown, stalls, responses cut short), a create killed mid-upload, and an
/// encrypted repository. Every test that writes a repository ends by verifying it.
@Suite(.serialized) struct S3RepositoryTests {
    let dir = TemporaryDirectory("snapshot-s3cli")
    var src: String { dir.sub("mesh") }

    init() throws {
        Fixture.write(src + "/configs/orchestrator.yaml", Array("workers: 4\nmodel: llama\n".utf8))
        Fixture.write(src + "/qdrant/collections/docs/segment.bin", Fixture.bytes(3_000_000, seed: 11))
        Fixture.write(src + "/logs/worker.log", Fixture.text(lines: 5_000))
        for i in 0..<30 { Fixture.write(src + "/state/w\(i).json", Array("{\"worker\": \(i), \"healthy\": true}\n".utf8)) }
        Fixture.write(dir.sub("pw"), Array("s3 secret\n".utf8), mode: 0o600)
        Fixture.write(dir.sub("other-pw"), Array("another\n".utf8), mode: 0o600)
    }

    func cli(_ server: S3Server, _ args: [String]) throws -> CLI.Result {
        try CLI.run(args, in: dir.path, environment: server.environment)
    }

    func json(_ r: CLI.Result) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
    }

    @Test("init, create, list, verify and restore on s3://; commands not ported yet say so")
    func endToEnd() throws {
        let server = try S3Server()
        let repo = "s3://mesh-backups/site-a"
        var r = try cli(server, ["--repo", repo, "init"])
        #expect(r.status == 0, "\(r.stderr)")
        // A create on an object store works in $TMPDIR and leaves nothing there.
        let tmp = dir.sub("tmp")
        try POSIX.makeDirectories(tmp, mode: 0o700)
        let withTmp = server.environment.merging(["TMPDIR": tmp]) { $1 }
        r = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "system"], in: dir.path, environment: withTmp)
        #expect(r.status == 0, "\(r.stderr)")
        Fixture.write(src + "/state/w3.json", Array("{\"worker\": 3, \"healthy\": false}\n".utf8))
        r = try CLI.run(["--repo", repo, "--json", "create", "--path", src, "--type", "system"], in: dir.path, environment: withTmp)
        #expect(r.status == 0, "\(r.stderr)")
        let left = try POSIX.listDirectory(tmp)
        #expect(left.isEmpty, "left in $TMPDIR: \(left)")
        // The second snapshot found the first as its parent: only the changed file is new.
        let added = json(r)["stored_bytes"] as? Int ?? -1
        #expect(added >= 0 && added < 10_000, "second create stored \(added) bytes")
        r = try cli(server, ["--repo", repo, "list", "--type", "system"])
        #expect(r.stdout.contains("2 snapshots"), "\(r.stdout)")
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        r = try cli(server, ["--repo", repo, "restore", "--snapshot", "system/latest", "--target", dir.sub("restored")])
        #expect(r.status == 0, "\(r.stderr)")
        let component = try FileManager.default.contentsOfDirectory(atPath: dir.sub("restored")).first ?? ""
        #expect(TreeComparison.differences(src, dir.sub("restored/" + component)).isEmpty)
        // The objects are where the prefix says, and nothing else is in the bucket.
        let storage = try server.storage("s3://mesh-backups")
        let keys = try storage.list(prefix: "").map(\.key)
        #expect(keys.allSatisfy { $0.hasPrefix("site-a/") })
        #expect(keys.contains("site-a/.store/config"))
        #expect(keys.contains { $0.hasPrefix("site-a/system/") && $0.hasSuffix("/metadata.json") })
        #expect(!keys.contains { $0.hasPrefix("site-a/.store/locks/") }, "a lock object was left behind")

        // Damage in a pack object is found by verify --read-data (read ahead or not) and
        // named; verify without it still passes (the trailer and index agree).
        let repoStorage = try server.storage(repo)
        let pack = try #require(try repoStorage.list(prefix: ".store/data/").max { $0.size < $1.size })
        var bytes = try repoStorage.load(pack.key)
        bytes[bytes.count / 3] ^= 0x40
        try repoStorage.save(pack.key, bytes)
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 1, "\(r.stdout) \(r.stderr)")
        #expect((r.stdout + r.stderr).contains("does not match its hash") || (r.stdout + r.stderr).contains("damaged"), "\(r.stdout) \(r.stderr)")
        bytes[bytes.count / 3] ^= 0x40
        try repoStorage.save(pack.key, bytes)
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")

        // Read-only commands beyond the basics.
        r = try cli(server, ["--repo", repo, "test-recovery", "--snapshot", "system/latest"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        r = try cli(server, ["--repo", repo, "--json", "analyze", "--snapshot", "system/latest"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", repo, "monitor", "--check-age", "--check-size", "--check-integrity"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try storage.list(prefix: "site-a/.store/monitor/").count == 1, "the monitor's state is kept in the repository")
        r = try cli(server, ["--repo", repo, "export", "--snapshot", "system/latest", "--output", dir.sub("system.tar.zst")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.sub("system.tar.zst")))

        r = try cli(server, ["--repo", repo, "recover", "--mode", "full", "--snapshot", "latest"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("recover does not work on an s3:// repository yet"))
        r = try cli(server, ["--repo", repo, "restore", "--snapshot", "latest"])
        #expect(r.status == 64)
        r = try cli(server, ["--repo", "s3://Bad_Bucket/x", "list"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("not an S3 bucket name"))
        r = try cli(server, ["--repo", "s3://mesh-backups/nothing-here", "list"])
        #expect(r.status == 74)
        #expect(r.stderr.contains("no repository at s3://mesh-backups/nothing-here"))
    }

    @Test("virtual-host addressing (bucket.endpoint) from the config's repository section")
    func virtualHost() throws {
        let server = try S3Server()
        // curl resolves *.localhost to loopback, and moto takes the bucket from the Host header.
        Fixture.write(dir.sub("vhost.yaml"), Array("""
            repository: {url: s3://vhost-bucket/agents, endpoint: "http://localhost:\(server.port)", region: eu-west-1, path_style: false}
            components:
              mesh: {path: \(src)}
            types:
              full: [mesh]
            """.utf8))
        var env = server.environment
        env.removeValue(forKey: "AWS_ENDPOINT_URL")
        let config = ["--config", dir.sub("vhost.yaml")]
        var r = try CLI.run(config + ["init"], in: dir.path, environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(config + ["create"], in: dir.path, environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(config + ["verify", "--all", "--read-data"], in: dir.path, environment: env)
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        // The objects are in that bucket, under the prefix (read path-style).
        let keys = try server.storage("s3://vhost-bucket").list(prefix: "").map(\.key)
        #expect(keys.contains("agents/.store/config") && keys.contains { $0.hasPrefix("agents/full/") && $0.hasSuffix("/metadata.json") }, "\(keys)")
    }

    @Test("copy local → S3 → S3 → local sends only what the target lacks; a second run sends nothing")
    func copyAround() throws {
        let server = try S3Server()
        let local = dir.sub("local")
        #expect(try CLI.run(["--repo", local, "create", "--path", src, "--type", "config"]).status == 0)
        Fixture.write(src + "/configs/orchestrator.yaml", Array("workers: 8\nmodel: llama\n".utf8))
        #expect(try CLI.run(["--repo", local, "create", "--path", src, "--type", "full"]).status == 0)

        var r = try cli(server, ["--repo", local, "--json", "copy", "--to", "s3://copies/one"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect((json(r)["copied"] as? [String])?.count == 2)
        let firstBlobs = json(r)["blobs"] as? Int ?? 0
        #expect(firstBlobs > 30)
        r = try cli(server, ["--repo", local, "--json", "copy", "--to", "s3://copies/one"])
        #expect(r.status == 0)
        #expect((json(r)["copied"] as? [String]) == [])
        #expect((json(r)["present"] as? [String])?.count == 2)
        #expect(json(r)["blobs"] as? Int == 0)

        // Only one type, then the rest: the second run sends only what the first lacked.
        r = try cli(server, ["--repo", "s3://copies/one", "--json", "copy", "--to", "s3://copies/two", "--type", "config"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect((json(r)["copied"] as? [String])?.count == 1)
        r = try cli(server, ["--repo", "s3://copies/one", "--json", "copy", "--to", "s3://copies/two"])
        #expect((json(r)["copied"] as? [String])?.count == 1)
        #expect((json(r)["present"] as? [String])?.count == 1)
        let secondBlobs = json(r)["blobs"] as? Int ?? 0
        #expect(secondBlobs > 0 && secondBlobs < 10, "the full snapshot differs in one file, yet \(secondBlobs) blobs were sent")

        let back = dir.sub("back")
        r = try cli(server, ["--repo", "s3://copies/two", "copy", "--to", back])
        #expect(r.status == 0, "\(r.stderr)")
        for repo in [local, "s3://copies/one", "s3://copies/two", back] {
            let v = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
            #expect(v.status == 0, "\(repo): \(v.stdout) \(v.stderr)")
        }
        r = try cli(server, ["--repo", back, "restore", "--snapshot", "full/latest", "--target", dir.sub("from-back")])
        #expect(r.status == 0, "\(r.stderr)")
        let component = try FileManager.default.contentsOfDirectory(atPath: dir.sub("from-back")).first ?? ""
        #expect(TreeComparison.differences(src, dir.sub("from-back/" + component)).isEmpty)
        r = try cli(server, ["--repo", back, "copy", "--to", back])
        #expect(r.status == 64)
    }

    @Test("through a road that answers SlowDown, stalls and cuts responses short, everything completes")
    func faultyRoad() throws {
        let server = try S3Server(faulty: true, seed: 5)
        let repo = "s3://unreliable/repo"
        var r = try cli(server, ["--repo", repo, "create", "--path", src])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", repo, "restore", "--snapshot", "latest", "--target", dir.sub("restored")])
        #expect(r.status == 0, "\(r.stderr)")
        let component = try FileManager.default.contentsOfDirectory(atPath: dir.sub("restored")).first ?? ""
        #expect(TreeComparison.differences(src, dir.sub("restored/" + component)).isEmpty)
        r = try cli(server, ["--repo", repo, "copy", "--to", dir.sub("local")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try CLI.run(["--repo", dir.sub("local"), "verify", "--all", "--read-data"]).status == 0)
        let stats = server.faultStats
        #expect((stats["slowdown"] ?? 0) > 0 && (stats["stall"] ?? 0) > 0 && (stats["cut"] ?? 0) > 0, "\(stats)")
    }

    @Test("a create killed mid-upload leaves an S3 repository that verifies and takes the next create")
    func killedCreate() throws {
        let server = try S3Server()
        let repo = "s3://killed/repo"
        #expect(try cli(server, ["--repo", repo, "create", "--path", src]).status == 0)
        let big = dir.sub("big")
        for i in 0..<6 { Fixture.write(big + "/model-\(i).safetensors", Fixture.bytes(12_000_000, seed: UInt64(100 + i))) }
        let storage = try server.storage(repo)
        let packsBefore = try storage.list(prefix: ".store/data/").count
        // Its scratch directory in $TMPDIR is left by the kill and removed by the next create.
        let tmp = dir.sub("killed-tmp")
        try POSIX.makeDirectories(tmp, mode: 0o700)
        let withTmp = server.environment.merging(["TMPDIR": tmp]) { $1 }
        let running = try CLI.start(["--repo", repo, "create", "--path", big], in: dir.path, environment: withTmp)
        // Killed as soon as its first new pack is in the bucket.
        let deadline = Date().addingTimeInterval(60)
        while try storage.list(prefix: ".store/data/").count == packsBefore, running.process.isRunning, Date() < deadline { usleep(10_000) }
        kill(running.process.processIdentifier, SIGKILL)
        _ = running.finish()
        #expect(try storage.list(prefix: ".store/data/").count > packsBefore, "no pack was uploaded before the kill")
        var r = try cli(server, ["--repo", repo, "list"])
        #expect(r.stdout.contains("1 snapshot"), "\(r.stdout)")
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        let orphans = Set(try storage.list(prefix: ".store/data/").map(\.key))
        let scratch = try POSIX.listDirectory(tmp)
        #expect(scratch.count == 1 && scratch[0].hasPrefix("snapshot-\(running.process.processIdentifier)-"), "\(scratch)")
        // Its lock object names a process that is gone: the next create goes ahead.
        r = try CLI.run(["--repo", repo, "create", "--path", big], in: dir.path, environment: withTmp)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("removed the scratch directory \(tmp)/\(scratch.first ?? "?")"), "\(r.stderr)")
        let tmpLeft = try POSIX.listDirectory(tmp)
        #expect(tmpLeft.isEmpty, "left in $TMPDIR: \(tmpLeft)")
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        // delete and prune: the killed create's packs and the deleted snapshot's data go.
        r = try cli(server, ["--repo", repo, "--json", "list"])
        let first = ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [[String: Any]])?.last?["snapshot_id"] as? String ?? "?"
        // A create that died between its manifest and its metadata left a manifest alone:
        // invisible, and gone after prune.
        try storage.save("system/2026-01-01_00-00-00/manifest.json", Array("{}".utf8))
        r = try cli(server, ["--repo", repo, "list"])
        #expect(!r.stdout.contains("2026-01-01_00-00-00") && !r.stdout.contains("DAMAGED"), "\(r.stdout)")
        r = try cli(server, ["--repo", repo, "delete", "--snapshot", first])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", repo, "--json", "prune"])
        #expect(r.status == 0, "\(r.stderr)")
        let left = Set(try storage.list(prefix: ".store/data/").map(\.key))
        #expect(!orphans.isSubset(of: left), "the killed create's packs are still there")
        let gone = try storage.list(prefix: "").map(\.key).filter { $0.hasPrefix("full/\(first)/") || $0.hasPrefix("system/2026-01-01_00-00-00/") }
        #expect(gone.isEmpty, "left behind: \(gone)")
        let packsNamed = try Repository.open(storage: storage).index.allLocations().values.reduce(into: Set<String>()) { $0.insert(Repository.packKey($1.pack)) }
        #expect(left == packsNamed, "prune left packs no index names")
        r = try cli(server, ["--repo", repo, "list"])
        #expect(r.stdout.contains("1 snapshot"), "\(r.stdout)")
        r = try cli(server, ["--repo", repo, "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
    }

    @Test("a copy killed mid-upload resumes: the next run copies the rest, the target verifies")
    func killedCopy() throws {
        let server = try S3Server()
        let local = dir.sub("local")
        let big = dir.sub("big")
        for i in 0..<5 { Fixture.write(big + "/weights-\(i).gguf", Fixture.bytes(10_000_000, seed: UInt64(200 + i))) }
        #expect(try CLI.run(["--repo", local, "create", "--path", big]).status == 0)
        #expect(try CLI.run(["--repo", local, "create", "--path", src]).status == 0)
        let target = try server.storage("s3://resume/repo")
        let running = try CLI.start(["--repo", local, "copy", "--to", "s3://resume/repo"], in: dir.path, environment: server.environment)
        let deadline = Date().addingTimeInterval(60)
        while try target.list(prefix: ".store/data/").isEmpty, running.process.isRunning, Date() < deadline { usleep(5_000) }
        kill(running.process.processIdentifier, SIGKILL)
        _ = running.finish()
        var r = try cli(server, ["--repo", "s3://resume/repo", "--json", "list"])
        #expect(r.status == 0 && !r.stdout.contains("snapshot_id"), "nothing committed by the killed copy: \(r.stdout) \(r.stderr)")
        r = try cli(server, ["--repo", local, "--json", "copy", "--to", "s3://resume/repo"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect((json(r)["copied"] as? [String])?.count == 2)
        r = try cli(server, ["--repo", "s3://resume/repo", "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        r = try cli(server, ["--repo", "s3://resume/repo", "--json", "prune"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", "s3://resume/repo", "verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
    }

    @Test("an encrypted repository on S3: nothing readable without the password; copy keeps the keys")
    func encrypted() throws {
        let server = try S3Server()
        let repo = "s3://sealed/repo"
        let pw = ["--password-file", dir.sub("pw")]
        var r = try cli(server, ["--repo", repo] + pw + ["init", "--encryption", "aes-256-gcm"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", repo] + pw + ["create", "--path", src])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", repo, "list"])
        #expect(r.status == 77)
        // No object holds the plaintext of a file or its name.
        let storage = try server.storage(repo)
        for o in try storage.list(prefix: "") {
            let bytes = Data(try storage.load(o.key))
            #expect(bytes.range(of: Data("workers: ".utf8)) == nil && bytes.range(of: Data("orchestrator.yaml".utf8)) == nil, "\(o.key)")
        }
        r = try cli(server, ["--repo", repo] + pw + ["copy", "--to", "s3://sealed/copy"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try cli(server, ["--repo", "s3://sealed/copy"] + pw + ["verify", "--all", "--read-data"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        // A repository this password does not open, or one with other keys, cannot take them.
        #expect(try cli(server, ["--repo", "s3://sealed/other", "--password-file", dir.sub("other-pw"), "init"]).status == 0)
        r = try cli(server, ["--repo", repo] + pw + ["copy", "--to", "s3://sealed/other"])
        #expect(r.status == 77)
        #expect(r.stderr.contains("wrong password"), "\(r.stderr)")
        #expect(try cli(server, ["--repo", "s3://sealed/same-password"] + pw + ["init"]).status == 0)
        r = try cli(server, ["--repo", repo] + pw + ["copy", "--to", "s3://sealed/same-password"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("other master keys"), "\(r.stderr)")
        r = try cli(server, ["--repo", repo] + pw + ["verify", "--all", "--read-data"])
        #expect(r.status == 0)
    }
}
