#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SnapshotAgent
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT

extension Snapshot {
    struct DashboardCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dashboard",
            abstract: "A live web page of every agent on the broker: availability, state, job progress, last snapshots, alerts.",
            discussion: """
                Subscribes to <prefix>/status/+/{availability,state,progress,alerts/#} and serves one page at --listen \
                (everything from this binary; no CDN) that updates within a second through Server-Sent Events. Its \
                buttons publish create and verify commands when the config's mqtt.allow has them (signed with \
                mqtt.hmac_key_file when there is one). Runs until SIGINT/SIGTERM. Exit 74 when the broker cannot be \
                reached, 64 when the address cannot be listened on.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The broker, mqtt://HOST:PORT or mqtts://HOST:PORT (default: the config's mqtt.broker).", valueName: "url"))
        var broker: String?

        @Option(help: ArgumentHelp("Where to serve the page: HOST:PORT (default 127.0.0.1:8080).", valueName: "addr"))
        var listen: String = "127.0.0.1:8080"

        func run() async throws {
            let context = try Context(global, remote: true)
            guard let address = ListenAddress(listen) else {
                throw Context.fail(EngineError.usage("--listen \(listen): expected HOST:PORT (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)"))
            }
            let config = context.config
            let settings = try await context.run { try config.mqtt.brokerSettings(overrideURL: broker) }
            var key: [UInt8]?
            if !config.mqtt.hmacKeyFile.isEmpty {
                key = try await context.run { try POSIX.readSecret(config.mqtt.hmacKeyFile, what: "mqtt.hmac_key_file") }
            }
            let clientID = "snapshot-dashboard-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let client = try await context.run { try MQTTClient(options: try settings.options(clientID: clientID)) }
            let dashboard = Dashboard(
                prefix: config.mqtt.prefix, broker: settings.url, allow: config.mqtt.allow, types: config.creatableTypes.map(\.name).sorted(), hmacKey: key,
                publish: { topic, payload in (try? client.enqueue(topic, payload, qos: 1)) != nil })
            for f in dashboard.filters { client.subscribe(f, qos: 1) }
            client.start()
            defer { client.stop() }
            try await context.waitForBroker(client, settings)
            let server = try await context.run { try HTTPServer(address: address) { dashboard.handle($0) } }
            server.start()
            defer { server.stop() }
            FileHandle.standardError.write(Data("snapshot: dashboard of \(settings.url) at http://\(address)/\n".utf8))
            let reader = Task {
                for await m in client.messages { dashboard.apply(m) }
            }
            defer { reader.cancel() }
            let stop = AsyncStream.makeStream(of: Void.self)
            let sources = Context.onTerminationSignals { stop.continuation.yield() }
            defer { for s in sources { s.cancel() } }
            for await _ in stop.stream { break }
        }
    }
}
