import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "diff", abstract: "Show added, removed and modified paths between two snapshots.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The older snapshot.")
        var ref1: String

        @Argument(help: "The newer snapshot.")
        var ref2: String

        func run() async throws {
            let context = try Context(global, remote: true)
            let (repository, lock) = try context.open(.shared, purpose: "diff")
            defer { lock.release() }
            let (_, a) = try context.resolve(ref1, in: repository)
            let (_, b) = try context.resolve(ref2, in: repository)
            let changes: [DiffEntry]
            do {
                changes = try Browser(repository: repository).diff(a, b)
                context.debug("compared \(a.snapshotID) with \(b.snapshotID): subtrees with equal ids skipped unread; \(changes.count) changes")
            } catch {
                throw Context.fail(error)
            }
            if global.json {
                try context.printJSON(["added": changes.filter { $0.change == .added }, "removed": changes.filter { $0.change == .removed }, "modified": changes.filter { $0.change == .modified }])
                return
            }
            for c in changes {
                let mark = c.change == .added ? "+" : c.change == .removed ? "-" : "M"
                print("\(mark)  \(c.path.escapingControlCharacters)  \(formatBytes(c.size))")
            }
            let counts = [DiffEntry.Change.added, .removed, .modified].map { ch in changes.filter { $0.change == ch }.count }
            context.say("\(counts[0]) added, \(counts[1]) removed, \(counts[2]) modified")
        }
    }
}
