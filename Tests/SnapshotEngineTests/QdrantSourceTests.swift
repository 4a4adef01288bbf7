#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// The stand-in Qdrant server (Tests/Fixtures/qdrant_standin.py) on a free port.
final class QdrantStandIn {
    let dir = TemporaryDirectory("snapshot-qdrant")
    let port: Int
    let process: ChildProcess

    var url: String { "http://127.0.0.1:\(port)" }

    init(_ extra: [String] = []) throws {
        port = Int(try TestBroker.freePortForTests())
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures/qdrant_standin.py"
        process = try ChildProcess("/usr/bin/python3", [script, "\(port)", dir.sub("state.json"),
                                                        "--collection", "agent_memory:300000:1", "--collection", "documents:120000:2"] + extra,
                                   logFile: dir.sub("server.log"))
        let deadline = Date().addingTimeInterval(10)
        while !POSIX.exists(dir.sub("state.json")) && Date() < deadline { usleep(10_000) }
    }

    var state: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(POSIX.readFile(dir.sub("state.json"))))) as? [String: Any] ?? [:]
    }

    deinit { process.stop() }
}

@Suite(.serialized) struct QdrantSourceTests {
    func service(_ live: LiveSystem, _ url: String) throws -> SnapshotService {
        let yaml = """
            root: \(live.root)
            repository: \(live.dir.sub("repo"))
            components:
              configs: {path: configs}
              storage: {qdrant: "\(url)"}
            types:
              data: [storage]
              system: [configs, storage]
            """
        return SnapshotService(config: try SnapshotConfig.parse(yaml, file: "s.yaml", workingDirectory: live.dir.path), repositoryPath: live.dir.sub("repo"), workingDirectory: live.dir.path)
    }

    @Test func collectionsAreSnapshottedThroughTheAPIAndUploadedBackWithPrioritySnapshot() async throws {
        let server = try QdrantStandIn()
        let live = LiveSystem()
        let service = try service(live, server.url)
        var o = CreateOptions()
        o.type = .data
        let record = try await service.create(o)
        let c = try #require(record.metadata.components["storage"])
        #expect(c.kind == .qdrant && c.source == server.url && c.files == 2)
        #expect((server.state["snapshots"] as? [Any])?.isEmpty == true, "server-side snapshots were not deleted")
        #expect(try POSIX.listDirectory(live.dir.sub("repo/.store/tmp")).isEmpty, "scratch downloads left behind")
        var r = RestoreOptions()
        r.snapshot = record.id
        r.target = live.dir.sub("out")
        _ = try service.restore(r)
        let file = try POSIX.readFile(live.dir.sub("out/storage/agent_memory.snapshot"))
        #expect(file.starts(with: Array("QDRANT-SNAPSHOT\nagent_memory\n".utf8)))
        let collections = try #require(server.state["collections"] as? [String: String])
        #expect(BlobID.hash(Array(file.dropFirst("QDRANT-SNAPSHOT\nagent_memory\n".utf8.count))).hex == collections["agent_memory"])
        // In place: uploaded back, with priority=snapshot, after a pre-restore capture.
        var inPlace = RestoreOptions()
        inPlace.snapshot = record.id
        let summary = try #require(try await service.restoreInPlace(inPlace).summary)
        #expect(summary.components.map(\.action) == ["uploaded"])
        #expect(summary.preRestore != nil)
        let uploads = try #require(server.state["uploads"] as? [[String: String]])
        #expect(Set(uploads.map { $0["collection"]! }) == ["agent_memory", "documents"])
        #expect(uploads.allSatisfy { $0["priority"] == "snapshot" })
        try live.verify(service)
    }

    @Test func aChecksumMismatchFailsTheComponentAndCommitsNothing() async throws {
        let server = try QdrantStandIn(["--bad-checksum"])
        let live = LiveSystem()
        let service = try service(live, server.url)
        var o = CreateOptions()
        o.type = .data
        do {
            _ = try await service.create(o)
            Issue.record("a checksum mismatch was accepted")
        } catch {
            #expect("\(error)".hasPrefix("component storage: Qdrant snapshot"))
            #expect("\(error)".contains("checksum mismatch"))
        }
        #expect(try service.catalog.all().isEmpty)
        #expect((server.state["snapshots"] as? [Any])?.isEmpty == true, "the server-side copy was left after the failure")
        do {
            _ = try SnapshotConfig.parse("components:\n  s: {qdrant: ftp://x}\n", file: "c.yaml", workingDirectory: "/")
            Issue.record("a bad qdrant URL was accepted")
        } catch {
            #expect("\(error)".hasPrefix("c.yaml:2: components.s.qdrant must be an http"))
        }
    }
}
