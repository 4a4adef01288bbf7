import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check snapshots' integrity.",
            discussion: "Without --read-data: every tree is read and checked, every content blob must be in the index and its pack present, and every component checksum must match. With --read-data every content blob is also read, decompressed and re-hashed. Exit 1 names every damaged snapshot, component and file.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("The snapshot to check.", valueName: "ref"))
        var snapshot: String?

        @Flag(help: "Check every snapshot.")
        var all = false

        @Option(help: ArgumentHelp("Only this component.", valueName: "name"))
        var component: String?

        @Flag(help: "Also read and re-hash all data.")
        var readData = false

        var options: VerifyOptions {
            var o = VerifyOptions()
            o.snapshot = snapshot
            o.all = all
            o.component = component
            o.readData = readData
            return o
        }

        func validate() throws {
            guard (snapshot != nil) != all else { throw ValidationError("give either --snapshot REF or --all") }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) { try context.service.verify(options, progress: progress) }
            if global.json {
                try context.printJSON(report)
            } else {
                for result in report.snapshots {
                    if result.ok {
                        context.say("\(result.snapshotID): ok")
                    } else {
                        for e in result.errors { print("\(result.snapshotID): \(e)") }
                    }
                }
                for e in report.repositoryErrors { print("repository: \(e)") }
                for w in report.warnings { FileHandle.standardError.write(Data("snapshot: warning: \(w)\n".utf8)) }
                let n = report.snapshots.count
                let bad = report.snapshots.filter { !$0.ok }.count
                context.say(bad == 0 ? "no errors in \(n) snapshot\(n == 1 ? "" : "s")" : "\(bad) of \(n) snapshots damaged")
            }
            if !report.ok {
                let bad = report.snapshots.filter { !$0.ok }.map { $0.snapshotID }
                let what = bad.isEmpty ? "\(report.repositoryErrors.count) repository file\(report.repositoryErrors.count == 1 ? "" : "s"): \(report.repositoryErrors.first ?? "")" : bad.joined(separator: ", ")
                FileHandle.standardError.write(Data("snapshot: verify found damage in \(what)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
