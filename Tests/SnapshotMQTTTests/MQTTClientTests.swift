import Foundation
import SnapshotMQTT
import Testing
import TestSupport

/// Collects messages from a client's stream in the background.
final class Inbox: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [MQTTMessage] = []
    private var task: Task<Void, Never>?

    init(_ client: MQTTClient) {
        task = Task {
            for await m in client.messages {
                self.lock.withLock { self.received.append(m) }
            }
        }
    }

    var messages: [MQTTMessage] {
        lock.withLock { received }
    }

    /// Waits until `predicate` holds for the messages so far.
    func wait(timeout: Double = 10, _ predicate: ([MQTTMessage]) -> Bool) async -> [MQTTMessage] {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            let m = messages
            if predicate(m) { return m }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return messages
    }

    deinit { task?.cancel() }
}

@Suite(.serialized) struct MQTTClientTests {
    func client(_ broker: TestBroker, _ id: String, version: MQTTProtocolVersion = .v5, will: MQTTWill? = nil) throws -> MQTTClient {
        try MQTTClient(options: MQTTOptions(port: broker.port, clientID: id, protocolVersion: version, will: will, reconnectDelay: (0.05, 0.5)))
    }

    @Test func publishSubscribeWithV5PropertiesAndRetainedMessages() async throws {
        let broker = try TestBroker()
        let a = try client(broker, "a")
        let b = try client(broker, "b", version: .v311)
        a.start()
        b.start()
        defer { a.stop(); b.stop() }
        try await a.waitUntilConnected()
        try await b.waitUntilConnected()
        try await b.publish("workers/alpha/status", Array("{\"status\":\"idle\"}".utf8), qos: 1, retain: true)
        let inbox = Inbox(a)
        a.subscribe("workers/+/status")
        a.subscribe("req/#")
        var got = await inbox.wait { $0.contains { $0.topic == "workers/alpha/status" } }
        #expect(got.first { $0.topic == "workers/alpha/status" }?.retain == true)
        try await a.publish("req/x", Array("hi".utf8), qos: 1, responseTopic: "reply/me", correlationData: [1, 2, 3], userProperties: [MQTTUserProperty(name: "k", value: "v")])
        got = await inbox.wait { $0.contains { $0.topic == "req/x" } }
        let req = try #require(got.first { $0.topic == "req/x" })
        #expect(req.payloadString == "hi" && req.qos == 1 && !req.retain)
        #expect(req.responseTopic == "reply/me")
        #expect(req.correlationData == [1, 2, 3])
        #expect(req.userProperties == [MQTTUserProperty(name: "k", value: "v")])
    }

    @Test func reconnectsResubscribesAndDeliversQueuedPublishesAfterABrokerRestart() async throws {
        let broker = try TestBroker()
        let sub = try client(broker, "sub")
        let pub = try client(broker, "pub")
        sub.start()
        pub.start()
        defer { sub.stop(); pub.stop() }
        try await sub.waitUntilConnected()
        try await pub.waitUntilConnected()
        let inbox = Inbox(sub)
        sub.subscribe("t/#")
        try await Task.sleep(nanoseconds: 200_000_000)
        broker.stop()
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(!pub.isConnected)
        // Published while the broker is down: queued, sent after the reconnect, acknowledged.
        // Retained, so that it reaches the subscriber whichever of the two reconnects first.
        let sent = Task { try await pub.publish("t/after", Array("queued".utf8), qos: 1, retain: true) }
        try broker.start()
        try await sent.value
        let got = await inbox.wait { $0.contains { $0.topic == "t/after" } }
        #expect(got.contains { $0.topic == "t/after" && $0.payloadString == "queued" }, "resubscribed and delivered")
    }

    @Test func aRefusedOrUnreachableBrokerFailsTheWaitNotTheProcess() async throws {
        let c = try MQTTClient(options: MQTTOptions(port: 1, clientID: "nobody-home", reconnectDelay: (0.05, 0.2)))
        c.start()
        defer { c.stop() }
        await #expect(throws: MQTTError.self) { try await c.waitUntilConnected(timeout: 2) }
        #expect(MQTTOptions.parseBroker("mqtt://127.0.0.1:1883")! == ("127.0.0.1", 1883, false))
        #expect(MQTTOptions.parseBroker("mqtts://broker.local")! == ("broker.local", 8883, true))
        #expect(MQTTOptions.parseBroker("mqtt://[::1]:1884")! == ("::1", 1884, false))
        #expect(MQTTOptions.parseBroker("http://x") == nil)
        #expect(MQTTOptions.parseBroker("mqtt://x:99999") == nil)
    }
}

@Suite(.serialized) struct MQTTClientCertificateTests {
    @Test func aBrokerThatRequiresClientCertificatesAcceptsOursAndRefusesNone() async throws {
        let certs = TemporaryDirectory("snapshot-clientcert")
        let script = """
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=snapshot-test-ca &&
            printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext &&
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 &&
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext &&
            openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=snapshot-agent &&
            openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2
            """
        #expect(try CLI.runTool("/bin/sh", ["-c", script], in: certs.path) == 0)
        let broker = try TestBroker(listenerOptions: [
            "cafile \(certs.sub("ca.crt"))", "certfile \(certs.sub("server.crt"))", "keyfile \(certs.sub("server.key"))",
            "require_certificate true",
        ])
        let withCert = try MQTTClient(options: MQTTOptions(
            port: broker.port, clientID: "with-cert",
            tls: MQTTTLS(caFile: certs.sub("ca.crt"), certFile: certs.sub("client.crt"), keyFile: certs.sub("client.key")), reconnectDelay: (0.05, 0.3)))
        withCert.start()
        defer { withCert.stop() }
        try await withCert.waitUntilConnected(timeout: 10)
        let inbox = Inbox(withCert)
        withCert.subscribe("t/#")
        try await Task.sleep(nanoseconds: 100_000_000)
        try await withCert.publish("t/x", Array("over tls".utf8), qos: 1)
        #expect(await inbox.wait { $0.contains { $0.payloadString == "over tls" } }.isEmpty == false)
        let without = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: "no-cert", tls: MQTTTLS(caFile: certs.sub("ca.crt")), reconnectDelay: (0.05, 0.3)))
        without.start()
        defer { without.stop() }
        await #expect(throws: MQTTError.self) { try await without.waitUntilConnected(timeout: 2) }
    }
}
