import ArgumentParser
import SnapshotCore

extension Snapshot {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Create an empty repository.",
            discussion: """
                With --encryption aes-256-gcm (the default when a password is given), every blob, index file and \
                snapshot file is sealed with a random master key, itself sealed with a key derived from the password \
                by scrypt (.store/keys); metadata.json keeps in the clear only ids, times, sizes and types. The password \
                comes from --password-file, SNAPSHOT_PASSWORD_FILE or SNAPSHOT_PASSWORD. Losing every password loses \
                the repository: add a second one with `snapshot key add`.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("aes-256-gcm or none (default: aes-256-gcm when a password is given).", valueName: "mode"))
        var encryption: String?

        func validate() throws {
            if let encryption, !["none", "aes-256-gcm"].contains(encryption) {
                throw ValidationError("--encryption must be aes-256-gcm or none, not \(encryption)")
            }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let mode = encryption ?? (context.password == nil ? "none" : "aes-256-gcm")
            do {
                let storage = context.keyring.storage
                if let s3 = storage as? S3Storage { try s3.createBucketIfMissing() }
                let repo = try Repository.initialize(in: storage, encryption: mode, password: context.password)
                if global.json {
                    try context.printJSON(["repository": context.repositoryPath, "id": repo.config.id, "encryption": mode])
                } else {
                    context.say("created \(mode == "none" ? "" : "encrypted (\(mode)) ")repository \(repo.config.id.prefix(8)) at \(context.repositoryPath)")
                }
            } catch {
                throw Context.fail(error)
            }
        }
    }
}
