#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Snapshots forged by hand to escape the restore target — a name listed twice (a directory,
/// then a symlink to the outside), `..` and `/` in entry names, names out of order, a
/// component named `../x` — with every hash in order. Every way of restoring refuses them
/// before writing anything: `verify`, `restore --target`, `test-recovery`, and a restore over
/// MQTT whose target passed confinement; a genuine snapshot beside them restores as usual.
@Suite(.serialized) struct ForgedRepositoryTests {
    struct Forged {
        var id: String
        var name: String
        /// What verify must say about it.
        var finding: String
    }

    /// Commits a snapshot whose one component `data` has `nodes` as its root listing exactly
    /// as given (the encoder writes them unsorted and unchecked), or whose component is named
    /// `component`.
    static func forge(_ repo: String, time: String, name: String, component: String = "data", nodes: (BlobWriter) throws -> [Node]) throws -> String {
        let repository = try Repository.open(at: repo)
        let writer = repository.makeBlobWriter(compressionLevel: 3)
        var tree = Tree(nodes: [])
        tree.nodes = try nodes(writer)
        let root = try writer.store(tree.encode(), type: .tree)
        try writer.flush()
        try repository.commitIndex()
        let catalog = SnapshotCatalog(repositoryPath: repo)
        let id = try catalog.allocateID(at: try #require(Timestamp(iso8601: time)))
        let manifest = SnapshotManifest(snapshotID: id, type: "data", components: [component: ManifestComponent(kind: .files, source: "/srv/data", tree: root)])
        let metadata = SnapshotMetadata(
            snapshotID: id, timestamp: time, type: "data", name: name, components: [component: ComponentSummary(kind: .files, source: "/srv/data", files: 1, bytes: 5)],
            checksums: [component: "sha256:" + String(repeating: "0", count: 64)], sizeBytes: 5, storedBytes: 5, compressionRatio: 1, durationS: 0,
            parent: nil, hostname: "forger", tags: [:], auto: false, manifest: "")
        _ = try catalog.commit(metadata: metadata, manifest: manifest)
        return id
    }

    static func file(_ name: String, _ text: String, _ writer: BlobWriter) throws -> Node {
        var n = Node(name: name, kind: .file)
        n.mode = 0o4755
        n.size = UInt64(text.utf8.count)
        n.content = [try writer.store(Array(text.utf8), type: .data)]
        return n
    }

    static func directory(_ name: String, holding nodes: [Node], _ writer: BlobWriter) throws -> Node {
        var sub = Tree(nodes: [])
        sub.nodes = nodes
        var n = Node(name: name, kind: .directory)
        n.mode = 0o777
        n.subtree = try writer.store(sub.encode(), type: .tree)
        return n
    }

    static func link(_ name: String, to target: String) -> Node {
        var n = Node(name: name, kind: .symlink)
        n.linkTarget = target
        return n
    }

    @Test func everyWayOfRestoringRefusesAForgedSnapshotAndWritesNothing() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        #expect(try CLI.run(["--config", h.config, "create", "--type", "data", "--name", "genuine"]).status == 0)
        let outside = h.dir.sub("outside")
        try POSIX.makeDirectories(outside)
        Fixture.write(outside + "/victim", Array("keep\n".utf8), mode: 0o644)
        var forged: [Forged] = []
        var time = 1_767_225_600
        func add(_ name: String, _ finding: String, component: String = "data", _ nodes: @escaping (BlobWriter) throws -> [Node]) throws {
            time += 60
            let id = try Self.forge(h.repo, time: Timestamp(seconds: Int64(time)).iso8601, name: name, component: component, nodes: nodes)
            forged.append(Forged(id: id, name: name, finding: finding))
        }
        try add("twice", "listed twice") { w in [try Self.directory("x", holding: [try Self.file("victim", "owned\n", w)], w), Self.link("x", to: outside)] }
        try add("dotdot", "unsafe entry name") { w in [try Self.directory("..", holding: [try Self.directory("outside", holding: [try Self.file("victim", "owned\n", w)], w)], w)] }
        try add("slash", "unsafe entry name") { w in [try Self.file("../../outside/victim", "owned\n", w)] }
        try add("unsorted", "out of order") { w in [try Self.file("b", "b\n", w), Self.link("a", to: outside + "/victim")] }
        try add("component", "manifest", component: "../outside") { w in [try Self.file("victim", "owned\n", w)] }

        // No command restores any of them, and each says why.
        let target = h.dir.sub("restored")
        for f in forged {
            let verify = try CLI.run(["--config", h.config, "verify", "--snapshot", f.id])
            #expect(verify.status == 1 || verify.status == 65, "\(f.name): verify exit \(verify.status)")
            #expect((verify.stdout + verify.stderr).contains(f.finding), "\(f.name): \(verify.stdout) \(verify.stderr)")
            let restore = try CLI.run(["--config", h.config, "restore", "--snapshot", f.id, "--target", target])
            #expect(restore.status == 65, "\(f.name): restore exit \(restore.status): \(restore.stderr)")
            let recovery = try CLI.run(["--config", h.config, "test-recovery", "--snapshot", f.id, "--json"])
            #expect(recovery.status != 0, "\(f.name): test-recovery passed: \(recovery.stdout)")
        }
        // Over MQTT, into a target inside the allowed roots.
        try await h.startAgent()
        for f in forged {
            try await h.send("snapshots/cmd/\(h.id)/restore", #"{"snapshot": "\#(f.id)", "target": "\#(target)", "request_id": "forged-\#(f.name)"}"#)
            let reply = await h.final("restore", requestID: "forged-\(f.name)")
            #expect(reply?["status"] as? String == "failed", "\(f.name): \(reply ?? [:])")
        }
        // Nothing reached the outside: not a file, not a mode, not a link.
        #expect(try POSIX.listDirectory(outside) == ["victim"])
        #expect(try POSIX.readFile(outside + "/victim") == Array("keep\n".utf8))
        var st = stat()
        #expect(stat(outside + "/victim", &st) == 0 && st.st_mode & 0o7777 == 0o644 && st.st_nlink == 1)
        #expect(stat(outside, &st) == 0 && st.st_mode & 0o7777 != 0o777)
        // The genuine snapshot still restores.
        try await h.send("snapshots/cmd/\(h.id)/restore", #"{"snapshot": "genuine", "target": "\#(target)", "request_id": "genuine"}"#)
        #expect(await h.final("restore", requestID: "genuine")?["status"] as? String == "succeeded")
        #expect(try POSIX.readFile(target + "/data/a.txt") == Array("hello\n".utf8))
        // verify --all names every forged snapshot, and only those.
        let all = try CLI.run(["--config", h.config, "verify", "--all", "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [String: Any])
        let bad = Set((doc["snapshots"] as? [[String: Any]] ?? []).filter { $0["ok"] as? Bool == false }.compactMap { $0["snapshot_id"] as? String })
        #expect(bad == Set(forged.map(\.id)), "\(all.stdout)")
    }
}
