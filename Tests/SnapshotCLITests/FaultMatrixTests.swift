#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Every kind of repository file × every kind of damage, through the CLI as a user meets
/// it: what `verify` names, its exit code, that nothing else is blocked, and which command
/// brings full function back (then both snapshots restore, compared file by file).
@Suite struct FaultMatrixTests {
    enum FileKind: String, CaseIterable { case pack, index, manifest, metadata, tree, lock, config }
    enum Damage: String, CaseIterable { case flip, truncate, delete, zeroPage }

    /// Two snapshots of one tree: A, then B with a new directory. Every file damaged below
    /// belongs to B alone, so A must stay fully usable.
    final class Template: @unchecked Sendable {
        let dir = TemporaryDirectory("snapshot-matrix")
        var src: String { dir.sub("src") }
        var srcA: String { dir.sub("srcA") }
        var repo: String { dir.sub("repo") }
        var a = "", b = ""
        /// B's own pack of file data, the range of B's tree for src/new, the index file B's
        /// create wrote.
        var dataPack = "", treePack = "", indexFile = ""
        var treeRange: (offset: Int, length: Int) = (0, 0)

        init() throws {
            Fixture.write(src + "/keep/a.txt", Array("alpha\n".utf8))
            Fixture.write(src + "/keep/b.bin", Fixture.bytes(200_000, seed: 1))
            Fixture.write(src + "/keep/sub/c.txt", Fixture.text(lines: 500))
            #expect(try CLI.shell("cp -a src srcA", in: dir.path).status == 0)
            a = try create("2026-01-01T00:00:00Z")
            let before = Set(try POSIX.listDirectory(repo + "/.store/index"))
            Fixture.write(src + "/new/big.bin", Fixture.bytes(1_000_000, seed: 2))
            Fixture.write(src + "/new/n1.txt", Array("new one\n".utf8))
            Fixture.write(src + "/new/deep/n2.txt", Fixture.text(lines: 50, seed: 3))
            b = try create("2026-01-02T00:00:00Z")
            let written = Set(try POSIX.listDirectory(repo + "/.store/index")).subtracting(before)
            indexFile = repo + "/.store/index/" + (try #require(written.first))

            let repository = try Repository.open(at: repo)
            let reader = BlobReader(repository: repository)
            let manifest = try SnapshotCatalog(repositoryPath: repo).readManifest(directory: repo + "/data/" + b)
            let component = try #require(manifest.components["src"])
            let root = try reader.readTree(component.treeID, path: "src")
            let newDir = try #require(root.nodes.first { $0.name == "new" })
            let newTreeID = try #require(newDir.subtree)
            let newTree = try reader.readTree(newTreeID, path: "src/new")
            let big = try #require(newTree.nodes.first { $0.name == "big.bin" })
            let bigLocation = try #require(repository.index.location(of: big.content[0]))
            dataPack = repository.packPath(bigLocation.pack)
            let t = try #require(repository.index.location(of: newTreeID))
            treePack = repository.packPath(t.pack)
            treeRange = (Int(t.offset), Int(t.length))
            #expect(dataPack != treePack)
        }

        func create(_ time: String) throws -> String {
            let r = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", time])
            #expect(r.status == 0, "\(r.stderr)")
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Damages one file of `repo` (a copy of the template's), B's unless the kind is shared.
    func damage(_ kind: FileKind, _ damage: Damage, repo: String, template t: Template) throws {
        let file: String
        var range: (offset: Int, length: Int)? = nil
        switch kind {
        case .pack: file = t.dataPack
        case .index: file = t.indexFile
        case .manifest: file = repo + "/data/\(t.b)/manifest.json"
        case .metadata: file = repo + "/data/\(t.b)/metadata.json"
        case .tree: file = t.treePack; range = t.treeRange
        case .lock: file = repo + "/.store/lock"
        case .config: file = repo + "/.store/config"
        }
        let path = file.replacingOccurrences(of: t.repo, with: repo)
        var bytes = try POSIX.readFile(path)
        if bytes.isEmpty { bytes = Array("PID 1 on host elsewhere\n".utf8) }  // a lock file no one has written to yet
        let text = [.manifest, .metadata, .lock, .config].contains(kind)
        switch damage {
        case .flip:
            // Text files: the first byte, where a flip breaks the syntax (a flip inside a
            // JSON value is seen only where verify can recompute it); binary: mid-entry.
            let at = text ? 0 : range.map { $0.offset + $0.length / 2 } ?? bytes.count / 2
            bytes[at] ^= 0x01
        case .truncate:
            bytes.removeLast(bytes.count - (range.map { $0.offset + $0.length / 2 } ?? bytes.count / 2))
        case .delete:
            unlink(path)
            return
        case .zeroPage:
            let start = range.map { $0.offset / 4096 * 4096 } ?? 0
            for i in start..<min(bytes.count, start + 4096) { bytes[i] = 0 }
        }
        Fixture.write(path, bytes)
    }

    struct Outcome {
        var named: Set<String>
        var repositoryErrors: [String]
        var status: Int32
    }

    func verify(_ repo: String) throws -> Outcome {
        let r = try CLI.run(["--repo", repo, "verify", "--all", "--read-data", "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout) \(r.stderr)")
        let snapshots = doc["snapshots"] as? [[String: Any]] ?? []
        return Outcome(
            named: Set(snapshots.filter { $0["ok"] as? Bool == false }.compactMap { $0["snapshot_id"] as? String }),
            repositoryErrors: doc["repository_errors"] as? [String] ?? [], status: r.status)
    }

    @Test func everyFileKindAndDamageIsNamedIsolatedAndRepaired() throws {
        let t = try Template()
        var figures: [String] = []
        for kind in FileKind.allCases {
            for damage in Damage.allCases {
                let label = "\(kind.rawValue)/\(damage.rawValue)"
                let copy = TemporaryDirectory("snapshot-matrix-case")
                let repo = copy.sub("repo")
                #expect(try CLI.shell("cp -a '\(t.repo)' '\(repo)'", in: copy.path).status == 0)
                try self.damage(kind, damage, repo: repo, template: t)

                // What verify names.
                let seen = try verify(repo)
                switch kind {
                case .lock:
                    #expect(seen.status == 0 && seen.named.isEmpty, "\(label): \(seen)")
                case .config:
                    #expect(seen.status == 1 && seen.named.isEmpty, "\(label): \(seen)")
                    #expect(seen.repositoryErrors.contains { $0.contains("/.store/config") }, "\(label): \(seen.repositoryErrors)")
                default:
                    #expect(seen.status == 1, "\(label)")
                    #expect(seen.named == [t.b], "\(label): named \(seen.named.sorted())")
                }
                if kind == .index && damage != .delete {
                    #expect(seen.repositoryErrors.contains { $0.contains(t.indexFile.replacingOccurrences(of: t.repo, with: repo)) }, "\(label): \(seen.repositoryErrors)")
                }
                figures.append("\(label): \(seen.named.count) named (1 damaged)")

                // Nothing else is blocked: list, show and a restore of A, compared file by file.
                #expect(try CLI.run(["--repo", repo, "list"]).status == 0, "\(label): list")
                #expect(try CLI.run(["--repo", repo, "show", "--snapshot", t.a]).status == 0, "\(label): show A")
                let outA = copy.sub("outA")
                let restoredA = try CLI.run(["--repo", repo, "restore", "--snapshot", t.a, "--target", outA])
                #expect(restoredA.status == 0, "\(label): restore A: \(restoredA.stderr)")
                #expect(TreeComparison.differences(t.srcA, outA + "/src") == [], "\(label): restore A")

                // The repair that brings full function back.
                let fix: [String]? = switch kind {
                case .pack, .tree: ["repair", "--snapshot", t.b]
                case .index, .manifest, .metadata, .config: ["rebuild-metadata"]
                case .lock: nil
                }
                if let fix {
                    let r = try CLI.run(["--repo", repo] + fix)
                    #expect(r.status == 0, "\(label): \(fix.joined(separator: " ")): \(r.stdout) \(r.stderr)")
                }
                let after = try verify(repo)
                #expect(after.status == 0 && after.named.isEmpty && after.repositoryErrors.isEmpty, "\(label): after repair: \(after)")
                let outB = copy.sub("outB")
                let restoredB = try CLI.run(["--repo", repo, "restore", "--snapshot", t.b, "--target", outB])
                #expect(restoredB.status == 0, "\(label): restore B: \(restoredB.stderr)")
                #expect(TreeComparison.differences(t.src, outB + "/src") == [], "\(label): restore B")
                // A create works on the repaired repository, and it still verifies.
                #expect(try CLI.run(["--repo", repo, "create", "--path", t.src, "--type", "data", "--quiet"]).status == 0, "\(label): create")
                #expect(try verify(repo).status == 0, "\(label): verify after create")
            }
        }
        print("fault matrix: " + figures.joined(separator: "; "))
    }
}
