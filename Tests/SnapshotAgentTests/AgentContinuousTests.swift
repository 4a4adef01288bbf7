#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

@Suite(.serialized) struct AgentContinuousTests {
    @Test func theAgentSnapshotsChangesAndKeepsTheContinuousStatusRetained() async throws {
        let h = try await AgentHarness(extraConfig: """
            continuous:
              - {components: [data], debounce: "0.2s", max_interval: "10s"}
            """)
        defer { h.stop() }
        try await h.startAgent()
        let topic = "snapshots/status/\(h.id)/continuous"
        func lastID() -> String? { h.documents(on: topic).last { $0["pending_paths"] as? Int == 0 }?["last_id"] as? String }
        #expect(await h.waitFor { _ in lastID() != nil }, "a status after the start-up snapshot: \(h.agentLog)")
        let first = try #require(lastID())
        let doc = try #require(h.documents(on: topic).last)
        #expect(doc["components"] as? [String] == ["data"])
        #expect(doc["lag_s"] is Double || doc["lag_s"] is Int)
        #expect(doc["last_at"] is String)

        Fixture.write(h.data + "/b.txt", Array("new file\n".utf8))
        #expect(await h.waitFor { _ in lastID().map { $0 != first } ?? false }, "a status naming the snapshot of the change: \(h.agentLog)")
        let second = try #require(lastID())
        // The state's last outcomes name it too.
        let state = try #require(h.documents(on: "snapshots/status/\(h.id)/state").last)
        #expect(((state["last"] as? [String: Any])?["continuous"] as? [String: Any])?["id"] as? String == second)

        // A late subscriber gets the status retained.
        let late = try MQTTClient(options: MQTTOptions(port: h.broker.port, clientID: "late-\(UInt32.random(in: 0...UInt32.max))"))
        late.subscribe(topic, qos: 1)
        late.start()
        defer { late.stop() }
        var retained: MQTTMessage?
        for await m in late.messages {
            retained = m
            break
        }
        #expect(retained?.retain == true)
        #expect((try? JSONSerialization.jsonObject(with: Data(retained?.payload ?? [])) as? [String: Any])?["last_id"] as? String == second)

        #expect(h.agent?.stop(SIGTERM) == 0, "the agent stops cleanly with a watch running: \(h.agentLog)")
        let ls = try CLI.run(["--repo", h.repo, "ls", "--snapshot", "continuous/latest", "data/b.txt"])
        #expect(ls.status == 0 && ls.stdout.contains("data/b.txt"), "\(ls.stdout) \(ls.stderr)")

        // Changed while the agent was down: its start-up comparison catches it.
        Fixture.write(h.data + "/while-down.txt", Array("written while no agent ran\n".utf8))
        try await h.startAgent()
        #expect(await h.waitFor { _ in lastID().map { $0 != second } ?? false }, "a snapshot after the restart: \(h.agentLog)")
        #expect(h.agent?.stop(SIGTERM) == 0)
        let after = try CLI.run(["--repo", h.repo, "ls", "--snapshot", "continuous/latest", "data/while-down.txt"])
        #expect(after.status == 0 && after.stdout.contains("data/while-down.txt"), "\(after.stdout) \(after.stderr)")
        let v = try CLI.run(["--repo", h.repo, "verify", "--all", "--read-data"])
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
    }
}
