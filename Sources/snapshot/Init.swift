import ArgumentParser
import SnapshotCore

extension Snapshot {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an empty repository.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("aes-256-gcm or none.", valueName: "mode"))
        var encryption: String = "none"

        func validate() throws {
            guard ["none", "aes-256-gcm"].contains(encryption) else {
                throw ValidationError("--encryption must be aes-256-gcm or none, not \(encryption)")
            }
        }

        func run() async throws {
            let context = try Context(global)
            if encryption != "none" {
                throw Context.fail(RepositoryError.permission(path: context.repositoryPath, operation: "encryption aes-256-gcm is not available in this build; init"))
            }
            do {
                let repo = try Repository.initialize(at: context.repositoryPath)
                if global.json {
                    try context.printJSON(["repository": context.repositoryPath, "id": repo.config.id])
                } else {
                    context.say("created repository \(repo.config.id.prefix(8)) at \(context.repositoryPath)")
                }
            } catch {
                throw Context.fail(error)
            }
        }
    }
}
