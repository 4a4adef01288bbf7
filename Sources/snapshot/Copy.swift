import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "copy",
            abstract: "Copy snapshots to another repository, sending only the data it lacks.",
            discussion: "The target is a directory or s3://BUCKET/PREFIX; one that does not exist is created like this repository (the same chunker seed, and for an encrypted one the same keys under the same password). Blobs are read back and checked before they are sent; a snapshot appears in the target only after all its data is there. Resumable: a second run copies only what the first did not finish, and sends nothing when everything is there.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The repository to copy to (a path or s3://BUCKET/PREFIX).", valueName: "repo"))
        var to: String

        @Option(help: ArgumentHelp("A snapshot to copy (repeatable; default: all).", valueName: "ref"))
        var snapshot: [String] = []

        @Option(help: ArgumentHelp("Only snapshots of this type.", valueName: "type"))
        var type: SnapshotType?

        func run() async throws {
            let context = try Context(global, remote: true)
            let env = ProcessInfo.processInfo.environment
            if let problem = SnapshotConfig.repositoryURLProblem(to) { throw Context.fail(EngineError.usage("--to \(problem)")) }
            let location = S3Location(to)?.description ?? POSIX.absolute(to)
            let target: any RepositoryStorage
            do {
                target = try context.config.storage(for: location, environment: env)
            } catch {
                throw Context.fail(error)
            }
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) {
                try await Blocking.run { try context.service.copy(to: target, snapshots: snapshot, type: type, progress: progress) }
            }
            if global.json {
                try context.printJSON(report)
                return
            }
            for name in report.copied { context.say("copied \(name)") }
            context.say("\(report.copied.count) copied, \(report.present.count) already in \(report.to); sent \(report.blobs) blobs, \(formatBytes(UInt64(report.bytes))) (\(formatBytes(UInt64(report.storedBytes))) stored) in \(String(format: "%.2f", report.seconds)) s")
        }
    }
}
