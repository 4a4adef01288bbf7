import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Take a snapshot.",
            discussion: "Prints the new snapshot's id (with --json, its metadata.json object). Unchanged files (same size, mtime, ctime and inode as in the parent snapshot) are not read again, except for --type full.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("system, config, data, models, full, incremental, differential, or a type from the config's types:.", valueName: "type"))
        var type: SnapshotType = .full

        @Option(help: "A name for the snapshot, usable as a reference when unique.")
        var name: String = ""

        @Flag(help: "Mark the snapshot as scheduled.")
        var auto = false

        @Option(help: ArgumentHelp("Capture only this path, as a component named after its last element (repeatable).", valueName: "path"))
        var path: [String] = []

        @Option(help: ArgumentHelp("Skip entries matching this glob (repeatable).", valueName: "glob"))
        var exclude: [String] = []

        @Option(help: ArgumentHelp("Back-date the snapshot (ISO 8601).", valueName: "iso8601"))
        var time: String?

        @Option(help: ArgumentHelp("A tag (repeatable).", valueName: "key=value"))
        var tag: [String] = []

        var options: CreateOptions {
            var o = CreateOptions()
            o.type = type
            o.name = name
            o.auto = auto
            o.path = path
            o.exclude = exclude
            o.time = time
            o.tag = tag
            return o
        }

        func validate() throws {
            do {
                try options.validate()
            } catch {
                throw ValidationError("--\(error)")
            }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let progress = context.makeProgress()
            let record = try await context.withProgress(progress) {
                try await context.service.create(options, progress: progress)
            }
            let m = record.metadata
            if global.json {
                try context.printJSON(m)
            } else if global.quiet {
                // Nothing: the exit status says it all.
            } else {
                print(record.id)
                FileHandle.standardError.write(Data(
                    "snapshot \(record.type)/\(record.id): \(m.components.values.reduce(0) { $0 + $1.files }) files, \(formatBytes(m.sizeBytes)), added \(formatBytes(m.storedBytes)) in \(String(format: "%.2f", m.durationS)) s\n".utf8))
            }
            // Unreadable entries are recorded in the snapshot; the run still counts as a warning.
            let skipped = m.components.sorted { $0.key < $1.key }.flatMap { c in c.value.skipped.map { "\(c.key)/\($0)" } }
            if !skipped.isEmpty {
                for entry in skipped {
                    FileHandle.standardError.write(Data("snapshot: warning: not captured: \(entry.escapingControlCharacters)\n".utf8))
                }
                FileHandle.standardError.write(Data("snapshot: warning: snapshot \(record.id) is missing \(skipped.count) unreadable entries\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
