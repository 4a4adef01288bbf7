import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Sanitize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sanitize",
            abstract: "A copy of a snapshot with personal data and secrets removed or pseudonymised.",
            discussion: """
                Every text file of the snapshot (or of the chosen components) is searched for e-mail addresses, IPv4 and \\
                IPv6 addresses, phone numbers, bearer tokens, JWTs, AWS access key ids, the values of fields whose key \\
                names a secret (password, secret, token, api_key, …) in YAML, JSON, .env and INI, and the config's \\
                `sanitize:` patterns and keys. --remove-pii replaces each with [REDACTED:<rule>]; --anonymize with a \\
                pseudonym that is the same for the same value in every file (an HMAC under a repository secret). The copy \\
                is a snapshot of type `sanitized` (never `latest`) with `sanitized_from` and the counts per rule in its \\
                metadata; the original is untouched. Binary files and files over 64 MiB are copied as they are.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("An id, latest, TYPE/latest or a unique name.", valueName: "ref"))
        var snapshot: String

        @Flag(name: .customLong("remove-pii"), help: "Replace each value with [REDACTED:<rule>].")
        var removePII = false

        @Flag(help: "Replace each value with a stable pseudonym.")
        var anonymize = false

        @Option(help: ArgumentHelp("Only this component (repeatable).", valueName: "name"))
        var component: [String] = []

        func validate() throws {
            guard removePII != anonymize else { throw ValidationError("give either --remove-pii or --anonymize") }
        }

        func run() async throws {
            let context = try Context(global, command: "sanitize")
            var options = SanitizeOptions()
            options.snapshot = snapshot
            options.removePII = removePII
            options.anonymize = anonymize
            options.component = component
            let progress = context.makeProgress()
            let record = try await context.withProgress(progress) {
                try await Blocking.run { [service = context.service, options] in try service.sanitize(options, progress: progress) }
            }
            if global.json {
                try context.printJSON(record.metadata)
                return
            }
            print(record.id)
            let counts = (record.metadata.sanitized ?? [:]).sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }
            context.say("snapshot sanitized/\(record.id) from \(record.metadata.sanitizedFrom ?? ""): \(counts.isEmpty ? "nothing found" : counts.joined(separator: ", "))")
        }
    }
}
