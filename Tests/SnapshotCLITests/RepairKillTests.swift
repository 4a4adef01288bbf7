#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// `rebuild-metadata` and `repair` killed with SIGKILL at random points: the repository is
/// never worse than before, and a rerun finishes the work.
@Suite struct RepairKillTests {
    /// Runs `arguments` and kills it after a random share of `duration`; true when it had
    /// already finished.
    func killDuring(_ arguments: [String], duration: TimeInterval, using generator: inout SystemRandomNumberGenerator) throws -> Bool {
        let running = try CLI.start(arguments + ["--quiet"])
        usleep(UInt32.random(in: 500...UInt32(max(0.02, duration) * 1_000_000), using: &generator))
        kill(running.process.processIdentifier, SIGKILL)
        running.process.waitUntilExit()
        return running.process.terminationReason == .exit
    }

    func timed(_ arguments: [String]) throws -> TimeInterval {
        let t0 = Date()
        let r = try CLI.run(arguments)
        #expect(r.status == 0, "\(arguments): \(r.stderr)")
        return Date().timeIntervalSince(t0)
    }

    func verified(_ repo: String) throws -> (status: Int32, named: Set<String>) {
        let r = try CLI.run(["--repo", repo, "verify", "--all", "--read-data", "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stderr)")
        let named = (doc["snapshots"] as? [[String: Any]] ?? []).filter { $0["ok"] as? Bool == false }.compactMap { $0["snapshot_id"] as? String }
        return (r.status, Set(named))
    }

    @Test func aKilledRebuildLeavesAVerifiableRepositoryAndARerunFinishes() throws {
        let dir = TemporaryDirectory("snapshot-rebuildkill")
        let src = dir.sub("src"), repo = dir.sub("repo")
        var ids: [String] = []
        for i in 0..<16 {
            Fixture.write(src + "/day.bin", Fixture.bytes(400_000, seed: UInt64(i)))
            Fixture.write(src + "/notes/\(i).txt", Fixture.text(lines: 200, seed: i))
            let t = Timestamp(seconds: Int64(1_767_225_600 + i * 3600)).iso8601
            let r = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", t])
            ids.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let duration = try timed(["--repo", repo, "rebuild-metadata"])
        var generator = SystemRandomNumberGenerator()
        // On a sound repository a killed rebuild changes nothing that verify can see.
        for round in 0..<5 {
            _ = try killDuring(["--repo", repo, "rebuild-metadata"], duration: duration, using: &generator)
            let v = try verified(repo)
            #expect(v.status == 0 && v.named.isEmpty, "round \(round): \(v.named)")
        }
        // With metadata lost, a killed rebuild leaves no half-written snapshot, and the rerun
        // brings every snapshot back.
        for round in 0..<4 {
            for id in ids.shuffled(using: &generator).prefix(3) { unlink(repo + "/data/\(id)/metadata.json") }
            try POSIX.removeTree(repo + "/data/" + ids[round * 3])
            _ = try killDuring(["--repo", repo, "rebuild-metadata"], duration: duration, using: &generator)
            #expect(try CLI.run(["--repo", repo, "rebuild-metadata"]).status == 0, "round \(round)")
            let v = try verified(repo)
            #expect(v.status == 0 && v.named.isEmpty, "round \(round): \(v.named)")
            let listed = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--repo", repo, "list", "--json"]).stdout.utf8)) as? [[String: Any]])
            #expect(Set(listed.compactMap { $0["snapshot_id"] as? String }) == Set(ids), "round \(round)")
        }
        let out = dir.sub("out")
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", out]).status == 0)
        #expect(TreeComparison.differences(src, out + "/src") == [])
    }

    @Test func aKilledRepairNeverAddsDamageAndARerunHeals() throws {
        let dir = TemporaryDirectory("snapshot-repairkill")
        let src = dir.sub("src"), repo = dir.sub("repo")
        for i in 0..<12 { Fixture.write(src + "/f\(i).bin", Fixture.bytes(1_200_000, seed: UInt64(i))) }
        let first = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", "2026-01-01T00:00:00Z"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        Fixture.write(src + "/later.txt", Array("later\n".utf8))
        let second = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", "2026-01-02T00:00:00Z"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let reader = BlobReader(repository: try Repository.open(at: repo))
        let manifest = try SnapshotCatalog(repositoryPath: repo).readManifest(directory: repo + "/data/" + first)
        let root = try reader.readTree(try #require(manifest.components["src"]).treeID, path: "src")
        /// Flips a byte of the first chunk of f<file>.bin where the index places it now.
        func damage(_ file: Int) throws {
            let node = try #require(root.nodes.first { $0.name == "f\(file).bin" })
            Damage.flipByte(of: node.content[0], in: try Repository.open(at: repo))
        }
        try damage(0)
        let duration = try timed(["--repo", repo, "repair", "--snapshot", first])
        #expect(try verified(repo).status == 0)
        var generator = SystemRandomNumberGenerator()
        for round in 1..<6 {
            try damage(round)
            _ = try killDuring(["--repo", repo, "repair", "--snapshot", first], duration: duration, using: &generator)
            let v = try verified(repo)
            #expect(v.named.isSubset(of: [first, second]), "round \(round): \(v.named)")
            let rerun = try CLI.run(["--repo", repo, "repair", "--snapshot", first])
            #expect(rerun.status == 0, "round \(round): \(rerun.stderr)")
            let after = try verified(repo)
            #expect(after.status == 0 && after.named.isEmpty, "round \(round): \(after.named)")
        }
        #expect(try CLI.run(["--repo", repo, "list", "--json"]).stdout.components(separatedBy: "\"snapshot_id\"").count == 3, "no salvage snapshot: everything healed")
        let out = dir.sub("out")
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", second, "--target", out]).status == 0)
        #expect(TreeComparison.differences(src, out + "/src") == [])
    }
}
