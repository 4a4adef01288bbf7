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

        func run() async throws {
            let context = try Context(global)
            guard let target else {
                throw Context.fail(EngineError.usage("in-place restore is not available in this version yet; give --target DIR"))
            }
            let (repository, lock) = try context.open(.shared, purpose: "restore")
            defer { lock.release() }
            let (record, manifest) = try context.resolve(snapshot, in: repository)
            let dir = POSIX.absolute(target)
            if dryRun {
                let entries: [ListedEntry]
                do {
                    for name in component where manifest.components[name] == nil {
                        throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
                    }
                    entries = try Browser(repository: repository).list(manifest).filter { e in
                        component.isEmpty || component.contains { e.path == $0 || e.path.hasPrefix($0 + "/") }
                    }
                } catch {
                    throw Context.fail(error)
                }
                if global.json {
                    try context.printJSON(entries)
                } else {
                    for e in entries { print("would restore \(dir)/\(e.path)") }
                }
                return
            }
            let restorer = Restorer(repository: repository)
            let result = try context.withProgress(restorer.progress) {
                try restorer.restore(record, manifest: manifest, components: component, target: dir, verify: verify)
            }
            if global.json {
                try context.printJSON(RestoreSummary(ok: result.mismatches.isEmpty, snapshotID: record.id, target: dir, files: result.files, bytes: result.bytes, seconds: result.seconds, mismatches: result.mismatches))
            } else {
                context.say("restored \(record.type)/\(record.id) to \(dir): \(result.files) files, \(formatBytes(result.bytes)) in \(String(format: "%.2f", result.seconds)) s")
            }
            if !result.mismatches.isEmpty {
                for m in result.mismatches {
                    FileHandle.standardError.write(Data("snapshot: restored file differs from the snapshot: \(m)\n".utf8))
                }
                throw ExitCode(1)
            }
        }
    }
}

struct RestoreSummary: Encodable {
    var ok: Bool
    var snapshotID: String
    var target: String
    var files: Int
    var bytes: UInt64
    var seconds: Double
    var mismatches: [String]

    enum CodingKeys: String, CodingKey {
        case ok, target, files, bytes, seconds, mismatches
        case snapshotID = "snapshot_id"
    }
}
