import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct TestRecovery: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "test-recovery",
            abstract: "Restore into a scratch directory, verify every file against the snapshot, report MB/s.",
            discussion: "Live data is never touched and no hook runs; the scratch copy is deleted afterwards. With --environment NAME the copy goes to the config's environments: NAME root instead, stays there, and the environment's health_check runs on it. Exit 1 when anything does not match or the health check fails.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Flag(help: "Restore into a scratch directory (always the case; accepted for the seed's scripts).")
        var isolated = false

        @Flag(help: "Also time each phase.")
        var benchmark = false

        @Option(help: ArgumentHelp("Restore into this environment from the config's environments: and run its health check.", valueName: "name"))
        var environment: String?

        func run() async throws {
            let context = try Context(global, remote: true)
            var options = TestRecoveryOptions()
            options.snapshot = snapshot
            options.benchmark = benchmark
            options.environment = environment
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) { try context.service.testRecovery(options, progress: progress) }
            if global.json {
                try context.printJSON(report)
            } else {
                context.say("\(report.ok ? "ok" : "FAILED"): snapshot \(report.snapshotID) restored and verified, \(report.files) files, \(formatBytes(report.bytes)) in \(String(format: "%.2f", report.seconds)) s (\(report.mbPerS) MB/s)")
                if let target = report.target {
                    context.say("  environment \(report.environment ?? ""): the copy stays in \(target); health check: \(report.health ?? "none configured")")
                }
                for (phase, seconds) in (report.phases ?? [:]).sorted(by: { $0.value > $1.value }) {
                    context.say("  \(phase): \(String(format: "%.3f", seconds)) s")
                }
                for e in report.errors { print("error: \(e)") }
            }
            if !report.ok {
                FileHandle.standardError.write(Data("snapshot: test-recovery of \(report.snapshotID) failed: \(report.errors.first ?? "")\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
