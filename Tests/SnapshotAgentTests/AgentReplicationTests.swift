#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

/// The agent's `replicate:` against a real S3 API (moto): new snapshots of the listed types
/// reach the target after they commit, the retained `replication` status says how far behind
/// it is, and a target that cannot be reached raises `replication_lag` until it can.
@Suite(.serialized) struct AgentReplicationTests {
    func replication(_ h: AgentHarness) -> [[String: Any]] {
        h.messages(on: "snapshots/status/\(h.id)/replication").compactMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [[String: Any]] }.compactMap(\.first)
    }

    @Test func newSnapshotsOfTheListedTypesReachTheTarget() async throws {
        let s3 = try S3Server()
        let h = try await AgentHarness(extraConfig: """
            retention: retention.yaml
            replicate:
              - {to: "s3://offsite/agents", types: [full]}
            """)
        defer { h.stop() }
        try await h.startAgent(environment: s3.environment)
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "full", "request_id": "r-full"}"#)
        let created = try #require(await h.final("create", requestID: "r-full"))
        let id = try #require((created["result"] as? [String: Any])?["snapshot_id"] as? String, "\(created)")
        #expect(await h.waitFor { _ in replication(h).last.map { $0["last_copied_id"] as? String == id && $0["pending_snapshots"] as? Int == 0 } ?? false },
                "a status naming the copied snapshot: \(replication(h).last ?? [:]) \(h.agentLog)")
        let status = try #require(replication(h).last)
        #expect(status["to"] as? String == "s3://offsite/agents" && status["lag_s"] as? Int == 0 && status["last_error"] is NSNull)

        // A type not listed stays here.
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "r-data"}"#)
        #expect(await h.final("create", requestID: "r-data")?["status"] as? String == "succeeded")
        let list = try CLI.run(["--repo", "s3://offsite/agents", "--json", "list"], environment: s3.environment)
        let ids = ((try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8))) as? [[String: Any]])?.compactMap { $0["snapshot_id"] as? String } ?? []
        #expect(ids == [id], "\(list.stdout) \(list.stderr)")
        var v = try CLI.run(["--repo", "s3://offsite/agents", "verify", "--all", "--read-data"], environment: s3.environment)
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")

        // Retention here (keep the newest full one): the target follows the same policy.
        Fixture.write(h.data + "/a.txt", Array("changed\n".utf8))
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "full", "request_id": "r-full-2"}"#)
        let second = try #require((await h.final("create", requestID: "r-full-2"))?["result"] as? [String: Any])["snapshot_id"] as? String
        #expect(await h.waitFor { _ in replication(h).last?["last_copied_id"] as? String == second })
        Fixture.write(h.dir.sub("retention.yaml"), Array("retention:\n  full_snapshots: {last: 1}\n".utf8))
        try await h.send("snapshots/cmd/\(h.id)/prune", #"{"request_id": "r-prune"}"#)
        #expect(await h.final("prune", requestID: "r-prune")?["status"] as? String == "succeeded")
        func replicaIDs() throws -> [String] {
            let l = try CLI.run(["--repo", "s3://offsite/agents", "--json", "list"], environment: s3.environment)
            return ((try? JSONSerialization.jsonObject(with: Data(l.stdout.utf8))) as? [[String: Any]])?.compactMap { $0["snapshot_id"] as? String } ?? []
        }
        let deadline = Date().addingTimeInterval(20)
        while try replicaIDs() != [second].compactMap({ $0 }), Date() < deadline { try await Task.sleep(nanoseconds: 100_000_000) }
        #expect(try replicaIDs() == [second].compactMap { $0 }, "\(h.agentLog)")
        v = try CLI.run(["--repo", "s3://offsite/agents", "verify", "--all", "--read-data"], environment: s3.environment)
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
        #expect(h.agent?.stop(SIGTERM) == 0)
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all"]).status == 0)
    }

    @Test func anUnreachableTargetRaisesTheLagAlertUntilItCatchesUp() async throws {
        let port = try TestBroker.freePortForTests()
        let h = try await AgentHarness(extraConfig: """
            alerts: alerts.yaml
            replicate:
              - {to: "s3://later/agents"}
            """)
        defer { h.stop() }
        Fixture.write(h.dir.sub("alerts.yaml"), Array("alerts:\n  snapshot_age: {warning_threshold: \"1s\", critical_threshold: \"1h\"}\n".utf8))
        var env = ProcessInfo.processInfo.environment
        env["AWS_ACCESS_KEY_ID"] = "snapshot-test"
        env["AWS_SECRET_ACCESS_KEY"] = "snapshot-test-secret"
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:\(port)"
        env["SNAPSHOT_S3_TIMEOUT"] = "1"
        try await h.startAgent(environment: env)
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "full", "request_id": "r1"}"#)
        let created = try #require(await h.final("create", requestID: "r1"))
        let id = try #require((created["result"] as? [String: Any])?["snapshot_id"] as? String)
        #expect(await h.waitFor(timeout: 40) { _ in replication(h).last.map { $0["pending_snapshots"] as? Int == 1 && !($0["last_error"] is NSNull) } ?? false },
                "a status with the snapshot pending and the error: \(replication(h).last ?? [:]) \(h.agentLog)")
        let alerts = "snapshots/status/\(h.id)/alerts/replication_lag"
        #expect(await h.waitFor(timeout: 40) { _ in h.documents(on: alerts).last?["level"] as? String == "warning" }, "\(h.documents(on: alerts)) \(h.agentLog)")

        // The target comes up: the next attempt copies what is pending and the alert clears.
        let s3 = try S3Server(port: port)
        _ = try s3.storage("s3://later")
        #expect(await h.waitFor(timeout: 60) { _ in replication(h).last.map { $0["last_copied_id"] as? String == id && $0["pending_snapshots"] as? Int == 0 && $0["last_error"] is NSNull } ?? false },
                "\(replication(h).last ?? [:]) \(h.agentLog)")
        #expect(await h.waitFor(timeout: 30) { _ in h.documents(on: alerts).last?["level"] as? String == "ok" }, "\(h.documents(on: alerts))")
        let v = try CLI.run(["--repo", "s3://later/agents", "verify", "--all", "--read-data"], environment: s3.environment)
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
    }
}
