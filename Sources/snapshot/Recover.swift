import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Recover: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "recover",
            abstract: "Disaster recovery: restore components in place in dependency order between the service hooks.",
            discussion: """
                full: every component (configs, storage, models, then the mesh's retained state) in one in-place restore. \\
                step-by-step: one component at a time, each between stop_services and start_services, with health_check after \\
                each; stops at the first failure and names it. minimal: configs and storage only. --validate runs health_check at the end.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("full, step-by-step or minimal.", valueName: "mode"))
        var mode: String

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Flag(name: .customLong("validate"), help: "Run the health_check hook at the end and report it.")
        var runHealthCheck = false

        var options: RecoverOptions {
            var o = RecoverOptions()
            o.mode = mode
            o.snapshot = snapshot
            o.runHealthCheck = runHealthCheck
            return o
        }

        func validate() throws {
            do { try options.validate() } catch { throw ValidationError("--\(error)") }
        }

        func run() async throws {
            let context = try Context(global, command: "recover")
            let progress = context.makeProgress()
            let report = try await context.withProgress(progress) { try await context.service.recover(options, progress: progress) }
            if global.json {
                try context.printJSON(report)
            } else {
                for s in report.steps {
                    context.say("\(s.ok ? "ok    " : "FAILED") \(s.component): \(s.action)\(s.health.map { ", health \($0)" } ?? "")\(s.error.map { ": \($0)" } ?? "")")
                }
                if let h = report.health { context.say("health_check: \(h)") }
                for n in report.notes { context.say("note: \(n)") }
                context.say("\(report.mode) recovery from \(report.snapshotID) \(report.ok ? "done" : "stopped") in \(String(format: "%.2f", report.seconds)) s\(report.preRestore.map { "; the state before is snapshot \($0) (pre-restore)" } ?? "")")
            }
            if !report.ok {
                let failed = report.steps.first { !$0.ok }
                FileHandle.standardError.write(Data("snapshot: recover stopped: \(failed.map { "component \($0.component): \($0.error ?? "")" } ?? "health_check: \(report.health ?? "")")\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
