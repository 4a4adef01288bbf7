import ArgumentParser
import Foundation
import SnapshotCore

extension Snapshot {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a snapshot's metadata.json.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        func run() async throws {
            let context = try Context(global)
            let (repository, lock) = try context.open(.shared, purpose: "show")
            defer { lock.release() }
            let (record, _) = try context.resolve(snapshot, in: repository)
            try context.printJSON(record.metadata)
        }
    }
}
