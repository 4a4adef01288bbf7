import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Restore a snapshot.",
            discussion: """
                With --target DIR, component C is written to DIR/C/. Without it, in place: stop_services runs, a pre-restore snapshot \
                of what is there now is taken (unless --no-backup), every component is staged beside its destination and verified, \
                then all are swapped in atomically, mqtt components are republished, and start_services runs (also after a failure). \
                --dry-run lists what would be added, replaced and deleted. Every chunk is checked against its hash before it is written.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Option(help: ArgumentHelp("Look the reference up among snapshots of this type only.", valueName: "type"))
        var type: SnapshotType?

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
            o.type = type
            o.snapshot = snapshot
            o.component = component
            o.target = target
            o.verify = verify
            o.noBackup = noBackup
            o.dryRun = dryRun
            return o
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let progress = context.makeProgress()
            if target == nil {
                guard !context.repositoryPath.hasPrefix("s3://") else {
                    throw Context.fail(EngineError.usage("restore in place does not work from an s3:// repository yet; give --target DIR"))
                }
                try await runInPlace(context, progress)
                return
            }
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

extension Snapshot.Restore {
    /// `restore` without `--target`: over the live component locations.
    func runInPlace(_ context: Context, _ progress: WorkProgress) async throws {
        let result = try await context.withProgress(progress) { try await context.service.restoreInPlace(options, progress: progress) }
        guard let summary = result.summary else {
            if global.json {
                try context.printJSON(result.planned)
            } else {
                for p in result.planned {
                    let mark = p.change == .added ? "+" : p.change == .deleted ? "-" : "M"
                    print("\(mark)  \(p.path)")
                }
                let counts = [PlannedChange.Change.added, .replaced, .deleted].map { c in result.planned.filter { $0.change == c }.count }
                context.say("would add \(counts[0]), replace \(counts[1]), delete \(counts[2]); nothing was changed")
            }
            return
        }
        if global.json {
            try context.printJSON(summary)
            return
        }
        for c in summary.components {
            let size = c.kind == .files ? " (\(c.files) files, \(formatBytes(c.bytes)))" : ""
            context.say("\(c.component): \(c.action)\(c.destination.isEmpty ? "" : " to \(c.destination)")\(size)\(c.note.map { " - \($0)" } ?? "")")
        }
        for n in summary.notes where !summary.components.contains(where: { $0.note?.contains(n) == true }) { context.say("note: \(n)") }
        context.say("restored \(summary.snapshotID) in place in \(String(format: "%.2f", summary.seconds)) s\(summary.preRestore.map { "; what was there before is snapshot \($0) (pre-restore)" } ?? "")")
    }
}
