#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
@testable import SnapshotAgent
import SnapshotMQTT
import Testing
import TestSupport

/// `snapshot fleet` against two real agents on a real broker.
@Suite(.serialized) struct FleetTests {
    func fleet(_ h: AgentHarness, _ extra: [String] = []) throws -> CLI.Result {
        try CLI.run(["--config", h.config, "fleet", "--broker", h.broker.url] + extra)
    }

    @Test func oneLinePerAgentWithItsStateLastSnapshotsAndAlerts() async throws {
        let a = try await AgentHarness(id: "fleet-a")
        defer { a.stop() }
        let b = try await AgentHarness(id: "fleet-b", broker: a.broker)
        defer { b.stop() }
        try await a.startAgent()
        try await b.startAgent()
        try await a.send("snapshots/cmd/fleet-a/create", #"{"type": "data", "request_id": "fleet-1"}"#)
        #expect(await a.final("create", requestID: "fleet-1")?["status"] as? String == "succeeded")
        #expect(await a.waitFor { _ in
            a.documents(on: "snapshots/status/fleet-a/state").last.map { ($0["last"] as? [String: Any])?["data"] != nil && $0["state"] as? String == "idle" } ?? false
        })

        let json = try fleet(a, ["--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let agents = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]], "\(json.stdout)")
        #expect(agents.map { $0["agent"] as? String } == ["fleet-a", "fleet-b"])
        #expect(agents.allSatisfy { $0["availability"] as? String == "online" && $0["state"] as? String == "idle" && $0["queue"] as? Int == 0 })
        let last = (agents[0]["last"] as? [String: Any])?["data"] as? [String: Any]
        #expect((last?["age_s"] as? Double).map { $0 >= 0 && $0 < 600 } == true)
        #expect((agents[1]["last"] as? [String: Any])?.isEmpty == true)

        // An agent that dies: the broker's last will says so, and so does the next look.
        _ = b.agent?.stop(SIGKILL)
        #expect(await a.waitFor { _ in a.messages(on: "snapshots/status/fleet-b/availability").last?.payloadString == "offline" })
        let text = try fleet(a)
        #expect(text.status == 0)
        let lines = text.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3 && lines[0].hasPrefix("AGENT"), "\(text.stdout)")
        #expect(lines[1].hasPrefix("fleet-a") && lines[1].contains("online") && lines[1].contains("idle") && lines[1].contains("data "), "\(lines)")
        #expect(lines[2].hasPrefix("fleet-b") && lines[2].contains("offline"), "\(lines)")

        // --watch redraws when something changes.
        let watch = try CLI.start(["--config", a.config, "fleet", "--broker", a.broker.url, "--watch"])
        #expect(watch.waitForStdoutLine(containing: "fleet-a"))
        _ = a.agent?.stop(SIGTERM)
        #expect(watch.waitForStdoutLine(containing: "fleet-a  offline"), "a redraw after fleet-a went offline")
        kill(watch.process.processIdentifier, SIGINT)
        #expect(watch.finish() == 0)

        // No broker there: exit 74, naming it.
        let port = try TestBroker.freePortForTests()
        let down = try CLI.run(["--config", a.config, "fleet", "--broker", "mqtt://127.0.0.1:\(port)"])
        #expect(down.status == 74 && down.stderr.contains("cannot reach the broker mqtt://127.0.0.1:\(port)"), "\(down.stderr)")
        #expect(down.stderr.hasSuffix(": Connection refused\n"), "no bare library error number: \(down.stderr)")
        for h in [a, b] {
            let v = try CLI.run(["--repo", h.repo, "verify", "--all"])
            #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
        }
    }
}

@Suite struct FleetViewTests {
    func message(_ topic: String, _ text: String) -> MQTTMessage { MQTTMessage(topic: topic, payload: Array(text.utf8), retain: true) }

    @Test func foldsStatusTopicsIntoRowsWithTheWorstAlert() throws {
        var v = FleetView(prefix: "mesh/backup")
        let now = Date(timeIntervalSince1970: 1_764_324_000)  // 2025-11-28T10:00:00Z
        let changed1 = v.apply(message("mesh/backup/status/n1/availability", "online"))
        #expect(changed1)
        let changed2 = v.apply(message("mesh/backup/status/n1/state", #"{"state":"busy","queue":2,"job":{"action":"verify"},"last":{"system":{"id":"a","timestamp":"2025-11-28T08:00:00Z","ok":true},"continuous":{"id":"b","timestamp":"2025-11-28T09:59:57Z","ok":true}}}"#))
        #expect(changed2)
        let changed3 = v.apply(message("mesh/backup/status/n1/alerts/snapshot_age", #"{"level":"warning"}"#))
        #expect(changed3)
        let changed4 = v.apply(message("mesh/backup/status/n1/alerts/snapshot_integrity", #"{"level":"critical"}"#))
        #expect(changed4)
        let changed5 = v.apply(message("mesh/backup/status/n1/alerts/snapshot_integrity", #"{"level":"critical"}"#))
        #expect(!changed5, "nothing changed")
        let changed6 = v.apply(message("other/status/n2/availability", "online"))
        #expect(!changed6, "another prefix")
        let lines = v.lines(now: now)
        #expect(lines.count == 2)
        #expect(lines[1].hasPrefix("n1     online  busy: verify  2      continuous 3s, system 2h  critical (snapshot_integrity)"), "\(lines[1])")
        let json = v.json(now: now)
        #expect((json[0]["worst_alert"] as? [String: String]) == ["level": "critical", "check": "snapshot_integrity"])
        // Cleared (empty retained payloads): the agent goes away.
        for t in ["availability", "state", "alerts/snapshot_age", "alerts/snapshot_integrity"] { v.apply(message("mesh/backup/status/n1/\(t)", "")) }
        #expect(v.agents.isEmpty)
    }
}
