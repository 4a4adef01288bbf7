#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

/// Home Assistant MQTT discovery against what Home Assistant's MQTT integration documents:
/// a retained JSON document per entity at `<prefix>/<platform>/<node>/<object>/config`, with
/// `unique_id`, `device`, `availability_topic`; an empty retained payload removes it.
@Suite(.serialized) struct HomeAssistantTests {
    @Test func discoveryDocumentsDescribeTheAgentAndGoAwayWithTheOption() async throws {
        let h = try await AgentHarness(id: "ha-agent", extraConfig: """
            continuous:
              - {components: [data], debounce: "0.2s"}
            """)
        defer { h.stop() }
        // mqtt.homeassistant goes inside the harness's mqtt: section.
        let original = try String(contentsOfFile: h.config, encoding: .utf8)
        try original.replacingOccurrences(of: "  groups: [backup-group]\n", with: "  groups: [backup-group]\n  homeassistant: {discovery_prefix: ha}\n")
            .write(toFile: h.config, atomically: true, encoding: .utf8)
        h.operatorClient.subscribe("ha/#", qos: 1)
        try await h.startAgent()
        func docs() -> [String: [String: Any]] {
            var out: [String: [String: Any]] = [:]
            for m in h.all where m.topic.hasPrefix("ha/") {
                out[m.topic] = m.payload.isEmpty ? nil : (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any]
            }
            return out
        }
        #expect(await h.waitFor { _ in docs()["ha/button/ha-agent/create_full/config"] != nil }, "discovery documents: \(h.agentLog)")
        let all = docs()
        let status = "snapshots/status/ha-agent"
        // Every entity: unique, available with the agent, one device for the agent.
        #expect(Set(all.values.compactMap { $0["unique_id"] as? String }).count == all.count)
        for (topic, doc) in all {
            #expect(doc["availability_topic"] as? String == "\(status)/availability", "\(topic)")
            #expect(doc["payload_available"] as? String == "online" && doc["payload_not_available"] as? String == "offline")
            let device = doc["device"] as? [String: Any]
            #expect(device?["identifiers"] as? [String] == ["snapshot-agent-ha-agent"], "\(topic)")
            #expect(doc["name"] is String && (doc["origin"] as? [String: Any])?["name"] as? String == "snapshot")
            #expect(topic.hasSuffix("/config") && topic.split(separator: "/").count == 5)
        }
        let online = try #require(all["ha/binary_sensor/ha-agent/online/config"])
        #expect(online["device_class"] as? String == "connectivity" && online["state_topic"] as? String == "\(status)/availability")
        #expect(online["payload_on"] as? String == "online" && online["payload_off"] as? String == "offline")
        for t in ["data", "full", "nightly", "continuous"] {
            let last = try #require(all["ha/sensor/ha-agent/last_\(t)/config"], "a sensor for \(t)")
            #expect(last["device_class"] as? String == "timestamp" && last["state_topic"] as? String == "\(status)/state")
            #expect((last["value_template"] as? String)?.contains("'\(t)'") == true)
        }
        let size = try #require(all["ha/sensor/ha-agent/repository_size/config"])
        #expect(size["device_class"] as? String == "data_size" && size["unit_of_measurement"] as? String == "B")
        #expect(size["state_topic"] as? String == "\(status)/metrics" && size["value_template"] as? String == "{{ value_json.repository_bytes }}")
        for check in ["snapshot_age", "snapshot_size", "snapshot_integrity"] {
            let alert = try #require(all["ha/sensor/ha-agent/alert_\(check)/config"])
            #expect(alert["device_class"] as? String == "enum" && alert["options"] as? [String] == ["ok", "warning", "critical"])
            #expect(alert["state_topic"] as? String == "\(status)/alerts/\(check)")
        }
        #expect(all["ha/sensor/ha-agent/creation_time/config"]?["device_class"] as? String == "duration")
        #expect(all["ha/sensor/ha-agent/continuous_lag/config"]?["state_topic"] as? String == "\(status)/continuous")

        // The button publishes a create the agent runs.
        let button = try #require(all["ha/button/ha-agent/create_data/config"])
        let topic = try #require(button["command_topic"] as? String)
        let press = try #require(button["payload_press"] as? String)
        #expect(topic == "snapshots/cmd/ha-agent/create")
        try await h.send(topic, press)
        #expect(await h.waitFor { _ in h.responses("create").contains { $0["status"] as? String == "succeeded" } }, "the button's create: \(h.agentLog)")
        let made = h.responses("create").last { $0["status"] as? String == "succeeded" }
        #expect((made?["result"] as? [String: Any])?["type"] as? String == "data")
        #expect(h.agent?.stop(SIGTERM) == 0)

        // Without the option, the agent clears every document it published.
        try original.write(toFile: h.config, atomically: true, encoding: .utf8)
        let published = Set(all.keys)
        try await h.startAgent()
        func cleared() -> Set<String> { Set(h.all.filter { $0.topic.hasPrefix("ha/") && $0.payload.isEmpty }.map(\.topic)) }
        #expect(await h.waitFor { _ in cleared() == published }, "cleared: \(published.subtracting(cleared()).sorted()) \(h.agentLog)")
        // A late subscriber finds nothing retained under the prefix: retained messages come
        // at subscription, before a marker it publishes afterwards on the same connection.
        let late = try MQTTClient(options: MQTTOptions(port: h.broker.port, clientID: "late-\(UInt32.random(in: 0...UInt32.max))"))
        late.subscribe("ha/#", qos: 1)
        late.start()
        defer { late.stop() }
        try await late.waitUntilConnected()
        try await late.publish("ha/marker", Array("end".utf8), qos: 1)
        for await m in late.messages {
            if m.topic == "ha/marker" { break }
            let cleared = m.payload.isEmpty
            #expect(cleared, "still retained: \(m.topic)")
        }
        let v = try CLI.run(["--repo", h.repo, "verify", "--all"])
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
    }
}
