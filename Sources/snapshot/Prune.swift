import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "prune",
            abstract: "Apply configs/retention.yaml: delete the snapshots that fall out and reclaim their space.",
            discussion: "Per type, the newest snapshot of each UTC day / ISO week / month / year bucket is kept while the rule has counts, and the oldest while a rule still has counts left (restic >= 0.16 forget). The newest snapshot of a type is always kept, pre-restore snapshots for 7 days. --dry-run shows every snapshot with the rules that keep it, or remove.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Only snapshots of this type.", valueName: "type"))
        var type: SnapshotType?

        @Flag(help: "Show what would be kept and removed; change nothing.")
        var dryRun = false

        var options: PruneOptions {
            var o = PruneOptions()
            o.type = type
            o.dryRun = dryRun
            return o
        }

        func validate() throws {
            do { try options.validate() } catch { throw ValidationError("--\(error)") }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) { try context.service.prune(options, progress: progress) }
            if global.json {
                try context.printJSON(report)
                return
            }
            var rows = [["SNAPSHOT", "TYPE", "DECISION"]]
            for k in report.keep { rows.append([k.snapshotID, k.type.name, "keep: " + k.reasons.joined(separator: ", ")]) }
            for r in report.remove { rows.append([r.snapshotID, r.type.name, "remove"]) }
            if !global.quiet { printTable(rows) }
            for w in report.warnings { FileHandle.standardError.write(Data("snapshot: warning: \(w)\n".utf8)) }
            let verb = dryRun ? "would remove" : "removed"
            context.say("\(verb) \(report.remove.count) of \(report.keep.count + report.remove.count) snapshots; \(dryRun ? "would reclaim" : "reclaimed") \(formatBytes(report.reclaimedBytes)) (\(report.packsDeleted) packs deleted, \(report.packsRepacked) repacked)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Remove one snapshot (its data is reclaimed by the next prune).")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        func run() async throws {
            let context = try Context(global, remote: true)
            var options = DeleteOptions()
            options.snapshot = snapshot
            let deleted = try await context.run { try context.service.delete(options) }
            if global.json {
                try context.printJSON(deleted)
            } else {
                context.say("deleted \(deleted.type)/\(deleted.snapshotID)\(deleted.damaged == nil ? "" : " (damaged)")")
            }
        }
    }
}
