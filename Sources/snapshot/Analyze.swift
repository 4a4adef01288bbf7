import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Analyze: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "analyze",
            abstract: "Where a snapshot's bytes are: per component, the largest files, the largest growth.",
            discussion: "Per component: files, logical bytes, bytes its distinct chunks take in the store, bytes shared with the parent snapshot, compression ratio. Then the 20 largest files and the 20 files that grew most since the parent (new files count from 0).")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        func run() async throws {
            let context = try Context(global, remote: true)
            var options = AnalyzeOptions()
            options.snapshot = snapshot
            let report = try await context.run { try context.service.analyze(options) }
            if global.json {
                try context.printJSON(report)
                return
            }
            context.say("snapshot \(report.type)/\(report.snapshotID)\(report.parent.map { ", parent \($0)" } ?? ", no parent")")
            var rows = [["COMPONENT", "KIND", "FILES", "SIZE", "STORED", "SHARED WITH PARENT", "RATIO"]]
            for c in report.components {
                rows.append([c.name, c.kind.rawValue, "\(c.files)", formatBytes(c.logicalBytes), formatBytes(c.storedBytes), formatBytes(c.sharedWithParentBytes), String(format: "%.3f", c.compressionRatio)])
            }
            printTable(rows)
            context.say("\nlargest files:")
            for f in report.largestFiles { context.say("  \(formatBytes(f.size).padding(toLength: 11, withPad: " ", startingAt: 0)) \(f.path)") }
            if report.parent != nil {
                context.say("\nlargest growth since the parent:")
                for f in report.largestGrowth { context.say("  +\(formatBytes(UInt64(f.growth ?? 0)).padding(toLength: 10, withPad: " ", startingAt: 0)) \(f.path) (\(formatBytes(f.parentSize ?? 0)) → \(formatBytes(f.size)))") }
            }
        }
    }
}
