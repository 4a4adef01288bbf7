import Foundation
import SnapshotCore
import SnapshotMQTT

/// How the engine reaches the broker (built from the config's `mqtt:` section and flags).
public struct BrokerSettings: Sendable {
    public var url: String
    public var username: String?
    public var password: String?
    public var tls: MQTTTLS?

    public init(url: String = "mqtt://127.0.0.1:1883", username: String? = nil, password: String? = nil, tls: MQTTTLS? = nil) {
        self.url = url
        self.username = username
        self.password = password
        self.tls = tls
    }

    /// Client options for a short-lived helper connection (capture, republish).
    public func options(clientID: String) throws -> MQTTOptions {
        guard let parsed = MQTTOptions.parseBroker(url) else {
            throw EngineError.usage("broker \(url): expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        }
        return MQTTOptions(
            host: parsed.host, port: parsed.port, clientID: clientID, username: username, password: password,
            tls: parsed.tls ? (tls ?? MQTTTLS()) : nil, reconnectDelay: (0.1, 1))
    }
}

/// One stored retained message: `{"topic","payload","qos","retained"}` (payload as text, or
/// `payload_base64` when it is not UTF-8).
struct StoredMessage: Codable, Equatable {
    var topic: String
    var payload: String?
    var payloadBase64: String?
    var qos: Int
    var retained: Bool

    enum CodingKeys: String, CodingKey {
        case topic, payload, qos, retained
        case payloadBase64 = "payload_base64"
    }

    init(_ m: MQTTMessage) {
        topic = m.topic
        if let text = String(validating: m.payload, as: UTF8.self) {
            payload = text
        } else {
            payloadBase64 = Data(m.payload).base64EncodedString()
        }
        qos = m.qos
        retained = m.retain
    }

    var bytes: [UInt8] {
        if let payload { return Array(payload.utf8) }
        return payloadBase64.flatMap { Data(base64Encoded: $0) }.map(Array.init) ?? []
    }
}

/// Captures and republishes `mqtt` components: the retained messages under topic filters,
/// stored as JSON files grouped by the last topic level (`workers/+/status` →
/// `status.json`).
public enum MQTTCapture {
    /// Subscribes, collects retained messages until none has arrived for `quiet` seconds
    /// (at most `limit` seconds in all), and disconnects.
    public static func capture(name: String, filters: [String], broker: BrokerSettings, quiet: Double = 0.3, limit: Double = 5) async throws -> GeneratedSource {
        let client = try await connect(broker, purpose: "capture", component: name)
        defer { client.stop() }
        let collector = MessageCollector()
        let reader = Task { for await m in client.messages where m.retain { collector.add(m) } }
        defer { reader.cancel() }
        for f in filters { client.subscribe(f, qos: 1) }
        let start = Date()
        var lastCount = -1
        var lastChange = Date()
        while Date().timeIntervalSince(start) < limit {
            try await Task.sleep(nanoseconds: 50_000_000)
            let n = collector.count
            if n != lastCount {
                lastCount = n
                lastChange = Date()
            } else if Date().timeIntervalSince(lastChange) >= quiet {
                break
            }
        }
        let messages = collector.all.sorted { $0.topic < $1.topic }
        var groups: [String: [StoredMessage]] = [:]
        for m in messages {
            let last = m.topic.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? "messages"
            let file = SnapshotConfig.isValidName(last) ? last : "messages"
            groups[file, default: []].append(StoredMessage(m))
        }
        let encoder = JSONEncoder.snapshot
        var files: [(String, [UInt8])] = []
        for (file, list) in groups.sorted(by: { $0.key < $1.key }) {
            files.append((file + ".json", Array(try encoder.encode(list)) + [0x0a]))
        }
        var details = ComponentDetails(messages: messages.count)
        if Date().timeIntervalSince(start) >= limit { details.note = "retained messages still arriving after \(Int(limit)) s" }
        return GeneratedSource(name: name, kind: .mqtt, source: filters.joined(separator: " "), files: files, details: details)
    }

    /// A connected short-lived client with a unique id; a broker that cannot be reached
    /// fails the component by name.
    static func connect(_ broker: BrokerSettings, purpose: String, component: String) async throws -> MQTTClient {
        let client = try MQTTClient(options: try broker.options(clientID: "snapshot-\(purpose)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"))
        client.start()
        do {
            try await client.waitUntilConnected(timeout: 5)
        } catch {
            client.stop()
            throw EngineError.componentFailed(component: component, detail: "cannot reach the broker \(broker.url): \(error)")
        }
        return client
    }

    /// Republishes the retained messages stored in a captured component's files, each
    /// acknowledged by the broker; a broker that stops acknowledging fails the component
    /// after `timeout` seconds (for all the messages together) instead of waiting forever.
    public static func republish(files: [[UInt8]], broker: BrokerSettings, component: String, timeout: Double = 30) async throws -> Int {
        var messages: [StoredMessage] = []
        for bytes in files {
            do {
                messages += try JSONDecoder().decode([StoredMessage].self, from: Data(bytes))
            } catch {
                throw EngineError.componentFailed(component: component, detail: "stored messages are not valid: \(error)")
            }
        }
        let client = try await connect(broker, purpose: "restore", component: component)
        defer { client.stop() }
        let deadline = Date().addingTimeInterval(timeout)
        for (i, m) in messages.enumerated() {
            do {
                try await client.publish(m.topic, m.bytes, qos: max(1, m.qos), retain: true, timeout: deadline.timeIntervalSinceNow)
            } catch MQTTError.timeout {
                throw EngineError.componentFailed(component: component, detail: "the broker \(broker.url) did not acknowledge message \(i + 1) of \(messages.count) (\(m.topic)) within \(Int(timeout)) s")
            }
        }
        return messages.count
    }
}

final class MessageCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var byTopic: [String: MQTTMessage] = [:]

    func add(_ m: MQTTMessage) { lock.withLock { byTopic[m.topic] = m } }
    var count: Int { lock.withLock { byTopic.count } }
    var all: [MQTTMessage] { lock.withLock { Array(byTopic.values) } }
}
