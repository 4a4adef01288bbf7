#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch",
            abstract: "Take continuous snapshots in the foreground as files change (no broker needed).",
            discussion: """
                Watches the files components of the config's continuous: entries (or those named with --component) with \
                the kernel's change notifications. After an entry's debounce of quiet (at most its max_interval while \
                changes keep coming) it takes a snapshot of type continuous that reads only the changed paths. The first \
                snapshot, and one after a notification overflow, compare everything with the last one. Prints one line per \
                snapshot (with --json, its metadata.json object as one line). SIGINT or SIGTERM snapshots what is pending \
                and exits 0.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Watch this files component (repeatable; default: every one in continuous:).", valueName: "component"))
        var component: [String] = []

        func run() async throws {
            let context = try Context(global, command: "watch")
            let entries = try await context.run { try Self.entries(config: context.config, components: component) }
            let json = global.json, quiet = global.quiet, debug = global.debug
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let watch = try await context.run {
                try ContinuousWatch(service: context.service, entries: entries) { event in
                    switch event {
                    case .watching(let directories):
                        if !quiet && !json {
                            let timing = entries.map { "\($0.components.joined(separator: ", ")): debounce \(SnapshotConfig.seconds($0.debounce)), at least every \(SnapshotConfig.seconds($0.maxInterval))" }
                            Self.err("snapshot: watching \(directories) director\(directories == 1 ? "y" : "ies") (\(timing.joined(separator: "; "))); SIGINT stops")
                        }
                    case .snapshot(let record, let changed, let files, let bytes, let seconds, let rescan):
                        if json {
                            if let data = try? encoder.encode(record.metadata) {
                                FileHandle.standardOutput.write(data + Data([0x0a]))
                            }
                        } else if !quiet {
                            let what = rescan ? "compared everything" : "\(changed) changed path\(changed == 1 ? "" : "s")"
                            let line = "\(record.type)/\(record.id): \(what), read \(files) file\(files == 1 ? "" : "s") (\(formatBytes(UInt64(bytes)))) in \(String(format: "%.3f", seconds)) s\n"
                            FileHandle.standardOutput.write(Data(line.utf8))
                        }
                    case .taking:
                        break
                    case .unchanged(let changed):
                        if debug { Context.debugLine("\(changed) changed paths, nothing different from the last continuous snapshot: none taken") }
                    case .failed(let message, let retry):
                        Self.err("snapshot: warning: continuous snapshot failed: \(message)\(retry > 0 ? " (trying again in \(SnapshotConfig.seconds(retry)))" : "")")
                    case .status(let s):
                        if debug { Context.debugLine("continuous: \(s.pendingPaths) paths pending, lag \(s.lagSeconds) s, last \(s.lastID ?? "none")") }
                    }
                }
            }
            // SIGINT/SIGTERM end the watch (after a last snapshot of what is pending).
            let sources = Context.onTerminationSignals { watch.stop() }
            defer { for s in sources { s.cancel() } }
            try await context.run {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                    let thread = Thread {
                        do {
                            try watch.run()
                            c.resume()
                        } catch {
                            c.resume(throwing: error)
                        }
                    }
                    thread.name = "watch"
                    thread.start()
                }
            }
        }

        /// The config's entries, narrowed to `components` (a component no entry names is
        /// watched with debounce 1 s and max_interval 60 s).
        static func entries(config: SnapshotConfig, components: [String]) throws -> [ContinuousEntry] {
            guard !components.isEmpty else {
                guard !config.continuous.isEmpty else {
                    throw EngineError.usage("nothing to watch: \(config.file ?? "the config") has no continuous: entry; add one or name files components with --component")
                }
                return config.continuous
            }
            for c in components where config.component(c) == nil {
                throw EngineError.unknownComponent(c, known: config.components.map(\.name))
            }
            var out: [ContinuousEntry] = config.continuous.compactMap { e in
                var narrowed = e
                narrowed.components = e.components.filter(components.contains)
                return narrowed.components.isEmpty ? nil : narrowed
            }
            var rest: [String] = []
            for c in components where !rest.contains(c) && !out.contains(where: { $0.components.contains(c) }) { rest.append(c) }
            if !rest.isEmpty { out.append(ContinuousEntry(components: rest)) }
            return out
        }

        static func err(_ line: String) {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}
