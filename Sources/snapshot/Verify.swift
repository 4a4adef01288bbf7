import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
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

        func validate() throws {
            guard (snapshot != nil) != all else { throw ValidationError("give either --snapshot REF or --all") }
        }

        func run() async throws {
            let context = try Context(global)
            let (repository, lock) = try context.open(.shared, purpose: "verify")
            defer { lock.release() }
            let catalog = SnapshotCatalog(repositoryPath: repository.path)
            var records: [SnapshotRecord]
            if let snapshot {
                records = [try context.resolve(snapshot, in: repository).0]
            } else {
                do { records = try catalog.all() } catch { throw Context.fail(error) }
            }
            let verifier = Verifier(repository: repository)
            let report = try context.withProgress(verifier.progress) {
                verifier.verify(records, component: component, readData: readData)
            }
            let now = Timestamp.now().iso8601
            for (record, result) in zip(records, report.snapshots) {
                var m = record.metadata
                m.verified = VerificationRecord(timestamp: now, ok: result.ok, readData: readData)
                try? catalog.rewriteMetadata(record, m)
            }
            if global.json {
                try context.printJSON(report)
            } else {
                for (record, result) in zip(records, report.snapshots) {
                    if result.ok {
                        context.say("\(record.type)/\(record.id): ok")
                    } else {
                        for e in result.errors { print("\(record.type)/\(record.id): \(e)") }
                    }
                }
                let bad = report.snapshots.filter { !$0.ok }.count
                context.say(bad == 0 ? "no errors in \(records.count) snapshot\(records.count == 1 ? "" : "s")" : "\(bad) of \(records.count) snapshots damaged")
            }
            if !report.ok {
                let bad = report.snapshots.filter { !$0.ok }.map { $0.snapshotID }
                FileHandle.standardError.write(Data("snapshot: verify found damage in \(bad.joined(separator: ", "))\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
