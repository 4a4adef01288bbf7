import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Cat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cat", abstract: "Write one file of a snapshot to stdout.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Argument(help: "The file, as <component>/<path>.")
        var path: String

        func run() async throws {
            let context = try Context(global, remote: true)
            let (repository, lock) = try context.open(.shared, purpose: "cat")
            defer { lock.release() }
            let (_, manifest) = try context.resolve(snapshot, in: repository)
            do {
                var written = 0, chunks = 0
                try Browser(repository: repository).cat(manifest, path: path) { bytes in
                    try POSIX.writeAll(1, bytes, path: "stdout")
                    written += bytes.count
                    chunks += 1
                }
                context.debug("\(path): \(written) bytes from \(chunks) chunks, each checked against its hash")
            } catch {
                throw Context.fail(error)
            }
        }
    }
}
