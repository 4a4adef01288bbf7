import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export",
            abstract: "Write one snapshot as a portable archive (.tar.zst, .tar.gz or .tar), optionally age-encrypted.",
            discussion: """
                The archive holds the directory snapshot/: every component's files, metadata.json and SHA256SUMS \\
                (check it with `sha256sum -c`). Any tar opens it. With --recipient (an age X25519 public key age1…, or a \\
                file of them; repeatable) it is encrypted in the age format: `age -d -i KEYFILE FILE > archive.tar.zst`. \\
                The format follows the name (a trailing .age is allowed with recipients).
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Option(help: ArgumentHelp("The archive to write: NAME.tar.zst, NAME.tar.gz or NAME.tar (then .age with recipients).", valueName: "file"))
        var output: String

        @Option(help: ArgumentHelp("An age recipient (age1…) or a file of them; repeatable.", valueName: "key"))
        var recipient: [String] = []

        func run() async throws {
            let context = try Context(global, remote: true)
            var options = ExportOptions()
            options.snapshot = snapshot
            options.output = output
            options.recipient = recipient
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) {
                try await Blocking.run { [service = context.service, options] in try service.export(options, progress: progress) }
            }
            if global.json {
                try context.printJSON(report)
                return
            }
            context.say("exported \(report.snapshotID) to \(report.output): \(report.files) files, \(formatBytes(report.bytes)) in \(formatBytes(report.archiveBytes))\(report.encrypted ? ", age-encrypted" : "")")
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Add a snapshot from an archive made by export (.tar.zst, .tar.gz or .tar).",
            discussion: "Every file is checked against the archive's SHA256SUMS, and nothing unlisted may be there, before anything is committed. The snapshot keeps its type, time, name (when still free) and tags, plus a tag imported_from. Prints its id (with --json: its metadata.json object). Decrypt an age-encrypted archive first with `age -d`.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The archive.")
        var file: String

        func run() async throws {
            let context = try Context(global, command: "import")
            let progress = context.makeProgress()
            let record = try await context.withProgress(progress) {
                try await Blocking.run { [service = context.service, file] in try service.importArchive(file, progress: progress) }
            }
            if global.json {
                try context.printJSON(record.metadata)
                return
            }
            print(record.id)
            context.say("imported \(record.type)/\(record.id) from \(file): \(record.metadata.components.values.reduce(0) { $0 + $1.files }) files, \(formatBytes(record.metadata.sizeBytes))")
        }
    }
}
