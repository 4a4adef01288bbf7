import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct CheckDependencies: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-dependencies",
            abstract: "Check that what snapshots and restores need is there; one line per check.",
            discussion: "The broker (when a component captures MQTT), every files component's path, every command component's tool, the repository (writable, lockable), free space for another snapshot as large as the last one; with --snapshot, every blob it needs and its restore targets' directories. Exit 1 when any check fails, naming it.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Also check what restoring this snapshot needs.", valueName: "ref"))
        var snapshot: String?

        func run() async throws {
            let context = try Context(global, command: "check-dependencies")
            var options = DependencyCheckOptions()
            options.snapshot = snapshot
            let report = await context.service.checkDependencies(options)
            if global.json {
                try context.printJSON(report)
            } else {
                for c in report.checks { print("\(c.ok ? "ok  " : "FAIL") \(c.check): \(c.detail.escapingControlCharacters)") }
            }
            if !report.ok {
                let failed = report.checks.filter { !$0.ok }.map(\.check)
                FileHandle.standardError.write(Data("snapshot: check-dependencies failed: \(failed.joined(separator: ", "))\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
