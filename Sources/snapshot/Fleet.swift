#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import Foundation
import SnapshotAgent
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

extension Snapshot {
    struct Fleet: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fleet",
            abstract: "Every agent on the broker, one line each: online, busy or idle, queue, last snapshot per type, worst alert.",
            discussion: """
                Reads the agents' retained status (<prefix>/status/+/availability, state, alerts/#) and prints what it \
                found (with --json, an array of agents). With --watch it keeps the table up to date until SIGINT. \
                Credentials and TLS come from the config's mqtt: section. Exit 74 when the broker cannot be reached.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The broker, mqtt://HOST:PORT or mqtts://HOST:PORT (default: the config's mqtt.broker).", valueName: "url"))
        var broker: String?

        @Flag(help: "Keep the table up to date (redrawn on every change and every 5 s) until SIGINT.")
        var watch = false

        func run() async throws {
            let context = try Context(global, remote: true)
            let settings = try await context.run { try context.config.mqtt.brokerSettings(overrideURL: broker) }
            let prefix = context.config.mqtt.prefix
            let clientID = "snapshot-fleet-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let client = try await context.run { try MQTTClient(options: try settings.options(clientID: clientID)) }
            let shared = FleetState(FleetView(prefix: prefix))
            for f in shared.view.withLock({ $0.filters }) { client.subscribe(f, qos: 1) }
            // Retained messages come at subscription, before anything published later on the
            // same connection: a marker of our own ends the first read (2 s at most, for a
            // broker whose ACL does not let us publish it).
            let marker = "\(prefix)/fleet/\(clientID)"
            client.subscribe(marker, qos: 1)
            client.start()
            defer { client.stop() }
            try await context.waitForBroker(client, settings)
            let changes = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            let reader = Task {
                for await m in client.messages {
                    if m.topic == marker {
                        shared.markerSeen.store(true, ordering: .sequentiallyConsistent)
                        changes.continuation.yield()
                        continue
                    }
                    if shared.view.withLock({ $0.apply(m) }) { changes.continuation.yield() }
                }
            }
            defer { reader.cancel() }
            try? await client.publish(marker, Array("end".utf8), qos: 1, timeout: 2)
            let deadline = Date().addingTimeInterval(2)
            while !shared.markerSeen.load(ordering: .sequentiallyConsistent) && Date() < deadline {
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let json = global.json
            let tty = isatty(STDOUT_FILENO) == 1
            @Sendable func show() {
                let v = shared.view.withLock { $0 }
                var out = ""
                if json {
                    let data = (try? JSONSerialization.data(withJSONObject: v.json(), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("[]".utf8)
                    out = String(decoding: data, as: UTF8.self) + "\n"
                } else {
                    if watch && tty { out += "\u{1B}[H\u{1B}[2J" }
                    out += v.agents.isEmpty ? "no agents under \(prefix)/status/ on \(settings.url)\n" : v.lines().joined(separator: "\n") + "\n"
                    if watch && !tty { out += "\n" }
                }
                FileHandle.standardOutput.write(Data(out.utf8))
            }
            show()
            guard watch else { return }
            let stop = AsyncStream.makeStream(of: Void.self)
            let sources = Context.onTerminationSignals { stop.continuation.yield() }
            defer { for s in sources { s.cancel() } }
            // Ages move on: a redraw every 5 s besides every change.
            let ticks = Task {
                while !Task.isCancelled {
                    try await Task.sleep(nanoseconds: 5_000_000_000)
                    changes.continuation.yield()
                }
            }
            let redraw = Task {
                for await _ in changes.stream {
                    if Task.isCancelled { break }
                    show()
                }
            }
            for await _ in stop.stream { break }
            ticks.cancel()
            redraw.cancel()
        }
    }
}

/// What the fleet's reader task and its printer share.
final class FleetState: Sendable {
    let view: Mutex<FleetView>
    let markerSeen = Atomic<Bool>(false)
    init(_ view: FleetView) { self.view = Mutex(view) }
}
