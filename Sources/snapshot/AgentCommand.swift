import ArgumentParser
import Logging
import ServiceLifecycle
import SnapshotAgent
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct AgentCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent",
            abstract: "Run the MQTT worker: commands on <prefix>/cmd/#, status on <prefix>/status/<id>/ (see topics.md).",
            discussion: "Runs until SIGTERM or SIGINT, which cancel the running job cleanly, publish `offline` and disconnect.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The broker, mqtt://HOST:PORT or mqtts://HOST:PORT (default: the config's mqtt.broker).", valueName: "url"))
        var broker: String?

        @Option(help: ArgumentHelp("The agent id (default: mqtt.id, else the host name).", valueName: "id"))
        var id: String?

        @Option(help: ArgumentHelp("A group this agent answers to (repeatable).", valueName: "group"))
        var group: [String] = []

        func run() async throws {
            let context = try Context(global, command: "agent")
            let settings = try await context.run {
                try AgentSettings.from(config: context.config, repositoryPath: context.repositoryPath, broker: broker, id: id, groups: group)
            }
            LoggingSystem.bootstrap { label in
                var handler = OneLineLogHandler(wrapped: StreamLogHandler.standardError(label: label))
                handler.logLevel = global.debug ? .debug : (global.quiet ? .warning : .info)
                return handler
            }
            let logger = Logger(label: "snapshot.agent")
            let service = SnapshotService(config: context.config, repositoryPath: context.repositoryPath, broker: settings.broker, keyring: context.keyring)
            let agent = try await context.run { try Agent(settings: settings, service: service, logger: logger) }
            let serviceGroup = ServiceGroup(configuration: .init(
                services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await context.run { try await serviceGroup.run() }
        }
    }
}
