import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a snapshot's metadata.json.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        func run() async throws {
            let context = try Context(global, remote: true)
            var options = ShowOptions()
            options.snapshot = snapshot
            let record = try await context.run { try context.service.show(options) }
            try context.printJSON(record.metadata)
        }
    }
}
