import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restore a snapshot.",
            discussion: "With --target DIR, component C is written to DIR/C/. Every chunk is checked against its hash before it is written.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Option(help: ArgumentHelp("Only this component (repeatable).", valueName: "name"))
        var component: [String] = []

        @Option(help: ArgumentHelp("Write into this directory instead of in place.", valueName: "dir"))
        var target: String?

        @Flag(help: "Re-read what was written and compare it with the snapshot.")
        var verify = false

        @Flag(help: "Do not take a pre-restore snapshot first (in-place restores).")
        var noBackup = false

        @Flag(help: "Show what would be written; change nothing.")
        var dryRun = false

        var options: RestoreOptions {
            var o = RestoreOptions()
            o.snapshot = snapshot
            o.component = component
            o.target = target
            o.verify = verify
            o.noBackup = noBackup
            o.dryRun = dryRun
            return o
        }

        func run() async throws {
            let context = try Context(global)
            let progress = WorkProgress()
            let result = try await context.withProgress(progress) { try context.service.restore(options, progress: progress) }
            guard let summary = result.summary else {
                if global.json {
                    try context.printJSON(result.plannedEntries)
                } else {
                    let dir = POSIX.absolute(target ?? ".")
                    for e in result.plannedEntries { print("would restore \(dir)/\(e.path)") }
                }
                return
            }
            if global.json {
                try context.printJSON(summary)
            } else {
                context.say("restored \(summary.snapshotID) to \(summary.target): \(summary.files) files, \(formatBytes(summary.bytes)) in \(String(format: "%.2f", summary.seconds)) s")
            }
            if !summary.ok {
                for m in summary.mismatches {
                    FileHandle.standardError.write(Data("snapshot: restored file differs from the snapshot: \(m)\n".utf8))
                }
                throw ExitCode(1)
            }
        }
    }
}
