#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

@Suite(.serialized) struct CLITests {
    func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    func expectVerifies(_ repo: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let v = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
        #expect(v.status == 0, "verify: \(v.stdout) \(v.stderr)", sourceLocation: sourceLocation)
    }

    @Test func createListShowLsCatDiffRestoreWithJSON() throws {
        let dir = TemporaryDirectory("snapshot-cli")
        let src = dir.sub("data")
        Fixture.fidelityTree(at: src)
        let repo = dir.sub("repo")
        #expect(try CLI.run(["--repo", repo, "init"]).status == 0)
        let created = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental", "--name", "first", "--tag", "env=test", "--time", "2024-01-15T10:30:00Z", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        let meta = try #require(try json(created.stdout) as? [String: Any])
        for key in ["snapshot_id", "timestamp", "type", "name", "version", "components", "checksums", "size_bytes", "stored_bytes", "compression_ratio", "duration_s", "parent", "hostname", "tags"] {
            #expect(meta[key] != nil, "metadata.json lacks \(key)")
        }
        #expect(meta["snapshot_id"] as? String == "2024-01-15_10-30-00")
        #expect(meta["timestamp"] as? String == "2024-01-15T10:30:00Z")
        #expect((meta["checksums"] as? [String: String])?["data"]?.hasPrefix("sha256:") == true)
        #expect(POSIX.exists(repo + "/incremental/2024-01-15_10-30-00/metadata.json"))
        #expect(FileStatLink.target(repo + "/incremental/latest") == "2024-01-15_10-30-00")

        Fixture.write(src + "/configs/system.yaml", Array("system:\n  name: changed\n".utf8))
        let second = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental"])
        #expect(second.status == 0)
        let secondID = second.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let list = try #require(try json(try CLI.run(["--repo", repo, "list", "--json"]).stdout) as? [[String: Any]])
        #expect(list.map { $0["snapshot_id"] as? String } == [secondID, "2024-01-15_10-30-00"])
        #expect(try CLI.run(["--repo", repo, "show", "--snapshot", "first", "--json"]).stdout.contains("\"name\" : \"first\""))

        let ls = try #require(try json(try CLI.run(["--repo", repo, "ls", "--snapshot", "latest", "data/configs", "--json"]).stdout) as? [[String: Any]])
        #expect(Set(ls.compactMap { $0["path"] as? String }) == ["data/configs", "data/configs/system.yaml", "data/configs/secret.yaml"])
        #expect(Set(ls[0].keys) == ["path", "type", "mode", "size", "mtime"])

        #expect(try CLI.run(["--repo", repo, "cat", "--snapshot", "first", "data/configs/system.yaml"]).stdout == "system:\n  name: test\n")
        let diff = try CLI.run(["--repo", repo, "diff", "first", "latest"])
        #expect(diff.stdout.contains("M  data/configs/system.yaml"))

        let out = dir.sub("out")
        let restored = try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", out, "--verify"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(TreeComparison.differences(src, out + "/data") == [])
        let verify = try #require(try json(try CLI.run(["--repo", repo, "verify", "--all", "--json"]).stdout) as? [String: Any])
        #expect(verify["ok"] as? Bool == true)
        #expect((verify["snapshots"] as? [[String: Any]])?.count == 2)
        try expectVerifies(repo)
    }

    @Test func exitCodesAndOneLineErrors() throws {
        let dir = TemporaryDirectory("snapshot-cli")
        let repo = dir.sub("repo")
        Fixture.write(dir.sub("src/a"), [1])
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--repo", repo] + args, in: dir.path) }

        #expect(try run(["list"]).status == 74)  // no repository yet
        #expect(try run(["create", "--type", "weekly", "--path", dir.sub("src")]).status == 64)
        #expect(try run(["create", "--time", "yesterday", "--path", dir.sub("src")]).status == 64)
        let missing = try run(["create", "--path", dir.sub("nope")])
        #expect(missing.status == 65)
        #expect(missing.stderr == "snapshot: error: component nope: source \(dir.sub("nope")) does not exist\n")
        #expect(try run(["create", "--path", dir.sub("src")]).status == 0)
        let notFound = try run(["show", "--snapshot", "nothing-by-this-name"])
        #expect(notFound.status == 64)
        #expect(notFound.stderr.split(separator: "\n").count == 1)
        #expect(try run(["verify"]).status == 64)
        #expect(try run(["cat", "--snapshot", "latest", "src/zzz"]).status == 1)
        let badConfig = dir.sub("bad.yaml")
        Fixture.write(badConfig, Array("root: .\ncompresion: {level: 3}\n".utf8))
        let config = try CLI.run(["--config", badConfig, "--repo", repo, "list"])
        #expect(config.status == 65)
        #expect(config.stderr.contains("bad.yaml:2: unknown key \"compresion\""))

        // A lock held by another process: exit 75 naming the holder.
        let lock = try RepositoryLock(storePath: repo + "/.store", mode: .exclusive, purpose: "create")
        let busy = try run(["create", "--path", dir.sub("src")])
        #expect(busy.status == 75)
        #expect(busy.stderr.contains("locked by PID \(getpid())"))
        lock.release()

        // Damaged metadata: the snapshot is listed as damaged; showing it is exit 65 naming the file.
        let id = try run(["list", "--json"]).stdout
        let snapID = try #require((try json(id) as? [[String: Any]])?.first?["snapshot_id"] as? String)
        let metaPath = repo + "/incremental/\(snapID)/metadata.json"
        let full = repo + "/full/\(snapID)/metadata.json"
        let path = POSIX.exists(metaPath) ? metaPath : full
        let saved = try POSIX.readFile(path)
        Fixture.write(path, Array("{".utf8))
        #expect(try run(["list"]).stdout.contains("DAMAGED"))
        let damaged = try run(["show", "--snapshot", snapID])
        #expect(damaged.status == 65)
        #expect(damaged.stderr.contains("metadata.json"))
        Fixture.write(path, saved)
        try expectVerifies(repo)
    }

    /// A pack whose last write fails (here the file size limit, `ulimit -f`, as a full disk
    /// would at that point) is removed: no `.tmp` pack is left and nothing is committed.
    @Test func aPackThatFailsAsItIsFinishedIsRemoved() throws {
        let dir = TemporaryDirectory()
        let src = dir.sub("src"), repo = dir.sub("repo")
        // One pack of ~1.5 MiB: its first MiB goes out as it fills, the rest as it is finished.
        Fixture.write(src + "/data.bin", Fixture.bytes(1_500_000, seed: 3))
        #expect(try CLI.run(["--repo", repo, "init"]).status == 0)
        // SIGXFSZ ignored (kept across exec), so that a write past the limit fails with EFBIG;
        // bash's `ulimit -f` counts KiB (dash's 512-byte blocks): 1,228,800 bytes.
        let r = try CLI.capture("/bin/bash", ["-c", "trap '' XFSZ; ulimit -f 1200; exec '\(CLI.binary)' --repo repo create --path src --type data"], in: dir.path, environment: [:])
        #expect(r.status == 74 && r.stderr.contains("File too large") && r.stderr.contains(repo + "/.store/data/"), "\(r.status): \(r.stderr)")
        let leftovers = try CLI.shell("find .store -name '*.tmp*' | wc -l", in: repo)
        #expect(leftovers.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        let list = try CLI.run(["--repo", repo, "list", "--json"])
        #expect(list.status == 0 && !list.stdout.contains("\"id\""), "\(list.stdout)")
        try expectVerifies(repo)
    }

    /// A file whose size changes between its listing and its reading (here a /proc file,
    /// listed as 0 bytes) is counted in the snapshot's metadata as what was stored.
    @Test func aFileThatChangedSizeWhileReadIsCountedAsStored() throws {
        let dir = TemporaryDirectory("snapshot-size")
        let repo = dir.sub("repo")
        var st = stat()
        #expect(stat("/proc/loadavg", &st) == 0 && st.st_size == 0)
        let created = try CLI.run(["--repo", repo, "create", "--path", "/proc/loadavg", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        let metadata = try #require(try json(created.stdout) as? [String: Any])
        let bytes = try #require(((metadata["components"] as? [String: Any])?["loadavg"] as? [String: Any])?["bytes"] as? Int)
        let listed = try #require(try json(try CLI.run(["--repo", repo, "ls", "--snapshot", "latest", "--json"]).stdout) as? [[String: Any]])
        let size = try #require(listed.first { $0["path"] as? String == "loadavg/loadavg" }?["size"] as? Int)
        #expect(bytes == size && size > 0, "metadata \(bytes) B, stored \(size) B")
        #expect(metadata["size_bytes"] as? Int == size)
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", dir.sub("out")]).status == 0)
        #expect(try POSIX.readFile(dir.sub("out/loadavg/loadavg")).count == size)
        try expectVerifies(repo)
    }

    /// A component whose directory holds the repository (`path: .` beside `./snapshots`):
    /// snapshots leave the repository out, an in-place restore is refused before anything
    /// changes (it would swap the repository away with the directory), and so is a restore
    /// whose target would put files into the repository.
    @Test func aRestoreNeverWritesIntoOrSwapsAwayTheRepository() throws {
        let dir = TemporaryDirectory("snapshot-around")
        let root = dir.sub("agents"), repo = dir.sub("agents/snapshots")
        Fixture.write(root + "/data/a.txt", Array("a\n".utf8))
        let config = dir.config(component: "all", path: ".", root: root, repository: repo)
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--config", config] + args) }
        for _ in 0..<2 { #expect(try run(["create", "--type", "full"]).status == 0) }
        let listed = try run(["ls", "--snapshot", "latest"]).stdout
        #expect(!listed.contains("snapshots") && listed.contains("all/data/a.txt"), "\(listed)")

        Fixture.write(root + "/data/a.txt", Array("changed\n".utf8))
        let inPlace = try run(["restore", "--snapshot", "latest"])
        #expect(inPlace.status == 64 && inPlace.stderr.contains("holds the repository \(repo)") && inPlace.stderr.split(separator: "\n").count == 1, "\(inPlace.stderr)")
        #expect(try run(["check-dependencies"]).stdout.contains("no in-place restore: \(root) holds the repository \(repo)"))
        #expect(try POSIX.readFile(root + "/data/a.txt") == Array("changed\n".utf8))
        let into = try run(["restore", "--snapshot", "latest", "--target", repo + "/restored"])
        #expect(into.status == 64 && into.stderr.contains("into the repository"), "\(into.stderr)")
        #expect(!POSIX.exists(repo + "/restored"))
        // Elsewhere it restores; the repository is whole.
        #expect(try run(["restore", "--snapshot", "latest", "--target", dir.sub("out")]).status == 0)
        #expect(try POSIX.readFile(dir.sub("out/all/data/a.txt")) == Array("a\n".utf8))
        let listing = try run(["list", "--json"])
        #expect(listing.stdout.components(separatedBy: "\"snapshot_id\"").count == 3, "\(listing.stdout)")
        try expectVerifies(repo)
    }

    /// A component whose path is a symlink (`data -> disk/data`, as `/var/lib/app ->
    /// /mnt/ssd/app`) is restored in place where the link leads, as create read it: the link
    /// stays a link, the data comes back on its own disk, and a secret this run uses, named
    /// through the link, is kept live.
    @Test func anInPlaceRestoreOfALinkedComponentRestoresWhereTheLinkLeads() throws {
        let dir = TemporaryDirectory("snapshot-linked")
        Fixture.write(dir.sub("disk/data/f.txt"), Array("v1\n".utf8))
        Fixture.write(dir.sub("disk/data/mqtt.pass"), Array("old-secret\n".utf8), mode: 0o600)
        #expect(symlink("disk/data", dir.sub("data")) == 0)
        let config = dir.config(extra: "mqtt: {username: agent, password_file: data/mqtt.pass}")
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--config", config] + args) }
        #expect(try run(["create", "--type", "full"]).status == 0)
        Fixture.write(dir.sub("disk/data/f.txt"), Array("v2\n".utf8))
        Fixture.write(dir.sub("disk/data/mqtt.pass"), Array("new-secret\n".utf8), mode: 0o600)
        let restored = try run(["restore", "--snapshot", "latest"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(FileStatLink.target(dir.sub("data")) == "disk/data")
        #expect(try POSIX.readFile(dir.sub("disk/data/f.txt")) == Array("v1\n".utf8))
        #expect(try POSIX.readFile(dir.sub("disk/data/mqtt.pass")) == Array("new-secret\n".utf8))
        #expect(try POSIX.listDirectory(dir.sub("disk")) == ["data"])
        try expectVerifies(dir.sub("repo"))
    }

    /// `latest` never stands for an older snapshot without a word when the newest is damaged:
    /// it names the damaged one, the newest readable one and the commands that mend it, and
    /// `rebuild-metadata` and `delete` take `latest` for it.
    @Test func latestNamesADamagedNewestSnapshotInsteadOfSkippingIt() throws {
        let dir = TemporaryDirectory("snapshot-latest")
        let repo = dir.sub("repo"), src = dir.sub("src")
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--repo", repo] + args) }
        var ids: [String] = []
        for (i, time) in ["2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"].enumerated() {
            Fixture.write(src + "/day.txt", Array("day \(i)\n".utf8))
            let r = try run(["create", "--type", "full", "--path", src, "--time", time])
            #expect(r.status == 0, "\(r.stderr)")
            ids.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let metadata = repo + "/full/\(ids[1])/metadata.json"
        Fixture.write(metadata, Array("{\"snapshot_id\": garbled".utf8))

        let restore = try run(["restore", "--snapshot", "latest", "--target", dir.sub("out")])
        #expect(restore.status == 65, "\(restore.stderr)")
        #expect(restore.stderr.split(separator: "\n").count == 1, "\(restore.stderr)")
        for part in [metadata, "full/\(ids[1]) is the newest", "the newest readable one is full/\(ids[0])", "rebuild-metadata --snapshot full/\(ids[1])", "delete --snapshot full/\(ids[1])"] {
            #expect(restore.stderr.contains(part), "\(part): \(restore.stderr)")
        }
        #expect(!POSIX.exists(dir.sub("out")))
        #expect(try run(["restore", "--snapshot", "full/latest", "--target", dir.sub("out")]).status == 65)
        // By id: the file named once, and the same remedies.
        let shown = try run(["show", "--snapshot", ids[1]])
        #expect(shown.status == 65 && shown.stderr.components(separatedBy: "metadata.json").count == 3, "\(shown.stderr)")
        #expect(shown.stderr.contains("rebuild-metadata --snapshot full/\(ids[1])"), "\(shown.stderr)")
        // An older snapshot is still had by its id.
        #expect(try run(["restore", "--snapshot", ids[0], "--target", dir.sub("old")]).status == 0)
        #expect(try POSIX.readFile(dir.sub("old/src/day.txt")) == Array("day 0\n".utf8))

        // rebuild-metadata takes `latest` for the damaged newest, and then it restores.
        let rebuilt = try run(["rebuild-metadata", "--snapshot", "latest"])
        #expect(rebuilt.status == 0 && rebuilt.stdout.contains("full/\(ids[1])"), "\(rebuilt.stdout) \(rebuilt.stderr)")
        #expect(try run(["restore", "--snapshot", "latest", "--target", dir.sub("out")]).status == 0)
        #expect(try POSIX.readFile(dir.sub("out/src/day.txt")) == Array("day 1\n".utf8))
        // So does delete; `latest` is then the older one.
        Fixture.write(metadata, Array("garbled".utf8))
        let deleted = try run(["delete", "--snapshot", "latest"])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(!POSIX.exists(repo + "/full/\(ids[1])"))
        let listed = try #require(try json(try run(["list", "--json"]).stdout) as? [[String: Any]])
        #expect(listed.compactMap { $0["snapshot_id"] as? String } == [ids[0]])
        try expectVerifies(repo)
    }

    @Test func aCreateKilledAtRandomPointsLeavesAVerifiableRepository() throws {
        let dir = TemporaryDirectory("snapshot-kill")
        let src = dir.sub("src")
        for i in 0..<24 {
            Fixture.write(src + "/f\(i).bin", Fixture.bytes(1_500_000, seed: UInt64(i)))
        }
        Fixture.write(src + "/log.txt", Fixture.text(lines: 100_000))
        let repo = dir.sub("repo")
        #expect(try CLI.run(["--repo", repo, "init"]).status == 0)
        // Time one create so that the kills spread over all of its phases, commit included.
        let t0 = Date()
        #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--type", "full", "--quiet"]).status == 0)
        let micros = UInt32(max(0.05, Date().timeIntervalSince(t0)) * 1_000_000)
        var generator = SystemRandomNumberGenerator()
        var completed = 1
        let rounds = 8
        for round in 0..<rounds {
            // Change some files so every create has new data to write.
            Fixture.write(src + "/f\(round).bin", Fixture.bytes(1_500_000, seed: UInt64(1000 + round)))
            let running = try CLI.start(["--repo", repo, "create", "--path", src, "--quiet"])
            usleep(UInt32.random(in: 1_000...micros, using: &generator))
            kill(running.process.processIdentifier, SIGKILL)
            running.process.waitUntilExit()
            if running.process.terminationReason == .exit && running.process.terminationStatus == 0 { completed += 1 }
            let v = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
            #expect(v.status == 0, "round \(round): \(v.stdout) \(v.stderr)")
        }
        let listed = try #require(try json(try CLI.run(["--repo", repo, "list", "--json"]).stdout) as? [[String: Any]])
        // A kill can land after the commit point and before the exit: such a snapshot is
        // complete (verify passed above) though its process did not exit 0.
        #expect(listed.count >= completed && listed.count <= rounds + 1, "\(listed.count) snapshots, \(completed) creates completed")
        #expect(completed < rounds + 1, "no create was interrupted")
        // The next create works and restores exactly.
        let next = try CLI.run(["--repo", repo, "create", "--path", src])
        #expect(next.status == 0, "\(next.stderr)")
        let out = dir.sub("out")
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", out]).status == 0)
        #expect(TreeComparison.differences(src, out + "/src") == [])
        try expectVerifies(repo)
    }
}

@Suite struct PermissionTests {
    @Test func theRepositoryIsPrivateWhateverTheUmask() throws {
        let dir = TemporaryDirectory("snapshot-modes")
        Fixture.write(dir.sub("src/a.txt"), Array("secret\n".utf8))
        let repo = dir.sub("repo")
        let made = try CLI.shell("umask 000 && '\(CLI.binary)' --repo '\(repo)' create --path '\(dir.sub("src"))' --type data && '\(CLI.binary)' --repo '\(repo)' verify --all", in: dir.path)
        #expect(made.status == 0, "\(made.stderr)")
        func mode(_ path: String) -> mode_t {
            var st = stat()
            return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : 0o7777
        }
        let id = try POSIX.listDirectory(repo + "/data").first { $0 != "latest" } ?? ""
        #expect(mode(repo) == 0o750 && mode(repo + "/data") == 0o750 && mode(repo + "/data/" + id) == 0o750)
        #expect(mode(repo + "/data/\(id)/metadata.json") == 0o640 && mode(repo + "/data/\(id)/manifest.json") == 0o640)
        var store: [String: mode_t] = [:]
        let e = FileManager.default.enumerator(atPath: repo + "/.store")
        while let f = e?.nextObject() as? String { store[f] = mode(repo + "/.store/" + f) }
        #expect(mode(repo + "/.store") == 0o700)
        #expect(store.allSatisfy { $0.value == 0o600 || $0.value == 0o700 }, "\(store.filter { $0.value != 0o600 && $0.value != 0o700 })")
        #expect(store.keys.contains("config") && store.keys.contains("lock") && store.keys.contains { $0.hasPrefix("index/") })
        #expect(!made.stderr.contains("warning"), "\(made.stderr)")
        // Loosened by hand: verify still passes, and says what to fix.
        chmod(repo + "/.store/config", 0o644)
        chmod(repo + "/data/\(id)/metadata.json", 0o666)
        let v = try CLI.run(["--repo", repo, "verify", "--all"])
        #expect(v.status == 0)
        #expect(v.stderr.contains("warning: 1 store files (want 0600) open to more than that, e.g. \(repo)/.store/config (mode 644)"), "\(v.stderr)")
        #expect(v.stderr.contains("warning: 1 snapshot files (want 0640)"), "\(v.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--repo", repo, "verify", "--all", "--json"]).stdout.utf8)) as? [String: Any])
        // (That verify recorded its outcome in metadata.json, which is written 0640 again.)
        #expect((json["warnings"] as? [String])?.count == 1, "\(json)")
    }

    @Test func unreadableEntriesAreReportedSkippedAndRecorded() throws {
        let dir = TemporaryDirectory("snapshot-perm")
        let src = dir.sub("src")
        Fixture.write(src + "/readable.txt", [1, 2, 3])
        Fixture.write(src + "/secret.key", [4, 5, 6], mode: 0o000)
        Fixture.write(src + "/locked/inner.txt", [7])
        chmod(src + "/locked", 0o000)
        defer { chmod(src + "/locked", 0o755) }
        // Root reads everything: run the CLI as nobody then (needs setpriv, from util-linux).
        let asNobody = geteuid() == 0
        if asNobody {
            chmod(dir.path, 0o777)
            chmod(src, 0o755)
        }
        let repo = dir.sub("repo")
        let r = try CLI.run(["--repo", repo, "create", "--path", src], asNobody: asNobody)
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("not captured: src/secret.key: Permission denied"))
        #expect(r.stderr.contains("not captured: src/locked: "))
        let show = try CLI.run(["--repo", repo, "show", "--snapshot", "latest", "--json"], asNobody: asNobody)
        let meta = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])
        let skipped = ((meta["components"] as? [String: Any])?["src"] as? [String: Any])?["skipped"] as? [String]
        #expect(skipped?.count == 2)
        let ls = try CLI.run(["--repo", repo, "ls", "--snapshot", "latest"], asNobody: asNobody)
        #expect(ls.stdout.contains("src/readable.txt") && !ls.stdout.contains("secret.key"))
        let v = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"], asNobody: asNobody)
        #expect(v.status == 0, "\(v.stdout)")
    }
}

@Suite struct InPlaceKillTests {
    @Test func anInPlaceRestoreKilledAtRandomLeavesEachComponentWhollyOldOrNew() throws {
        let dir = TemporaryDirectory("snapshot-ipkill")
        let root = dir.sub("sys")
        for i in 0..<20 { Fixture.write(root + "/storage/seg\(i).mmap", Fixture.bytes(1_500_000, seed: UInt64(i)), mtime: 1_700_000_000) }
        for i in 0..<20 { Fixture.write(root + "/configs/c\(i).yaml", Array("v: old \(i)\n".utf8), mtime: 1_700_000_000) }
        let config = dir.sub("snapshots.yaml")
        Fixture.write(config, Array("""
            root: \(root)
            repository: \(dir.sub("repo"))
            components:
              configs: {path: configs}
              storage: {path: storage}
            types:
              system: [configs, storage]

            """.utf8))
        let created = try CLI.run(["--config", config, "create", "--type", "system", "--name", "old"])
        #expect(created.status == 0, "\(created.stderr)")
        let old = dir.sub("old")
        #expect(try CLI.run(["--config", config, "restore", "--snapshot", "old", "--target", old]).status == 0)
        // The live system moves on.
        for i in 0..<20 { Fixture.write(root + "/storage/seg\(i).mmap", Fixture.bytes(1_500_000, seed: UInt64(500 + i)), mtime: 1_700_000_100) }
        for i in 0..<20 { Fixture.write(root + "/configs/c\(i).yaml", Array("v: new \(i)\n".utf8), mtime: 1_700_000_100) }
        let new = dir.sub("new")
        try POSIX.makeDirectories(new)
        for c in ["configs", "storage"] { CommandCopy.copy(root + "/" + c, to: new) }

        let t0 = Date()
        let probe = try CLI.run(["--config", config, "restore", "--snapshot", "old", "--dry-run"])
        #expect(probe.status == 0)
        let micros = UInt32(max(0.2, Date().timeIntervalSince(t0) * 4) * 1_000_000)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<6 {
            let running = try CLI.start(["--config", config, "restore", "--snapshot", "old", "--no-backup", "--quiet"])
            usleep(UInt32.random(in: 1_000...micros, using: &generator))
            kill(running.process.processIdentifier, SIGKILL)
            running.process.waitUntilExit()
            for c in ["configs", "storage"] {
                let isOld = TreeComparison.differences(old + "/" + c, root + "/" + c).isEmpty
                let isNew = TreeComparison.differences(new + "/" + c, root + "/" + c).isEmpty
                #expect(isOld || isNew, "round \(round): \(c) is neither wholly old nor wholly new")
            }
            // Put the new state back for the next round.
            for c in ["configs", "storage"] {
                try POSIX.removeTree(root + "/" + c)
                CommandCopy.copy(new + "/" + c, to: root)
            }
        }
        // The killed runs may have left staging directories beside the live data; so did
        // this one (its process is gone). The next writing command removes them and says so.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let staged = root + "/.snapshot-restore-2026-01-01_00-00-00-\(gone.processIdentifier)-storage"
        Fixture.write(staged + "/storage/big.bin", Fixture.bytes(100_000, seed: 9))
        Fixture.write(staged + "/.owner", Array("PID \(gone.processIdentifier) on host \(POSIX.hostName())\n".utf8))
        let finished = try CLI.run(["--config", config, "restore", "--snapshot", "old", "--no-backup"])
        #expect(finished.status == 0, "\(finished.stderr)")
        for c in ["configs", "storage"] { #expect(TreeComparison.differences(old + "/" + c, root + "/" + c) == []) }
        let leftovers = try POSIX.listDirectory(root).filter { $0.hasPrefix(".snapshot-restore-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        #expect(finished.stderr.contains("removed the staging directory \(staged) of an in-place restore that was killed"), "\(finished.stderr)")
        #expect(try CLI.run(["--config", config, "verify", "--all", "--read-data"]).status == 0)
    }
}

enum CommandCopy {
    static func copy(_ source: String, to directory: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/cp")
        p.arguments = ["-a", source, directory + "/"]
        try? p.run()
        p.waitUntilExit()
    }
}

@Suite struct ExampleSystemTests {
    @Test func aSystemSnapshotOfTheExampleSystemCapturesEveryComponent() async throws {
        let dir = TemporaryDirectory("snapshot-example")
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let make = Process()
        make.executableURL = URL(fileURLWithPath: here + "/scripts/make-example-system.sh")
        make.arguments = [dir.path, "24"]
        make.standardOutput = FileHandle.nullDevice
        try make.run()
        make.waitUntilExit()
        #expect(make.terminationStatus == 0)
        try POSIX.makeDirectories(dir.sub("configs"))
        for f in ["system.yaml", "models.yaml", "mcp.yaml", "user_preferences.yaml", "retention.yaml", "snapshot_alerts.yaml"] {
            Fixture.write(dir.sub("configs/" + f), try POSIX.readFile(here + "/configs/" + f))
        }
        let broker = try TestBroker()
        // The bundled config, pointed at this broker.
        var config = String(decoding: try POSIX.readFile(here + "/configs/snapshots.yaml"), as: UTF8.self)
        config = config.replacingOccurrences(of: "mqtt://127.0.0.1:1883", with: broker.url)
        Fixture.write(dir.sub("configs/snapshots.yaml"), Array(config.utf8))
        for w in ["alpha", "bravo"] {
            let pub = try CLI.runTool("/usr/bin/mosquitto_pub", ["-p", "\(broker.port)", "-r", "-q", "1", "-t", "workers/\(w)/status", "-m", "{\"worker\":\"\(w)\"}"])
            #expect(pub == 0)
        }
        for (topic, payload) in [("orchestrator/status", #"{"state":"running"}"#), ("orchestrator/performance", #"{"tasks_per_min":42.5}"#), ("models/router-v3/state", #"{"state":"loaded"}"#)] {
            #expect(try CLI.runTool("/usr/bin/mosquitto_pub", ["-p", "\(broker.port)", "-r", "-q", "1", "-t", topic, "-m", payload]) == 0)
        }
        let r = try CLI.run(["create", "--type", "system", "--json"], in: dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        let meta = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let components = try #require(meta["components"] as? [String: [String: Any]])
        #expect(Set(components.keys) == ["configs", "storage", "models", "workers", "logs", "orchestrator", "system_load", "system_memory", "system_disk"])
        #expect(components["workers"]?["messages"] as? Int == 2)
        #expect(components["orchestrator"]?["messages"] as? Int == 2)
        // The seed's summary, counted from what was captured.
        #expect(meta["workers"] as? Int == 2)
        #expect(meta["orchestrator"] as? Int == 2)
        #expect(meta["collections"] as? Int == 4)
        #expect(meta["models"] as? Int == 1)
        // System metrics as typed JSON; user preferences with the configs.
        let memory = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["cat", "--snapshot", "latest", "system_memory/memory.json"], in: dir.path).stdout.utf8)) as? [[String: Any]])
        #expect((memory.first?["total [KiB]"] as? Int ?? 0) > 0)
        let disk = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["cat", "--snapshot", "latest", "system_disk/disk.json"], in: dir.path).stdout.utf8)) as? [[String: Any]])
        #expect((disk.first?["size [B]"] as? Int ?? 0) > 0 && disk.first?["used [%]"] is Int)
        let load = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["cat", "--snapshot", "latest", "system_load/load.json"], in: dir.path).stdout.utf8)) as? [[String: Any]])
        #expect(load.first?["load1"] is Double || load.first?["load1"] is Int)
        #expect(try CLI.run(["cat", "--snapshot", "latest", "configs/user_preferences.yaml"], in: dir.path).stdout.contains("theme: dark"))
        #expect((components["storage"]?["files"] as? Int ?? 0) > 10)
        #expect(POSIX.exists(dir.sub("snapshots/system/latest")))
        let ls = try CLI.run(["ls", "--snapshot", "system/latest", "storage"], in: dir.path)
        #expect(ls.stdout.contains("storage/raft_state.json") && ls.stdout.contains("storage/aliases/data.json"))
        #expect(try CLI.run(["verify", "--all", "--read-data"], in: dir.path).status == 0)
    }
}

@Suite struct PruneKillTests {
    @Test func aPruneKilledAtRandomLeavesAVerifiableRepository() throws {
        let dir = TemporaryDirectory("snapshot-prunekill")
        Fixture.write(dir.sub("retention.yaml"), Array("retention:\n  system_snapshots: {daily: 3}\n".utf8))
        let config = dir.sub("snapshots.yaml")
        Fixture.write(config, Array("""
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            retention: retention.yaml
            components:
              data: {path: data}
            types:
              system: [data]

            """.utf8))
        func populate(_ days: Range<Int>) throws {
            for day in days {
                Fixture.write(dir.sub("data/day.bin"), Fixture.bytes(1_000_000, seed: UInt64(day)))
                let t = Timestamp(seconds: Int64(1_704_067_200 + day * 86400)).iso8601
                #expect(try CLI.run(["--config", config, "create", "--type", "system", "--time", t, "--quiet"]).status == 0)
            }
        }
        try populate(0..<12)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<5 {
            let running = try CLI.start(["--config", config, "prune", "--quiet"])
            usleep(UInt32.random(in: 1_000...150_000, using: &generator))
            kill(running.process.processIdentifier, SIGKILL)
            running.process.waitUntilExit()
            let v = try CLI.run(["--config", config, "verify", "--all", "--read-data"])
            #expect(v.status == 0, "round \(round): \(v.stdout) \(v.stderr)")
            try populate((20 + round * 3)..<(23 + round * 3))
        }
        let done = try CLI.run(["--config", config, "prune", "--json"])
        #expect(done.status == 0, "\(done.stderr)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--config", config, "list", "--json"]).stdout.utf8)) as? [Any])
        #expect(list.count == 3)
        #expect(try CLI.run(["--config", config, "verify", "--all", "--read-data"]).status == 0)
        #expect(try CLI.run(["--config", config, "restore", "--snapshot", "latest", "--target", dir.sub("out")]).status == 0)
    }
}

@Suite struct MonitorTests {
    @Test func exitCodesFollowEachThreshold() throws {
        let dir = TemporaryDirectory("snapshot-monitor")
        Fixture.write(dir.sub("alerts.yaml"), Array("""
            alerts:
              snapshot_age:       {warning_threshold: "24h", critical_threshold: "48h"}
              snapshot_size:      {warning_threshold: "10KB", critical_threshold: "1GB"}
              snapshot_integrity: {check_interval: "0s", failure_threshold: 2}

            """.utf8))
        let config = dir.sub("snapshots.yaml")
        Fixture.write(config, Array("""
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            alerts: alerts.yaml
            components:
              data: {path: data}
            types:
              system: [data]
              config: [data]
              data: [data]

            """.utf8))
        Fixture.write(dir.sub("data/a.bin"), Fixture.bytes(50_000, seed: 3))
        let now = Int(Date().timeIntervalSince1970)
        for (type, hoursAgo) in [("system", 1), ("config", 30), ("data", 50)] {
            let t = Timestamp(seconds: Int64(now - hoursAgo * 3600)).iso8601
            #expect(try CLI.run(["--config", config, "create", "--type", type, "--time", t, "--quiet"]).status == 0)
        }
        func monitor(_ args: [String]) throws -> CLI.Result { try CLI.run(["--config", config, "monitor"] + args) }
        #expect(try monitor(["--check-age", "--type", "system"]).status == 0)
        let warning = try monitor(["--check-age", "--type", "config"])
        #expect(warning.status == 1)
        #expect(warning.stdout.hasPrefix("SNAPSHOT_AGE WARNING - newest snapshots: config 30.0h ago"))
        #expect(try monitor(["--check-age", "--type", "data"]).status == 2)
        #expect(try monitor(["--check-age"]).status == 2, "the worst type wins")
        #expect(try monitor(["--check-size"]).status == 1)
        let json = try monitor(["--check-size", "--check-age", "--type", "system", "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(report["level"] as? String == "warning")
        #expect((report["checks"] as? [[String: Any]])?.map { Set($0.keys) }.allSatisfy { $0 == ["check", "level", "value", "threshold", "message"] } == true)
        #expect(try monitor(["--check-integrity"]).status == 0)
        // Damage: a missing pack. One failed check is a warning, two in a row critical.
        let data = dir.sub("repo/.store/data")
        for d in try POSIX.listDirectory(data) {
            for f in try POSIX.listDirectory(data + "/" + d) { unlink(data + "/\(d)/\(f)") }
        }
        #expect(try monitor(["--check-integrity"]).status == 1)
        let critical = try monitor(["--check-integrity"])
        #expect(critical.status == 2)
        #expect(critical.stdout.hasPrefix("SNAPSHOT_INTEGRITY CRITICAL - 2 failed check(s) in a row"))
        let metrics = try monitor(["--metrics", "creation-time", "--metrics", "compression-ratio"])
        #expect(metrics.status == 0 && metrics.stdout.contains("CREATION_TIME OK"))
        #expect(try monitor(["--metrics", "speed"]).status == 64)
    }
}

@Suite struct RollingIntegrityTests {
    @Test func readDataOneInNFindsBitRotWithinNChecksAndKeepsTheAlertRaised() throws {
        let dir = TemporaryDirectory("snapshot-rolling")
        func alerts(_ readData: String) {
            Fixture.write(dir.sub("alerts.yaml"), Array("alerts:\n  snapshot_integrity: {check_interval: \"0s\", failure_threshold: 2, read_data: \"\(readData)\"}\n".utf8))
        }
        alerts("0")
        let config = dir.sub("snapshots.yaml")
        Fixture.write(config, Array("root: \(dir.path)\nrepository: \(dir.sub("repo"))\nalerts: alerts.yaml\ncomponents:\n  data: {path: data}\ntypes:\n  full: [data]\n".utf8))
        Fixture.write(dir.sub("data/a.bin"), Fixture.bytes(400_000, seed: 21))
        #expect(try CLI.run(["--config", config, "create", "--quiet"]).status == 0)
        // Bit-rot in the middle of the largest pack (the file's data).
        let data = dir.sub("repo/.store/data")
        var packs: [String] = []
        for d in try POSIX.listDirectory(data) { packs += try POSIX.listDirectory(data + "/" + d).map { data + "/\(d)/\($0)" } }
        let largest = try #require(try packs.max { try POSIX.readFile($0).count < POSIX.readFile($1).count })
        var bytes = try POSIX.readFile(largest)
        bytes[bytes.count / 3] ^= 0x04
        Fixture.write(largest, bytes)
        func check() throws -> Int32 { try CLI.run(["--config", config, "monitor", "--check-integrity"]).status }

        #expect(try check() == 0, "presence only: bit-rot is not seen")
        alerts("1/\(packs.count)")
        var statuses: [Int32] = []
        for _ in 0..<packs.count { statuses.append(try check()) }
        #expect(statuses.contains(1), "not found within \(packs.count) checks: \(statuses)")
        #expect(try check() == 2, "the damaged share is read again: the failure streak goes on")
        let json = try CLI.run(["--config", config, "--json", "monitor", "--check-integrity"])
        #expect(json.stdout.contains("re-reads 1/\(packs.count) of the data"))
        alerts("1/x")
        #expect(try check() == 65)
    }
}

@Suite struct CronScriptTests {
    @Test func theSeedsScriptNamesWorkFromAnyDirectory() throws {
        let dir = TemporaryDirectory("snapshot-scripts")
        Fixture.write(dir.sub("data/a.txt"), Array("hello\n".utf8))
        let config = dir.sub("snapshots.yaml")
        Fixture.write(config, Array("""
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            components:
              data: {path: data}
            types:
              system: [data]

            """.utf8))
        let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path + "/scripts/"
        func run(_ script: String, _ args: [String]) throws -> Int32 {
            try CLI.runTool(scripts + script, args, in: "/", environment: ["SNAPSHOT_CONFIG": config, "SNAPSHOT_BIN": CLI.binary])
        }
        #expect(try run("create_snapshot.sh", ["--type", "system", "--auto"]) == 0)
        #expect(try run("verify_snapshot.sh", ["--all", "--read-data"]) == 0)
        #expect(try run("monitor_snapshots.sh", ["--check-age"]) == 0)
        #expect(try run("cleanup_snapshots.sh", ["--dry-run"]) == 0)
        #expect(try run("test_recovery.sh", ["--snapshot", "latest", "--isolated"]) == 0)
        #expect(try run("restore_snapshot.sh", ["--snapshot", "latest", "--target", dir.sub("out")]) == 0)
        #expect(POSIX.exists(dir.sub("out/data/a.txt")))
        #expect(try run("disaster_recovery.sh", ["--mode", "minimal", "--snapshot", "latest"]) == 64, "minimal restores configs and storage; this snapshot has neither")
        #expect(try run("create_snapshot.sh", ["--type", "weekly"]) == 64)
    }
}

@Suite struct ManyPacksTests {
    /// Hundreds of packs under `ulimit -n 40`: the pack descriptor cache is bounded, so
    /// verify and restore work; with too few descriptors to work at all the failure is exit
    /// 74 naming the cause, never damage.
    @Test func hundredsOfPacksUnderASmallDescriptorLimit() throws {
        let dir = TemporaryDirectory("snapshot-packs")
        let src = dir.sub("src"), repo = dir.sub("repo")
        for i in 0..<100 {
            Fixture.write(src + "/f\(i).bin", Fixture.bytes(20_000, seed: UInt64(i)))
            #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--quiet"]).status == 0)
        }
        var packs = 0
        for d in try POSIX.listDirectory(repo + "/.store/data") { packs += try POSIX.listDirectory(repo + "/.store/data/" + d).count }
        #expect(packs >= 200, "\(packs) packs")
        func limited(_ n: Int, _ args: String) throws -> CLI.Result {
            try CLI.shell("ulimit -n \(n) && '\(CLI.binary)' --repo '\(repo)' \(args)", in: dir.path)
        }
        let verify = try limited(40, "verify --all --read-data")
        #expect(verify.status == 0 && verify.stdout.contains("no errors in 100 snapshots"), "\(verify.stdout) \(verify.stderr)")
        let restore = try limited(40, "restore --snapshot latest --target '\(dir.sub("out"))'")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(TreeComparison.differences(src, dir.sub("out/src")) == [])
        // Below 20 open files the command refuses at once — exit 74 naming the limit — rather
        // than let the runtime crash later (libdispatch reads /proc for its thread pool); from
        // 20 on it works (the pack cache keeps within what the limit leaves). Never damage.
        for n in [6, 10, 14, 19, 20, 22, 24] {
            let run = try limited(n, "verify --all --read-data")
            if n < 20 {
                #expect(run.status == 74 && run.stderr.contains("the open-file limit is \(n)") && run.stderr.contains("Too many open files"), "ulimit \(n): exit \(run.status) \(run.stderr)")
            } else {
                #expect(run.status == 0, "ulimit \(n): exit \(run.status) \(run.stdout) \(run.stderr)")
            }
            #expect(!run.stdout.contains("damaged") && !run.stderr.contains("damage"), "ulimit \(n): \(run.stdout) \(run.stderr)")
        }
        // The starved run recorded nothing: no snapshot says it failed verification.
        #expect(!(try CLI.run(["--repo", repo, "list"]).stdout.contains("FAILED")))
    }
}

@Suite struct ReadersBesideWritersTests {
    /// While a create runs: readers and a create of another type work and see only what was
    /// committed before; a second create of the same type, delete and prune wait their turn
    /// (exit 75 naming the create, or with --lock-wait until it ends).
    @Test func readersAndOtherTypesRunBesideACreate() throws {
        let dir = TemporaryDirectory("snapshot-beside")
        let big = dir.sub("big"), small = dir.sub("small"), repo = dir.sub("repo")
        for i in 0..<8 { Fixture.write(big + "/part\(i).bin", Fixture.bytes(40_000_000, seed: UInt64(i))) }
        Fixture.write(small + "/a.txt", Array("small\n".utf8))
        #expect(try CLI.run(["--repo", repo, "create", "--path", small, "--type", "config", "--quiet"]).status == 0)
        let running = try CLI.start(["--repo", repo, "create", "--path", big, "--type", "full", "--debug"])
        #expect(running.waitForStderr("now reading"), "the create never started reading")
        // What needs the repository alone, or the same type, is told who has it.
        let same = try CLI.run(["--repo", repo, "create", "--path", small, "--type", "full"])
        #expect(same.status == 75 && same.stderr.contains("create --type full"), "\(same.stderr)")
        let delete = try CLI.run(["--repo", repo, "delete", "--snapshot", "config/latest"])
        #expect(delete.status == 75 && delete.stderr.contains("create --type full"), "\(delete.stderr)")
        // Readers see the snapshots committed before they started.
        let list = try CLI.run(["--repo", repo, "list", "--json"])
        #expect(list.status == 0 && list.stdout.components(separatedBy: "\"snapshot_id\"").count == 2, "\(list.stdout)")
        #expect(try CLI.run(["--repo", repo, "verify", "--all", "--read-data"]).status == 0)
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", "config/latest", "--target", dir.sub("out")]).status == 0)
        #expect(try CLI.run(["--repo", repo, "create", "--path", small, "--type", "data", "--quiet"]).status == 0)
        // With --lock-wait, delete waits for the create to end, then runs.
        let waited = try CLI.run(["--repo", repo, "--lock-wait", "10m", "delete", "--snapshot", "config/latest"])
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(running.finish() == 0)
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--repo", repo, "list", "--json"]).stdout.utf8)) as? [[String: Any]])
        #expect(Set(listed.compactMap { $0["type"] as? String }) == ["full", "data"])
        #expect(try CLI.run(["--repo", repo, "verify", "--all", "--read-data"]).status == 0)
    }
}

@Suite struct LeftoverTests {
    @Test func theNextWriterRemovesWhatDeadProcessesLeftAndSaysSo() throws {
        let dir = TemporaryDirectory("snapshot-leftovers")
        Fixture.write(dir.sub("src/a.txt"), Array("a\n".utf8))
        let repo = dir.sub("repo")
        #expect(try CLI.run(["--repo", repo, "create", "--path", dir.sub("src"), "--quiet"]).status == 0)
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let pid = gone.processIdentifier
        let partial = repo + "/.store/data/ab/" + String(repeating: "ab", count: 32) + ".tmp-\(POSIX.hostName())-\(pid)"
        Fixture.write(partial, Fixture.bytes(1000, seed: 1))
        let ours = repo + "/.store/data/ab/" + String(repeating: "cd", count: 32) + ".tmp-\(POSIX.hostName())-\(getpid())"
        Fixture.write(ours, Fixture.bytes(1000, seed: 2))
        let scratch = repo + "/.store/tmp/export-\(pid)-2026-01-01_00-00-00"
        Fixture.write(scratch + "/snapshot/x", [1])
        // A reader leaves them; the next writer removes those of dead processes only.
        #expect(try CLI.run(["--repo", repo, "list"]).status == 0 && POSIX.exists(partial))
        let r = try CLI.run(["--repo", repo, "create", "--path", dir.sub("src")])
        #expect(r.status == 0)
        #expect(!POSIX.exists(partial) && !POSIX.exists(scratch) && POSIX.exists(ours))
        #expect(r.stderr.contains("removed a partial pack \(partial) of PID \(pid), which is gone"), "\(r.stderr)")
        #expect(r.stderr.contains("removed the scratch directory \(scratch)"), "\(r.stderr)")
        unlink(ours)
        #expect(try CLI.run(["--repo", repo, "verify", "--all", "--read-data"]).status == 0)
    }
}

@Suite struct SmallFilesTests {
    /// The small-files tree at a size the suite can afford: 20,000 files of 1–4 KiB in 200
    /// directories round-trip exactly (content, modes, mtimes), and an unchanged second
    /// snapshot reads none of them.
    @Test func twentyThousandSmallFilesRoundTripExactly() throws {
        let dir = TemporaryDirectory("snapshot-small")
        let src = dir.sub("tree"), repo = dir.sub("repo")
        var state: UInt64 = 7
        for d in 0..<200 {
            for f in 0..<100 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                let size = 1024 + Int(state >> 52) % 3072
                Fixture.write(src + "/d\(d)/f\(f).txt", Array(Fixture.text(lines: size / 40 + 1, seed: d * 100 + f).prefix(size)),
                              mode: f % 7 == 0 ? 0o600 : 0o644, mtime: 1_700_000_000 + d * 100 + f)
            }
        }
        #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--quiet"]).status == 0)
        let second = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--debug"])
        #expect(second.status == 0 && second.stderr.contains("reading 0 files, 0 bytes"), "\(second.stderr.suffix(600))")
        let out = dir.sub("out")
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", out, "--verify", "--quiet"]).status == 0)
        #expect(TreeComparison.differences(src, out + "/tree") == [])
        #expect(try CLI.run(["--repo", repo, "verify", "--all", "--read-data"]).status == 0)
    }
}
