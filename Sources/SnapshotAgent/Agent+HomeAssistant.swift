import Foundation
import SnapshotCore
import SnapshotEngine

/// Home Assistant MQTT discovery (`mqtt.homeassistant`): one retained document per entity
/// under `<discovery_prefix>/<platform>/<agent id>/<object>/config`, each reading one of the
/// agent's retained status topics — nothing new to publish for Home Assistant's sake.
/// Which documents were published is remembered (`.store/agent/<id>-homeassistant.json`), so
/// that turning the option off, or a type that went away, clears them (an empty retained
/// payload is Home Assistant's "remove").
extension Agent {
    /// The documents for this agent, by topic.
    func discoveryDocuments(prefix: String) -> [(topic: String, document: [String: Any])] {
        let id = settings.id
        let node = Self.discoveryNode(id)
        let device: [String: Any] = [
            "identifiers": ["snapshot-agent-\(id)"], "name": "snapshot \(id)", "manufacturer": "snapshot",
            "model": "snapshot agent", "sw_version": AgentSettings.version,
        ]
        let origin: [String: Any] = ["name": "snapshot", "sw_version": AgentSettings.version]
        var out: [(String, [String: Any])] = []
        func add(_ platform: String, _ object: String, _ name: String, _ fields: [String: Any]) {
            var doc = fields
            doc["name"] = name
            doc["unique_id"] = "snapshot_\(node)_\(object)"
            doc["object_id"] = "snapshot_\(node)_\(object)"
            doc["availability_topic"] = settings.availabilityTopic
            doc["payload_available"] = "online"
            doc["payload_not_available"] = "offline"
            doc["device"] = device
            doc["origin"] = origin
            out.append(("\(prefix)/\(platform)/\(node)/\(object)/config", doc))
        }
        add("binary_sensor", "online", "Online", [
            "state_topic": settings.availabilityTopic, "payload_on": "online", "payload_off": "offline",
            "device_class": "connectivity", "entity_category": "diagnostic",
        ])
        var types = settings.configuredTypes.map(\.name)
        if settings.continuous { types.append(SnapshotType.continuous.name) }
        for t in types {
            add("sensor", "last_\(Self.discoveryNode(t))", "Last \(t) snapshot", [
                "state_topic": settings.stateTopic, "device_class": "timestamp",
                "value_template": "{{ (value_json.last.get('\(t)') or {}).get('timestamp') }}",
            ])
        }
        add("sensor", "repository_size", "Repository size", [
            "state_topic": settings.metricsTopic, "device_class": "data_size", "unit_of_measurement": "B",
            "state_class": "measurement", "value_template": "{{ value_json.repository_bytes }}",
        ])
        add("sensor", "creation_time", "Last creation time", [
            "state_topic": settings.metricsTopic, "device_class": "duration", "unit_of_measurement": "s",
            "value_template": "{{ value_json.creation_time_s }}",
        ])
        add("sensor", "restoration_time", "Last restoration time", [
            "state_topic": settings.metricsTopic, "device_class": "duration", "unit_of_measurement": "s",
            "value_template": "{{ value_json.restoration_time_s }}",
        ])
        for check in AgentSettings.alertChecks {
            add("sensor", "alert_\(check)", "Alert \(check.replacingOccurrences(of: "_", with: " "))", [
                "state_topic": settings.alertTopic(check), "device_class": "enum", "options": ["ok", "warning", "critical"],
                "value_template": "{{ value_json.level }}",
            ])
        }
        if settings.continuous {
            add("sensor", "continuous_lag", "Continuous snapshot lag", [
                "state_topic": settings.continuousTopic, "device_class": "duration", "unit_of_measurement": "s",
                "value_template": "{{ value_json.lag_s }}",
            ])
        }
        if settings.allow.contains("create") {
            for t in settings.configuredTypes {
                add("button", "create_\(Self.discoveryNode(t.name))", "Create \(t) snapshot", [
                    "command_topic": "\(settings.prefix)/cmd/\(id)/create",
                    "payload_press": String(decoding: encode(["type": t.name]), as: UTF8.self),
                ])
            }
        }
        return out
    }

    /// Home Assistant's node and object ids are `[a-zA-Z0-9_-]`: anything else becomes `_`.
    static func discoveryNode(_ s: String) -> String {
        String(s.unicodeScalars.map { c -> Character in
            (("0"..."9").contains(c) || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || c == "_" || c == "-") ? Character(c) : "_"
        })
    }

    /// Publishes the discovery documents (after every connect, like the rest of the retained
    /// state) and clears those published before that are no longer wanted.
    func publishDiscovery() async {
        let previous = (try? POSIX.readFile(settings.discoveryPath))
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String] } ?? []
        let documents = settings.homeAssistantPrefix.map { discoveryDocuments(prefix: $0) } ?? []
        let current = documents.map(\.topic)
        guard !(previous.isEmpty && current.isEmpty) else { return }
        for (topic, doc) in documents {
            try? await publish(topic, encode(doc), retain: true)
        }
        var cleared = true
        for topic in previous where !current.contains(topic) {
            do {
                try await publish(topic, [UInt8](), retain: true, timeout: 5)
            } catch {
                cleared = false
                logger.warning("could not clear the Home Assistant discovery document \(topic): \(error)")
            }
        }
        // What is still out there: the current documents, and any that could not be cleared.
        let remembered = cleared ? current : Array(Set(current).union(previous)).sorted()
        if remembered.isEmpty {
            unlink(settings.discoveryPath)
        } else if remembered != previous, let data = try? JSONSerialization.data(withJSONObject: remembered, options: [.sortedKeys]) {
            try? POSIX.makeDirectories(POSIX.parent(of: settings.discoveryPath), mode: RepositoryModes.storeDirectory)
            try? POSIX.writeFileAtomically(settings.discoveryPath, Array(data))
        }
        if !current.isEmpty { logger.info("Home Assistant discovery: \(current.count) entities under \(settings.homeAssistantPrefix ?? "")/") }
        let gone = previous.filter { !current.contains($0) }.count
        if cleared && gone > 0 { logger.info("Home Assistant discovery: cleared \(gone) documents published before") }
    }
}
