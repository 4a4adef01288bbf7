import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct RebuildMetadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rebuild-metadata",
            abstract: "Rebuild the index from the packs, and snapshot metadata from the manifests.",
            discussion: """
                Packs describe themselves: every pack's trailer lists its blobs. This writes one new index from them \\
                (then removes the old index files), recreates every snapshot directory whose manifest.json is gone from \\
                the manifest blobs in the packs, writes every missing or unreadable metadata.json anew from its manifest \\
                (files, sizes and checksums recomputed; name, tags, timings and parent cannot be recovered and are left \\
                empty, with a "rebuilt" tag), and points every latest link at its newest snapshot. With --snapshot, only \\
                that snapshot's metadata.json. Run `snapshot verify --all --read-data` afterwards.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Only this snapshot's metadata.json (an id or TYPE/ID; also a damaged one).", valueName: "ref"))
        var snapshot: String?

        func run() async throws {
            let context = try Context(global, command: "rebuild-metadata")
            var options = RebuildOptions()
            options.snapshot = snapshot
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) {
                try await Blocking.run { [service = context.service, options] in try service.rebuildMetadata(options, progress: progress) }
            }
            if global.json {
                try context.printJSON(report)
                return
            }
            for c in report.config { context.say(c) }
            if snapshot == nil {
                context.say("index rebuilt from \(report.packs) pack\(report.packs == 1 ? "" : "s") (\(report.blobs) blobs), replacing \(report.replacedIndexFiles) index file\(report.replacedIndexFiles == 1 ? "" : "s")")
            }
            for s in report.recreated { context.say("recreated \(s) from its manifest blob") }
            for s in report.rebuilt { context.say("rebuilt \(s)") }
            for p in report.damagedPacks { FileHandle.standardError.write(Data("snapshot: warning: \(p); its blobs are not in the index\n".utf8)) }
            if !report.damagedPacks.isEmpty { throw ExitCode(1) }
        }
    }
}
