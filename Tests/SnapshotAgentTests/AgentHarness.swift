#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotMQTT
import Testing
import TestSupport

/// A real broker, the real `snapshot agent` process on it, and an operator client that
/// records everything under `snapshots/status/#` and `reply/#`.
final class AgentHarness: @unchecked Sendable {
    let broker: TestBroker
    let dir = TemporaryDirectory("snapshot-agent")
    let id: String
    var agent: ChildProcess?
    let operatorClient: MQTTClient
    private let lock = NSLock()
    private var received: [MQTTMessage] = []
    private var reader: Task<Void, Never>?

    var data: String { dir.sub("data") }
    var repo: String { dir.sub("repo") }
    var config: String { dir.sub("snapshots.yaml") }
    var log: String { dir.sub("agent.log") }

    init(id: String = "test-agent", extraConfig: String = "", broker: TestBroker? = nil) async throws {
        self.broker = try broker ?? TestBroker()
        self.id = id
        Fixture.write(dir.sub("data/a.txt"), Array("hello\n".utf8))
        try """
            root: \(dir.path)
            repository: \(dir.path)/repo
            components:
              data: {path: data}
            types:
              data: [data]
              full: [data]
              nightly: [data]
            mqtt:
              broker: \(self.broker.url)
              groups: [backup-group]
            \(extraConfig)
            """.write(toFile: dir.sub("snapshots.yaml"), atomically: true, encoding: .utf8)
        operatorClient = try MQTTClient(options: MQTTOptions(port: self.broker.port, clientID: "operator-\(UInt32.random(in: 0...UInt32.max))", reconnectDelay: (0.05, 0.3)))
        operatorClient.subscribe("snapshots/status/#", qos: 1)
        operatorClient.subscribe("reply/#", qos: 1)
        let client = operatorClient
        reader = Task { [weak self] in
            for await m in client.messages {
                guard let self else { break }
                self.lock.withLock { self.received.append(m) }
            }
        }
        operatorClient.start()
        try await operatorClient.waitUntilConnected()
    }

    /// Starts the agent and waits for its retained `online`.
    func startAgent(environment: [String: String] = [:]) async throws {
        let before = messages(on: "snapshots/status/\(id)/availability").count
        agent = try ChildProcess(CLI.binary, ["--config", config, "agent", "--id", id],
                                 environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, logFile: log)
        let ok = await waitFor(timeout: 20) { _ in
            let a = self.messages(on: "snapshots/status/\(self.id)/availability")
            return a.count > before && a.last?.payloadString == "online"
        }
        #expect(ok, "agent did not come online: \(agentLog)")
    }

    var agentLog: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    var all: [MQTTMessage] { lock.withLock { received } }

    func messages(on topic: String) -> [MQTTMessage] { all.filter { $0.topic == topic } }

    /// Decoded JSON objects published on `topic`.
    func documents(on topic: String) -> [[String: Any]] {
        messages(on: topic).compactMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [String: Any] }
    }

    func responses(_ action: String) -> [[String: Any]] { documents(on: "snapshots/status/\(id)/response/\(action)") }

    func send(_ topic: String, _ payload: String, responseTopic: String? = nil, correlation: [UInt8]? = nil) async throws {
        try await operatorClient.publish(topic, Array(payload.utf8), qos: 1, responseTopic: responseTopic, correlationData: correlation)
    }

    @discardableResult
    func waitFor(timeout: Double = 20, _ predicate: @escaping ([MQTTMessage]) -> Bool) async -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if predicate(all) { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return predicate(all)
    }

    /// Waits for the final response (not accepted/running) to a request id.
    func final(_ action: String, requestID: String, timeout: Double = 30) async -> [String: Any]? {
        await waitFor(timeout: timeout) { _ in
            self.responses(action).contains { $0["request_id"] as? String == requestID && !["accepted", "running"].contains($0["status"] as? String ?? "") }
        }
        return responses(action).last { $0["request_id"] as? String == requestID && !["accepted", "running"].contains($0["status"] as? String ?? "") }
    }

    func stop() {
        agent?.stop(SIGTERM)
        operatorClient.stop()
        reader?.cancel()
    }
}
