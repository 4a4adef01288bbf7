#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotMQTT
import Testing
import TestSupport

/// Every wait on the broker ends: acknowledgements are matched to the message that was
/// sent, and a wait stops on its timeout, on cancellation and on `stop()`.
@Suite(.serialized) struct AcknowledgementTests {
    /// Each wait here ends within a second alone; the bound only tells "ended" from "hung",
    /// with room for a cooperative pool that other suites running in parallel keep busy.
    static let bound: Double = 20

    func client(_ port: Int, _ id: String) throws -> MQTTClient {
        try MQTTClient(options: MQTTOptions(port: port, clientID: id, reconnectDelay: (0.05, 0.5)))
    }

    /// Waits (bounded) until every message sent has been acknowledged.
    func drained(_ c: MQTTClient, timeout: Double = 60) async -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while c.pendingAcknowledgements > 0 && Date() < end { try? await Task.sleep(nanoseconds: 20_000_000) }
        return c.pendingAcknowledgements == 0
    }

    @Test func acknowledgementsOfUnawaitedMessagesAreForgottenAlsoAfterTheIdsWrap() async throws {
        let broker = try TestBroker()
        let c = try client(broker.port, "wrap")
        c.start()
        defer { c.stop() }
        try await c.waitUntilConnected()
        // More messages than there are message ids: every id is used at least once.
        for i in 0..<66_000 { try c.enqueue("load/\(i % 7)", [UInt8(i & 0xff)], qos: 1) }
        #expect(await drained(c), "acknowledged messages left \(c.pendingAcknowledgements) ids behind")
        // With the broker gone, no acknowledgement can come: a publish must not return as
        // if one had (an id remembered from an earlier message would make it).
        broker.stop()
        let start = Date()
        await #expect(throws: MQTTError.self) {
            try await c.publish("after/wrap", [1], qos: 1, timeout: 0.5)
        }
        #expect(Date().timeIntervalSince(start) >= 0.45)
        #expect(Date().timeIntervalSince(start) < Self.bound)
    }

    @Test func aWaitForAnAcknowledgementEndsOnTimeoutOnCancellationAndOnStop() async throws {
        let broker = try TestBroker()
        let c = try client(broker.port, "waits")
        c.start()
        try await c.waitUntilConnected()
        try await c.publish("t/ok", [1], qos: 1, timeout: 5)
        broker.stop()

        var start = Date()
        do {
            try await c.publish("t/timeout", [2], qos: 1, timeout: 0.3)
            Issue.record("a publish to a stopped broker returned")
        } catch let e as MQTTError {
            #expect("\(e)".contains("t/timeout"))
        }
        #expect(Date().timeIntervalSince(start) < Self.bound)

        let cancelled = Task { try await c.publish("t/cancel", [3], qos: 1) }
        try await Task.sleep(nanoseconds: 100_000_000)
        start = Date()
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(Date().timeIntervalSince(start) < Self.bound)

        let stopped = Task { try await c.publish("t/stop", [4], qos: 1) }
        try await Task.sleep(nanoseconds: 100_000_000)
        start = Date()
        c.stop()
        await #expect(throws: MQTTError.self) { try await stopped.value }
        #expect(Date().timeIntervalSince(start) < Self.bound)
    }

    @Test func waitingForAConnectionCanBeCancelled() async throws {
        let silent = try StalledListener(.silent)
        let c = try client(silent.port, "never")
        c.start()
        defer { c.stop() }
        let wait = Task { try await c.waitUntilConnected(timeout: 60) }
        try await Task.sleep(nanoseconds: 200_000_000)
        let start = Date()
        wait.cancel()
        await #expect(throws: CancellationError.self) { try await wait.value }
        #expect(Date().timeIntervalSince(start) < Self.bound)
    }

    @Test func stopReturnsWhileTheNetworkThreadIsStuckInAConnect() async throws {
        let hanging = try StalledListener(.connectHangs)
        let c = try client(hanging.port, "stuck")
        c.start()
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(!c.isConnected)
        let start = Date()
        c.stop(timeout: 1)
        #expect(Date().timeIntervalSince(start) < Self.bound)
    }
}
