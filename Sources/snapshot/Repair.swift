import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Repair: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "repair",
            abstract: "Salvage a damaged snapshot into a new one; the original is left as it is.",
            discussion: """
                Reads and re-hashes everything the snapshot needs. Damaged content is healed where another copy of it \\
                exists: another pack in the store, the live file at the same path with the same size, or the same path \\
                in another snapshot; a healed blob heals every snapshot that shares it. If files remain lost, a new \\
                snapshot of the same type and time (<id>-2) holds every intact file of the original, and its \\
                metadata.json names the original (repaired_from) and every lost file (lost). If everything was healed, \\
                the original restores whole again and no new snapshot is made. Exit 0 when a repair was made or none \\
                was needed, 1 when nothing could be salvaged.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The snapshot to salvage: an id, latest, TYPE/latest, TYPE/ID or a unique name (also one whose metadata.json is damaged).", valueName: "ref"))
        var snapshot: String

        func run() async throws {
            let context = try Context(global, command: "repair")
            var options = RepairOptions()
            options.snapshot = snapshot
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) {
                try await Blocking.run { [service = context.service, options] in try service.repair(options, progress: progress) }
            }
            if global.json {
                let data = try JSONSerialization.data(withJSONObject: try report.jsonObject(), options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                FileHandle.standardOutput.write(data + Data([0x0a]))
                return
            }
            for (path, from) in report.healed { context.say("healed \(path) from \(from)") }
            for (path, reason) in report.lost { context.say("lost \(path): \(reason)") }
            if let made = report.snapshot {
                let m = made.metadata
                context.say("snapshot \(made.type)/\(made.id) holds what could be salvaged of \(report.repairedFrom): \(m.components.values.reduce(0) { $0 + $1.files }) files, \(report.lost.count) lost")
            } else if report.healed.isEmpty {
                context.say("snapshot \(report.repairedFrom) has no damage: nothing to repair")
            } else {
                context.say("snapshot \(report.repairedFrom) restores whole again: all \(report.healed.count) damaged entries healed (\(report.healedBlobs) blobs written anew)")
            }
        }
    }
}
