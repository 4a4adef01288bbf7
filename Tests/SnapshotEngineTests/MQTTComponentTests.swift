#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Testing
import TestSupport

@Suite(.serialized) struct MQTTComponentTests {
    func connect(_ broker: TestBroker, _ id: String) async throws -> MQTTClient {
        let c = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: id, reconnectDelay: (0.05, 0.5)))
        c.start()
        try await c.waitUntilConnected()
        return c
    }

    @Test func aBrokerThatStopsAcknowledgingFailsTheRepublishInsteadOfHangingIt() async throws {
        let port = try TestBroker.freePortForTests()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures/mute_broker.py"
        let dir = TemporaryDirectory("snapshot-mute")
        let mute = try ChildProcess("/usr/bin/python3", [script, "\(port)"], logFile: dir.sub("mute.log"))
        defer { mute.stop(SIGKILL) }
        let end = Date().addingTimeInterval(10)
        while Date() < end && !((try? String(contentsOfFile: dir.sub("mute.log"), encoding: .utf8)) ?? "").contains("ready") { usleep(20_000) }
        let stored = Array(#"[{"topic":"workers/alpha/status","payload":"{}","qos":1,"retained":true},{"topic":"workers/bravo/status","payload":"{}","qos":1,"retained":true}]"#.utf8)
        let start = Date()
        do {
            _ = try await MQTTCapture.republish(files: [stored], broker: BrokerSettings(url: "mqtt://127.0.0.1:\(port)"), component: "workers", timeout: 1)
            Issue.record("a republish without acknowledgements succeeded")
        } catch {
            #expect("\(error)" == "component workers: the broker mqtt://127.0.0.1:\(port) did not acknowledge message 1 of 2 (workers/alpha/status) within 1 s")
        }
        // 1 s alone; other suites running in parallel block cooperative threads (sleeps,
        // child-process waits) and delay the deadline's timer, but never by this much.
        #expect(Date().timeIntervalSince(start) < 30)
    }

    @Test func retainedWorkerMessagesAreCapturedGroupedAndRepublished() async throws {
        let broker = try TestBroker()
        let mesh = try await connect(broker, "mesh")
        defer { mesh.stop() }
        for w in ["alpha", "bravo", "charlie"] {
            try await mesh.publish("workers/\(w)/status", Array("{\"worker\":\"\(w)\",\"status\":\"idle\"}".utf8), qos: 1, retain: true)
            try await mesh.publish("workers/\(w)/health", Array("{\"ok\":true}".utf8), qos: 1, retain: true)
        }
        try await mesh.publish("workers/alpha/log", Array("not retained".utf8), qos: 1, retain: false)
        let settings = BrokerSettings(url: broker.url)
        let captured = try await MQTTCapture.capture(name: "workers", filters: ["workers/+/status", "workers/+/health"], broker: settings)
        #expect(captured.details.messages == 6)
        #expect(captured.files.map(\.name) == ["health.json", "status.json"])
        let status = try #require(try JSONSerialization.jsonObject(with: Data(captured.files[1].bytes)) as? [[String: Any]])
        #expect(status.map { $0["topic"] as? String } == ["workers/alpha/status", "workers/bravo/status", "workers/charlie/status"])
        #expect(status[0]["payload"] as? String == "{\"worker\":\"alpha\",\"status\":\"idle\"}")
        #expect(status[0]["retained"] as? Bool == true && status[0]["qos"] as? Int == 1)

        let h = try EngineHarness()
        let record = try Archiver(repository: try h.open()).create(CreateRequest(type: .system, sources: [], generated: [captured]))
        #expect(record.metadata.components["workers"]?.details.messages == 6)
        let out = h.dir.sub("out")
        _ = try h.restore(record.id, to: out)
        #expect(try POSIX.readFile(out + "/workers/status.json") == captured.files[1].bytes)

        // The mesh forgets the retained state (a broker without persistence restarted) ...
        try broker.restart()
        let watcher = try await connect(broker, "watcher")
        defer { watcher.stop() }
        // ... and the restore republishes it, retained.
        let files = [try POSIX.readFile(out + "/workers/status.json"), try POSIX.readFile(out + "/workers/health.json")]
        #expect(try await MQTTCapture.republish(files: files, broker: settings, component: "workers") == 6)
        let again = try await MQTTCapture.capture(name: "workers", filters: ["workers/#"], broker: settings)
        #expect(again.details.messages == 6)
        try h.expectVerifies()
    }

    @Test func anUnreachableBrokerFailsTheComponentByName() async throws {
        await #expect(throws: EngineError.self) {
            try await MQTTCapture.capture(name: "workers", filters: ["workers/#"], broker: BrokerSettings(url: "mqtt://127.0.0.1:1"))
        }
    }

    @Test func mqttSectionIsValidated() throws {
        func error(_ yaml: String) -> String {
            do {
                _ = try SnapshotConfig.parse(yaml, file: "c.yaml", workingDirectory: "/srv")
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(error("mqtt:\n  broker: tcp://x\n").hasPrefix("c.yaml:2: mqtt.broker must look like"))
        #expect(error("mqtt:\n  allow: [create, explode]\n").contains("unknown action \"explode\""))
        #expect(error("mqtt:\n  prefix: snap/#\n").contains("without wildcards"))
        #expect(error("mqtt:\n  max_payload: 0\n").contains("1..268435455"))
        #expect(error("mqtt:\n  tls: {ca: ca.pem, pem: x}\n").contains("unknown key \"pem\""))
        let c = try SnapshotConfig.parse("mqtt:\n  broker: mqtts://b:8883\n  groups: [gpu]\n  tls: {ca: certs/ca.pem}\n", file: "c", workingDirectory: "/srv")
        #expect(c.mqtt.groups == ["gpu"])
        #expect(c.mqtt.tls.caFile == "/srv/certs/ca.pem")
        #expect(try c.mqtt.brokerSettings().tls?.caFile == "/srv/certs/ca.pem")
    }
}
