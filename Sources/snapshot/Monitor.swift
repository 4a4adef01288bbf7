import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Monitor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "monitor",
            abstract: "Check snapshots against configs/snapshot_alerts.yaml (Nagios plugin convention).",
            discussion: "Prints one status line per check and exits 0 (ok), 1 (warning) or 2 (critical), the worst check's level. Without a check named: age, size and integrity.")

        @OptionGroup var global: GlobalOptions

        @Flag(help: "Verify the repository every check_interval; critical after failure_threshold failures in a row.")
        var checkIntegrity = false

        @Flag(help: "Age of the newest snapshot of each type against the warning/critical durations.")
        var checkAge = false

        @Flag(help: "Repository and snapshot size against the thresholds.")
        var checkSize = false

        @Option(help: ArgumentHelp("Report creation-time, restoration-time or compression-ratio (repeatable).", valueName: "metric"))
        var metrics: [String] = []

        @Option(help: ArgumentHelp("Only snapshots of this type.", valueName: "type"))
        var type: SnapshotType?

        var options: MonitorOptions {
            var o = MonitorOptions()
            o.checkIntegrity = checkIntegrity
            o.checkAge = checkAge
            o.checkSize = checkSize
            o.metrics = metrics
            o.type = type
            return o
        }

        func validate() throws {
            do { try options.validate() } catch { throw ValidationError("--\(error)") }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let report = try await context.run { try context.service.monitor(options) }
            if global.json {
                try context.printJSON(report)
            } else {
                for c in report.checks {
                    print("\(c.check.uppercased()) \(c.level.rawValue.uppercased()) - \(c.message)\(c.threshold.isEmpty ? "" : " (\(c.threshold))") | value=\(c.value)")
                }
            }
            if report.level != .ok { throw ExitCode(report.level.exitCode) }
        }
    }
}
