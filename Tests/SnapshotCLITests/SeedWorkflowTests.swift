#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// The seed's command lines, literally, through the scripts/*.sh wrappers (run from / as
/// cron would), against a small project of their own.
@Suite(.serialized) struct SeedWorkflowTests {
    /// A project: data/, a config with a type of its own (`nightly`), retention and alerts.
    final class Project: @unchecked Sendable {
        let dir = TemporaryDirectory("snapshot-seed")
        var repo: String { dir.sub("repo") }
        var config: String { dir.sub("configs/snapshots.yaml") }
        var env: [String: String] { ["SNAPSHOT_CONFIG": config, "SNAPSHOT_REPO": repo] }

        init(extra: String = "") throws {
            Fixture.write(dir.sub("data/a.txt"), Array("alpha\n".utf8))
            Fixture.write(dir.sub("data/sub/b.json"), Array("{\"b\": 2}\n".utf8))
            Fixture.write(dir.sub("data/scratch.tmp"), Array("left out\n".utf8))
            Fixture.write(dir.sub("configs/retention.yaml"), Array("retention:\n  nightly_snapshots: {last: 2}\n".utf8))
            Fixture.write(dir.sub("configs/snapshot_alerts.yaml"), Array("alerts:\n  snapshot_age: {warning_threshold: \"24h\", critical_threshold: \"48h\"}\n".utf8))
            try """
                root: \(dir.path)
                repository: \(repo)
                components:
                  data: {path: data, exclude: ["*.tmp"]}
                types:
                  nightly: [data]
                  full: [data]
                \(extra)
                """.write(toFile: config, atomically: true, encoding: .utf8)
        }

        func cli(_ args: [String]) throws -> CLI.Result { try CLI.run(["--config", config, "--repo", repo] + args) }
        func script(_ name: String, _ args: [String]) throws -> CLI.Result { try CLI.script(name, args, environment: env) }

        func json(_ r: CLI.Result) throws -> Any { try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) }

        func expectVerifies(sourceLocation: SourceLocation = #_sourceLocation) throws {
            let v = try cli(["verify", "--all", "--read-data"])
            #expect(v.status == 0, "verify: \(v.stdout) \(v.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test func aTypeOfOnesOwnWorksEndToEnd() throws {
        let p = try Project()
        var ids: [String] = []
        for time in ["2024-03-01T02:00:00Z", "2024-03-02T02:00:00Z"] {
            let r = try p.script("create_snapshot.sh", ["--type", "nightly", "--time", time])
            #expect(r.status == 0, "\(r.stderr)")
            ids.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let now = try p.script("create_snapshot.sh", ["--type", "nightly", "--name", "tonight"])
        #expect(now.status == 0, "\(now.stderr)")
        ids.append(now.stdout.trimmingCharacters(in: .whitespacesAndNewlines))

        #expect(POSIX.exists(p.repo + "/nightly/\(ids[2])/metadata.json"))
        #expect(FileStatLink.target(p.repo + "/nightly/latest") == ids[2])
        let listed = try #require(try p.json(try p.cli(["list", "--type", "nightly", "--json"])) as? [[String: Any]])
        #expect(listed.map { $0["snapshot_id"] as? String } == ids.reversed())
        #expect(listed.allSatisfy { $0["type"] as? String == "nightly" })
        let shown = try #require(try p.json(try p.cli(["show", "--snapshot", "nightly/latest", "--json"])) as? [String: Any])
        #expect(shown["name"] as? String == "tonight")
        // monitor per type: the newest nightly is fresh.
        let age = try p.script("monitor_snapshots.sh", ["--check-age", "--type", "nightly"])
        #expect(age.status == 0, "\(age.stdout) \(age.stderr)")
        #expect(age.stdout.contains("nightly"))

        // Retention from its own section: last 2 keeps the two newest.
        let dry = try #require(try p.json(try p.script("cleanup_snapshots.sh", ["--dry-run", "--json"])) as? [String: Any])
        #expect((dry["remove"] as? [[String: Any]])?.map { $0["snapshot_id"] as? String } == [ids[0]])
        #expect(try p.script("cleanup_snapshots.sh", []).status == 0)
        let kept = try #require(try p.json(try p.cli(["list", "--type", "nightly", "--json"])) as? [[String: Any]])
        #expect(kept.map { $0["snapshot_id"] as? String } == [ids[2], ids[1]])

        // Unknown types are usage errors naming the type, before any work.
        let weekly = try p.cli(["create", "--type", "weekly"])
        #expect(weekly.status == 64)
        #expect(weekly.stderr.contains("unknown snapshot type \"weekly\""))
        #expect(try p.cli(["list", "--type", "weekly"]).status == 64)
        let badName = try p.cli(["create", "--type", "Night!"])
        #expect(badName.status == 64)
        try p.expectVerifies()
    }

    @Test func errorsQuotingOutsideTextStayOnOneLine() throws {
        let dir = TemporaryDirectory("snapshot-oneline")
        Fixture.write(dir.sub("s.yaml"), Array("\"repo\\nsitory\": x\n".utf8))
        let r = try CLI.run(["--config", dir.sub("s.yaml"), "list"])
        #expect(r.status == 65)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains(#"unknown key "repo\nsitory""#), "\(r.stderr)")
    }

    @Test func verifyingAComponentASnapshotLacksIsAUsageErrorNotDamage() throws {
        let p = try Project()
        let id = try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let missing = try p.script("verify_snapshot.sh", ["--snapshot", id, "--component", "gpu_usage"])
        #expect(missing.status == 64, "\(missing.stderr)")
        #expect(missing.stderr.contains("snapshot \(id) has no component gpu_usage (it has: data)"))
        #expect(try p.script("verify_snapshot.sh", ["--all", "--component", "gpu_usage"]).status == 64)
        // The snapshot is not marked damaged; a component it has verifies.
        #expect(!(try p.cli(["list"]).stdout.contains("FAILED")))
        #expect(try p.script("verify_snapshot.sh", ["--snapshot", id, "--component", "data"]).status == 0)
        try p.expectVerifies()
        #expect(try p.cli(["list"]).stdout.contains("ok "))
    }

    @Test func aGarbledMetadataFileIsolatesItsSnapshotAndBlocksNothingElse() throws {
        let p = try Project()
        var ids: [String] = []
        for (i, time) in ["2024-03-01T02:00:00Z", "2024-03-02T02:00:00Z", "2024-03-03T02:00:00Z"].enumerated() {
            Fixture.write(p.dir.sub("data/day.txt"), Array("day \(i)\n".utf8))
            ids.append(try p.cli(["create", "--type", "nightly", "--time", time]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let metadata = p.repo + "/nightly/\(ids[1])/metadata.json"
        let original = try POSIX.readFile(metadata)
        Fixture.write(metadata, Array("{\"snapshot_id\": garbled".utf8))

        let list = try p.cli(["list"])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains(ids[1]) && list.stdout.contains("DAMAGED"))
        let listed = try #require(try p.json(try p.cli(["list", "--json"])) as? [[String: Any]])
        #expect(listed.contains { $0["snapshot_id"] as? String == ids[1] && $0["damaged"] is String })
        #expect(try p.cli(["show", "--snapshot", ids[0]]).status == 0)
        let shown = try p.cli(["show", "--snapshot", ids[1]])
        #expect(shown.status == 65 && shown.stderr.contains("metadata.json") && shown.stderr.contains("snapshot delete"), "\(shown.stderr)")
        #expect(try p.cli(["restore", "--snapshot", "latest", "--target", p.dir.sub("out")]).status == 0)
        #expect(try p.cli(["create", "--type", "nightly"]).status == 0)
        let monitor = try p.script("monitor_snapshots.sh", ["--check-age", "--check-integrity"])
        #expect((0...2).contains(monitor.status), "\(monitor.stdout) \(monitor.stderr)")
        #expect(monitor.stdout.contains(ids[1]))
        let verify = try p.cli(["verify", "--all"])
        #expect(verify.status == 1 && verify.stderr.contains(ids[1]))

        // Prune applies retention to the rest and keeps what the damaged snapshot's manifest
        // names: with its metadata put back, everything verifies, data included.
        #expect(try p.script("cleanup_snapshots.sh", []).status == 0)
        Fixture.write(metadata, original)
        try p.expectVerifies()
        // Deleting a damaged snapshot works, and so does prune once even its manifest is gone.
        Fixture.write(metadata, Array("garbled".utf8))
        Fixture.write(p.repo + "/nightly/\(ids[1])/manifest.json", Array("garbled".utf8))
        let blocked = try p.cli(["prune"])
        #expect(blocked.status == 0 && blocked.stderr.contains("space not reclaimed"), "\(blocked.stderr)")
        let deleted = try p.cli(["delete", "--snapshot", "nightly/\(ids[1])"])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(!(try p.cli(["list"]).stdout.contains("DAMAGED")))
        #expect(try p.cli(["prune"]).stderr.isEmpty)
        try p.expectVerifies()
    }

    func files(_ dir: String) throws -> [String] {
        var out: [String] = []
        for d in try POSIX.listDirectory(dir) {
            if POSIX.isDirectory(dir + "/" + d) { out += try files(dir + "/" + d).map { d + "/" + $0 } } else { out.append(d) }
        }
        return out.sorted()
    }

    @Test func lostIndexFilesAndSnapshotDirectoriesComeBackFromThePacks() throws {
        let p = try Project()
        var ids: [String] = []
        for i in 0..<3 {
            Fixture.write(p.dir.sub("data/file\(i).bin"), Fixture.bytes(200_000 + i, seed: UInt64(i)))
            ids.append(try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let packs = try files(p.repo + "/.store/data")
        for f in try POSIX.listDirectory(p.repo + "/.store/index") { unlink(p.repo + "/.store/index/" + f) }
        #expect(try p.cli(["restore", "--snapshot", "latest", "--target", p.dir.sub("lost")]).status == 65)
        // Prune must not take the unindexed packs for leftovers of a killed create.
        let prune = try p.cli(["prune"])
        #expect(prune.status == 0 && prune.stderr.contains("space not reclaimed"), "\(prune.stderr)")
        #expect(try files(p.repo + "/.store/data") == packs, "prune deleted packs while the index was lost")

        // A whole snapshot directory gone, and another's metadata.json garbled.
        try POSIX.removeTree(p.repo + "/nightly/\(ids[0])")
        Fixture.write(p.repo + "/nightly/\(ids[1])/metadata.json", Array("garbled".utf8))
        let rebuilt = try p.script("rebuild_metadata.sh", [])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(rebuilt.stdout.contains("index rebuilt from \(packs.count) packs"), "\(rebuilt.stdout)")
        #expect(rebuilt.stdout.contains("recreated nightly/\(ids[0])") && rebuilt.stdout.contains("rebuilt nightly/\(ids[1])/metadata.json"), "\(rebuilt.stdout)")
        let listed = try #require(try p.json(try p.cli(["list", "--json"])) as? [[String: Any]])
        #expect(Set(listed.compactMap { $0["snapshot_id"] as? String }) == Set(ids))
        #expect(listed.allSatisfy { $0["damaged"] == nil })
        try p.expectVerifies()
        for id in ids {
            let out = p.dir.sub("out-\(id)")
            #expect(try p.cli(["restore", "--snapshot", id, "--target", out, "--verify"]).status == 0)
        }
        #expect(try POSIX.readFile(p.dir.sub("out-\(ids[2])/data/file2.bin")) == Fixture.bytes(200_002, seed: 2))
    }

    @Test func recoverSnapshotSalvagesWhatIsIntactAndNamesWhatIsLost() throws {
        let p = try Project()
        Fixture.write(p.dir.sub("data/model.bin"), Fixture.bytes(400_000, seed: 21))
        let id = try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // Every pack that holds model.bin's data damaged, and the live file changed since.
        for pack in try files(p.repo + "/.store/data") {
            let path = p.repo + "/.store/data/" + pack
            var bytes = try POSIX.readFile(path)
            guard bytes.count > 300_000 else { continue }
            bytes[bytes.count / 3] ^= 0xff
            Fixture.write(path, bytes)
        }
        Fixture.write(p.dir.sub("data/model.bin"), Fixture.bytes(400_000, seed: 22))
        #expect(try p.script("verify_snapshot.sh", ["--snapshot", id]).status == 0, "the quick check reads no data")
        let r = try p.script("recover_snapshot.sh", ["--snapshot", id, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let made = try #require(try p.json(r) as? [String: Any])
        #expect(made["repaired_from"] as? String == id && made["lost"] as? [String] == ["data/model.bin"], "\(made)")
        let newID = try #require(made["snapshot_id"] as? String)
        #expect(newID == id + "-2" && made["type"] as? String == "nightly")
        let out = p.dir.sub("out")
        #expect(try p.cli(["restore", "--snapshot", newID, "--target", out]).status == 0)
        #expect(try POSIX.readFile(out + "/data/a.txt") == Array("alpha\n".utf8) && !POSIX.exists(out + "/data/model.bin"))
        #expect(try p.cli(["verify", "--snapshot", newID, "--read-data"]).status == 0)
        #expect(try p.cli(["verify", "--snapshot", id, "--read-data"]).status == 1, "the original stays as it was")
        #expect(try p.cli(["delete", "--snapshot", id]).status == 0)
        #expect(try p.cli(["prune"]).status == 0)
        try p.expectVerifies()
    }

    @Test func sanitizeSnapshotMakesARedactedCopyAndLeavesTheOriginal() throws {
        let p = try Project(extra: "sanitize: {patterns: [{name: employee_id, regex: \"EMP-[0-9]{6}\"}], keys: [ssn]}")
        let corpus = CLI.projectRoot + "/Tests/Fixtures/pii"
        for f in ["agents.yaml", "worker.env", "payload.json"] { Fixture.write(p.dir.sub("data/" + f), try POSIX.readFile(corpus + "/" + f)) }
        Fixture.write(p.dir.sub("data/people.txt"), Array("owner EMP-004211, ssn: 078-05-1120, mail ada.lovelace@example.com\n".utf8))
        Fixture.write(p.dir.sub("data/blob.bin"), [0, 1, 2] + Array("ada.lovelace@example.com".utf8))
        let id = try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let original = try p.cli(["cat", "--snapshot", id, "data/agents.yaml"]).stdout

        let r = try p.script("sanitize_snapshot.sh", ["--snapshot", id, "--remove-pii", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let made = try #require(try p.json(r) as? [String: Any])
        let copy = try #require(made["snapshot_id"] as? String)
        #expect(made["type"] as? String == "sanitized" && made["sanitized_from"] as? String == id)
        let counts = try #require(made["sanitized"] as? [String: Int])
        #expect(counts["email"] ?? 0 >= 3 && counts["employee_id"] == 1 && counts["aws_access_key"] == 1 && (counts["secret_field"] ?? 0) >= 4, "\(counts)")
        let yaml = try p.cli(["cat", "--snapshot", copy, "data/agents.yaml"]).stdout
        #expect(!yaml.contains("ada.lovelace@example.com") && !yaml.contains("hunter2") && yaml.contains("email: [REDACTED:email]") && yaml.contains("max_tokens: 4096"))
        let people = try p.cli(["cat", "--snapshot", copy, "data/people.txt"]).stdout
        #expect(people == "owner [REDACTED:employee_id], ssn: [REDACTED:secret_field], mail [REDACTED:email]\n", "\(people)")
        // Binary files are copied as they are; the original snapshot is untouched and stays latest.
        #expect(try p.cli(["cat", "--snapshot", copy, "data/blob.bin"]).stdout.contains("ada.lovelace@example.com"))
        #expect(try p.cli(["cat", "--snapshot", id, "data/agents.yaml"]).stdout == original)
        #expect(try p.cli(["show", "--snapshot", "latest", "--json"]).stdout.contains("\"snapshot_id\" : \"\(id)\""))
        // --anonymize: one value, one pseudonym, in every file.
        let a = try p.script("sanitize_snapshot.sh", ["--snapshot", id, "--anonymize"])
        #expect(a.status == 0, "\(a.stderr)")
        let anon = a.stdout.split(separator: "\n").first.map(String.init) ?? ""
        let y = try p.cli(["cat", "--snapshot", anon, "data/agents.yaml"]).stdout, t = try p.cli(["cat", "--snapshot", anon, "data/people.txt"]).stdout
        let pseudonym = try #require(y.split(separator: "\n").first { $0.contains("email: user-") }?.split(separator: " ").last.map(String.init))
        #expect(t.contains(pseudonym), "\(pseudonym) not in \(t)")
        #expect(try p.cli(["sanitize", "--snapshot", id]).status == 64)
        try p.expectVerifies()
    }

    @Test func exportImportAndRestoreFromBackupWithAgeAndTar() throws {
        let p = try Project()
        Fixture.write(p.dir.sub("data/model.bin"), Fixture.bytes(300_000, seed: 31))
        Fixture.write(p.dir.sub("data/deep/very/" + String(repeating: "long-name-", count: 12) + ".txt"), Array("long\n".utf8))
        let id = try p.cli(["create", "--type", "nightly", "--name", "golden", "--tag", "owner=ops"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let expected = p.dir.sub("expected")
        #expect(try p.cli(["restore", "--snapshot", id, "--target", expected]).status == 0)
        let key = p.dir.sub("key.txt")
        #expect(try CLI.shell("age-keygen -o key.txt 2>/dev/null", in: p.dir.path).status == 0)
        let recipient = try #require(String(decoding: try POSIX.readFile(key), as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("# public key: ") }?.dropFirst(14))

        for name in ["b.tar.zst", "b.tar.gz", "b.tar", "b.tar.zst.age"] {
            let out = p.dir.sub("exports/" + name)
            try POSIX.makeDirectories(p.dir.sub("exports"))
            let r = try p.cli(["export", "--snapshot", id, "--output", out] + (name.hasSuffix(".age") ? ["--recipient", String(recipient)] : []))
            #expect(r.status == 0, "\(name): \(r.stderr)")
        }
        // Each written whole under a temporary name: only the archives are left.
        #expect(try POSIX.listDirectory(p.dir.sub("exports")).sorted() == ["b.tar", "b.tar.gz", "b.tar.zst", "b.tar.zst.age"])
        // The age file decrypts with the real age tool to the same bytes as a plain export would hold.
        #expect(try CLI.shell("age -d -i \(key) \(p.dir.sub("exports/b.tar.zst.age")) > dec.tar.zst", in: p.dir.path).status == 0)
        let untar = p.dir.sub("untar")
        try POSIX.makeDirectories(untar)
        #expect(try CLI.shell("tar -xzf \(p.dir.sub("exports/b.tar.gz")) -C \(untar) && cd \(untar)/snapshot && sha256sum --quiet -c SHA256SUMS", in: p.dir.path).status == 0)
        #expect(TreeComparison.differences(expected + "/data", untar + "/snapshot/data") == [])
        let imported = p.dir.sub("imported")
        try POSIX.makeDirectories(imported)
        #expect(try CLI.shell("tar -xf \(p.dir.sub("exports/b.tar")) -C \(imported)", in: p.dir.path).status == 0)

        // Into another repository: restore_from_backup.sh imports, then restores.
        let other = p.dir.sub("other-repo")
        for archive in ["b.tar.gz", "b.tar.zst", "dec.tar.zst"] {
            let path = archive == "dec.tar.zst" ? p.dir.sub(archive) : p.dir.sub("exports/" + archive)
            let target = p.dir.sub("restored-" + archive)
            let r = try CLI.script("restore_from_backup.sh", ["--backup", path, "--target", target], environment: ["SNAPSHOT_REPO": other, "SNAPSHOT_CONFIG": p.config])
            #expect(r.status == 0, "\(archive): \(r.stdout) \(r.stderr)")
            #expect(TreeComparison.differences(expected + "/data", target + "/data") == [], "\(archive)")
        }
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--repo", other, "--config", p.config, "list", "--json"]).stdout.utf8)) as? [[String: Any]])
        #expect(listed.count == 3 && listed.allSatisfy { $0["type"] as? String == "nightly" })
        #expect(listed.contains { $0["name"] as? String == "golden" } && listed.allSatisfy { ($0["tags"] as? [String: String])?["owner"] == "ops" })
        #expect(listed.allSatisfy { ($0["timestamp"] as? String) == (try? p.json(try p.cli(["show", "--snapshot", id, "--json"])) as? [String: Any])?["timestamp"] as? String })

        // A changed byte, or an unlisted file, and nothing is imported.
        Fixture.write(imported + "/snapshot/data/a.txt", Array("tampered\n".utf8))
        #expect(try CLI.shell("tar -cf tampered.tar -C \(imported) snapshot", in: p.dir.path).status == 0)
        let bad = try CLI.run(["--repo", other, "--config", p.config, "import", p.dir.sub("tampered.tar")])
        #expect(bad.status == 65 && bad.stderr.contains("snapshot/data/a.txt does not match its SHA-256"), "\(bad.stderr)")
        let age = try CLI.run(["--repo", other, "--config", p.config, "import", p.dir.sub("exports/b.tar.zst.age")])
        #expect(age.status == 65 && age.stderr.contains("age-encrypted: decrypt it first"), "\(age.stderr)")
        #expect(try CLI.run(["--repo", other, "--config", p.config, "export", "--snapshot", "latest", "--output", p.dir.sub("x.zip")]).status == 64)
        // An archive into a directory that is not there: one line naming the archive, before
        // any work (nothing left in the repository's scratch).
        let nowhere = try CLI.run(["--repo", other, "--config", p.config, "export", "--snapshot", "latest", "--output", p.dir.sub("missing/x.tar")])
        #expect(nowhere.status == 74 && nowhere.stderr == "snapshot: error: create \(p.dir.sub("missing/x.tar")): No such file or directory\n", "\(nowhere.stderr)")
        #expect(try POSIX.listDirectory(other + "/.store/tmp").isEmpty)
        #expect(try CLI.run(["--repo", other, "--config", p.config, "list", "--json"]).stdout.components(separatedBy: "\"snapshot_id\"").count == 4)
        #expect(try CLI.run(["--repo", other, "--config", p.config, "verify", "--all", "--read-data"]).status == 0)
        try p.expectVerifies()
    }

    @Test func oneDamagedIndexFileBlocksOnlyWhatItNamed() throws {
        let p = try Project()
        Fixture.write(p.dir.sub("a/one.bin"), Fixture.bytes(150_000, seed: 11))
        Fixture.write(p.dir.sub("b/two.bin"), Fixture.bytes(150_000, seed: 12))
        let first = try p.cli(["create", "--type", "full", "--path", p.dir.sub("a")]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let indexFiles = try POSIX.listDirectory(p.repo + "/.store/index")
        _ = try p.cli(["create", "--type", "full", "--path", p.dir.sub("b")])
        let damaged = p.repo + "/.store/index/" + indexFiles[0]
        Fixture.write(damaged, Array("not an index".utf8))
        #expect(try p.cli(["list"]).status == 0)
        #expect(try p.cli(["restore", "--snapshot", "latest", "--target", p.dir.sub("out")]).status == 0)
        let verify = try p.cli(["verify", "--all"])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains(damaged) && verify.stdout.contains(first), "\(verify.stdout)")
        #expect(try p.script("rebuild_metadata.sh", []).status == 0)
        try p.expectVerifies()
        #expect(try p.cli(["restore", "--snapshot", first, "--target", p.dir.sub("out1")]).status == 0)
    }

    @Test func analyzeShowsSizesSharingLargestFilesAndGrowth() throws {
        let p = try Project()
        Fixture.write(p.dir.sub("data/weights.bin"), Fixture.bytes(600_000, seed: 31))
        Fixture.write(p.dir.sub("data/app.log"), Array(String(repeating: "line\n", count: 1000).utf8))
        #expect(try p.cli(["create", "--type", "nightly", "--time", "2024-03-01T02:00:00Z"]).status == 0)
        Fixture.write(p.dir.sub("data/app.log"), Array(String(repeating: "line\n", count: 3000).utf8))
        Fixture.write(p.dir.sub("data/new.bin"), Fixture.bytes(7_000, seed: 32))
        let second = try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let r = try p.script("analyze_snapshot.sh", ["--snapshot", second, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try p.json(r) as? [String: Any])
        #expect(report["parent"] is String)
        let data = try #require((report["components"] as? [[String: Any]])?.first { $0["name"] as? String == "data" })
        #expect(data["files"] as? Int == 5)
        #expect(data["logical_bytes"] as? Int == 600_000 + 15_000 + 7_000 + 6 + 9)
        #expect((data["shared_with_parent_bytes"] as? Int ?? 0) >= 600_000, "\(data)")
        #expect((data["stored_bytes"] as? Int ?? 0) > 0 && data["compression_ratio"] is Double)
        let largest = try #require(report["largest_files"] as? [[String: Any]])
        #expect(largest.first?["path"] as? String == "data/weights.bin")
        let growth = try #require(report["largest_growth"] as? [[String: Any]])
        #expect(growth.map { $0["path"] as? String } == ["data/app.log", "data/new.bin"])
        #expect(growth.first?["growth"] as? Int == 10_000 && growth.first?["parent_size"] as? Int == 5_000)
        let text = try p.cli(["analyze", "--snapshot", second])
        #expect(text.status == 0 && text.stdout.contains("largest growth since the parent"))
        try p.expectVerifies()
    }

    @Test func checkDependenciesNamesWhatIsMissing() throws {
        let p = try Project()
        let id = try p.cli(["create", "--type", "nightly"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let healthy = try p.script("check_dependencies.sh", ["--snapshot", id])
        #expect(healthy.status == 0, "\(healthy.stdout) \(healthy.stderr)")
        for line in ["ok   component data:", "ok   repository", "ok   free space:", "ok   snapshot \(id) data: every blob it needs is present", "ok   restore target data:"] {
            #expect(healthy.stdout.contains(line), "\(line) in \(healthy.stdout)")
        }
        // A missing source path, a missing tool (an optional one is fine), a lost pack.
        var config = String(decoding: try POSIX.readFile(p.config), as: UTF8.self)
        config = config.replacingOccurrences(of: "  data: {path: data, exclude: [\"*.tmp\"]}", with: """
              data: {path: data, exclude: ["*.tmp"]}
              gone: {path: no-such-dir}
              probe: {command: "no-such-tool-xyz --version"}
              maybe: {command: "no-such-tool-xyz --version", optional: true}
            """)
        Fixture.write(p.config, Array(config.utf8))
        var packs: [String] = []
        for d in try POSIX.listDirectory(p.repo + "/.store/data") { packs += try POSIX.listDirectory(p.repo + "/.store/data/" + d).map { p.repo + "/.store/data/\(d)/\($0)" } }
        for (i, pack) in packs.enumerated() { rename(pack, p.dir.sub("aside-\(i)")) }
        let broken = try p.script("check_dependencies.sh", ["--snapshot", id])
        #expect(broken.status == 1)
        #expect(broken.stdout.contains("FAIL component gone: \(p.dir.sub("no-such-dir"))"), "\(broken.stdout)")
        #expect(broken.stdout.contains("FAIL component probe: no-such-tool-xyz not found"))
        #expect(broken.stdout.contains("ok   component maybe: no-such-tool-xyz not found (optional"))
        #expect(broken.stdout.contains("FAIL snapshot \(id) data:"))
        #expect(broken.stderr.contains("check-dependencies failed: component gone, component probe, snapshot \(id) data"), "\(broken.stderr)")
        // A repository another process has locked.
        let lock = try RepositoryLock(storePath: p.repo + "/.store", mode: .exclusive, purpose: "a test")
        defer { lock.release() }
        let locked = try p.script("check_dependencies.sh", [])
        #expect(locked.status == 1)
        #expect(locked.stdout.contains("FAIL repository \(p.repo): repository \(p.repo) is locked by PID"), "\(locked.stdout)")
        lock.release()
        for (i, pack) in packs.enumerated() { rename(p.dir.sub("aside-\(i)"), pack) }
        try p.expectVerifies()
    }

    @Test func restoreNarrowsTheReferenceByType() throws {
        let p = try Project()
        let nightly = try p.cli(["create", "--type", "nightly", "--time", "2024-03-01T02:00:00Z"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try p.cli(["create", "--type", "full", "--time", "2024-03-02T02:00:00Z"]).status == 0)
        let out = p.dir.sub("out")
        let r = try p.script("restore_snapshot.sh", ["--snapshot", nightly, "--type", "nightly", "--component", "data", "--target", out, "--verify"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: out + "/data/a.txt", encoding: .utf8) == "alpha\n")
        let wrong = try p.script("restore_snapshot.sh", ["--snapshot", nightly, "--type", "full", "--target", p.dir.sub("out2")])
        #expect(wrong.status == 64)
        #expect(wrong.stderr.contains("no full snapshot has this id or name"))
        // latest narrowed by type is that type's newest.
        let latest = try p.script("restore_snapshot.sh", ["--snapshot", "latest", "--type", "nightly", "--target", p.dir.sub("out3"), "--json"])
        #expect(latest.status == 0, "\(latest.stderr)")
        #expect(latest.stdout.contains(nightly))
        try p.expectVerifies()
    }

    @Test func testRecoveryIntoAConfiguredEnvironment() throws {
        let envRoot = TemporaryDirectory("snapshot-env")
        let check = #"test -f "$SNAPSHOT_RECOVERY_ROOT/data/a.txt" && test -f configs/snapshots.yaml"#
        let p = try Project(extra: """
            environments:
              test: {root: \(envRoot.sub("copy")), health_check: '\(check)'}
              broken: {root: \(envRoot.sub("broken")), health_check: "echo unhealthy; exit 3"}
              occupied: {root: \(envRoot.sub("occupied"))}
            """)
        #expect(try p.cli(["create", "--type", "nightly"]).status == 0)
        for _ in 0..<2 {  // the second run replaces the first copy
            let r = try p.script("test_recovery.sh", ["--snapshot", "nightly/latest", "--environment", "test", "--json"])
            #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
            let report = try #require(try p.json(r) as? [String: Any])
            #expect(report["ok"] as? Bool == true)
            #expect(report["environment"] as? String == "test")
            #expect(report["health"] as? String == "ok")
            #expect(report["target"] as? String == envRoot.sub("copy"))
        }
        #expect(try String(contentsOfFile: envRoot.sub("copy/data/a.txt"), encoding: .utf8) == "alpha\n")
        #expect(POSIX.exists(envRoot.sub("copy/.snapshot-test-recovery")))

        let broken = try p.script("test_recovery.sh", ["--snapshot", "latest", "--environment", "broken"])
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("hook health_check failed: exited 3: unhealthy"))

        // A root holding something else is never emptied.
        Fixture.write(envRoot.sub("occupied/precious.db"), [1, 2, 3])
        let occupied = try p.script("test_recovery.sh", ["--snapshot", "latest", "--environment", "occupied"])
        #expect(occupied.status == 65)
        #expect(occupied.stderr.contains("is not empty and holds no earlier test-recovery copy"))
        #expect(try POSIX.readFile(envRoot.sub("occupied/precious.db")) == [1, 2, 3])

        let unknown = try p.script("test_recovery.sh", ["--snapshot", "latest", "--environment", "staging"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("unknown environment \"staging\" (configured under environments: broken, occupied, test)"))
        // Without --environment: a scratch directory, deleted afterwards.
        let scratch = try p.script("test_recovery.sh", ["--snapshot", "latest", "--isolated", "--benchmark"])
        #expect(scratch.status == 0, "\(scratch.stderr)")
        try p.expectVerifies()
    }

    @Test func debugPrintsPhasesTimingsAndWhatWasReadOrSkipped() throws {
        let p = try Project()
        let first = try p.script("create_snapshot.sh", ["--debug", "--type", "nightly"])
        #expect(first.status == 0, "\(first.stderr)")
        let lines = first.stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("debug: +") }
        #expect(lines.count >= 8, "\(first.stderr)")
        #expect(!first.stderr.contains("debug: +-"))
        #expect(lines.contains { $0.contains("config \(p.config)") })
        #expect(lines.contains { $0.contains("phase scanning done in") })
        #expect(lines.contains { $0.contains("phase reading done in") })
        #expect(lines.contains { $0.contains("component data (\(p.dir.sub("data"))): 2 files, 15 bytes; reading 2 files, 15 bytes; no earlier snapshot of this component to compare with") })
        #expect(lines.contains { $0.contains("excluded data/scratch.tmp (matches one of *.tmp)") })
        // The second time, nothing changed: nothing is read, and it says why.
        let second = try p.script("create_snapshot.sh", ["--debug", "--type", "nightly"])
        #expect(second.stderr.contains("reading 0 files, 0 bytes; 2 unchanged since nightly/"))
        // Without --debug, no debug lines.
        #expect(!(try p.script("create_snapshot.sh", ["--type", "nightly"]).stderr.contains("debug:")))
        // Every other command: the config, the lock and index it used, what it found, its exit.
        let commands: [[String]] = [
            ["list"], ["show", "--snapshot", "latest"], ["ls", "--snapshot", "latest"], ["cat", "--snapshot", "latest", "data/a.txt"],
            ["diff", "nightly/latest", "latest"], ["analyze", "--snapshot", "latest"], ["verify", "--all"], ["monitor", "--check-age"],
            ["check-dependencies"], ["repair", "--snapshot", "latest"], ["rebuild-metadata"], ["prune", "--dry-run"],
            ["restore", "--snapshot", "latest", "--target", p.dir.sub("debug-out")], ["test-recovery", "--snapshot", "latest"],
        ]
        for command in commands {
            let r = try p.cli(command + ["--debug"])
            #expect(r.stderr.contains("debug: +") && r.stderr.contains("config \(p.config)"), "\(command): \(r.stderr)")
            #expect(r.stderr.contains("lock for"), "\(command): \(r.stderr)")
            #expect(r.stderr.contains("done, exit \(r.status)"), "\(command): \(r.stderr)")
        }
        #expect(try p.cli(["cat", "--snapshot", "latest", "data/a.txt", "--debug"]).stderr.contains("data/a.txt: 6 bytes from 1 chunks"))
        let missing = try p.cli(["show", "--snapshot", "nope", "--debug"])
        #expect(missing.status == 64 && missing.stderr.contains("done, exit 64"))
        try p.expectVerifies()
    }
}
