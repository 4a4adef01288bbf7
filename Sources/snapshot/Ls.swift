import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Ls: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the files in a snapshot.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Argument(help: "Only entries under this path (<component>/…).")
        var path: String?

        func run() async throws {
            let context = try Context(global, remote: true)
            let (repository, lock) = try context.open(.shared, purpose: "ls")
            defer { lock.release() }
            let (_, manifest) = try context.resolve(snapshot, in: repository)
            let entries: [ListedEntry]
            do {
                entries = try Browser(repository: repository).list(manifest, prefix: path)
                context.debug("\(entries.count) entries\(path.map { " under \($0)" } ?? "")")
            } catch {
                throw Context.fail(error)
            }
            if global.json {
                try context.printJSON(entries)
                return
            }
            for e in entries {
                // One line per entry, whatever its name holds (a newline is written \n).
                print("\(e.mode) \(String(e.size).leftPadded(12)) \(e.mtime) \(e.path.escapingControlCharacters)")
            }
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
