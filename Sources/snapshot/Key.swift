import ArgumentParser
import Foundation
import SnapshotCore

extension Snapshot {
    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the passwords of an encrypted repository.",
            discussion: "Several passwords may open one repository: each has a key file in .store/keys sealing the same master key. No data is re-encrypted.",
            subcommands: [List.self, Add.self, Remove.self, Passwd.self])

        /// The new password: `--new-password-file`, or SNAPSHOT_NEW_PASSWORD.
        static func newPassword(_ file: String?) throws -> [UInt8] {
            let env = ProcessInfo.processInfo.environment
            if let file {
                let bytes = try POSIX.readSecret(file, what: "the new password file")
                guard !bytes.isEmpty else { throw ValidationError("the new password file \(file) is empty") }
                return bytes
            }
            if let text = env["SNAPSHOT_NEW_PASSWORD"], !text.isEmpty { return Array(text.utf8) }
            throw ValidationError("give the new password with --new-password-file FILE or SNAPSHOT_NEW_PASSWORD")
        }

        /// Opens the repository (its lock: exclusive to change keys) and runs `body` with its keyring.
        static func withKeyring<T>(_ global: GlobalOptions, exclusive: Bool, _ body: (Context, Keyring) throws -> T) async throws -> T {
            let context = try Context(global, remote: true)
            return try await context.run {
                let (repository, lock) = try context.service.open(exclusive ? .exclusive : .shared, purpose: "key")
                defer { lock.release() }
                guard repository.keys != nil else {
                    throw RepositoryError.key(path: context.repositoryPath, detail: "the repository is not encrypted: it has no keys")
                }
                return try body(context, context.keyring)
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "The key files and which one the password opened.")
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let (context, keys) = try await Key.withKeyring(global, exclusive: false) { ($0, try $1.list()) }
                if global.json {
                    try context.printJSON(keys)
                    return
                }
                for k in keys { print("\(k.current ? "*" : " ") \(k.id)  \(k.created)  \(k.hostname)") }
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a password that opens the repository too.")
            @OptionGroup var global: GlobalOptions
            @Option(help: ArgumentHelp("The new password, in a file only its owner can read (or SNAPSHOT_NEW_PASSWORD).", valueName: "file"))
            var newPasswordFile: String?

            func run() async throws {
                let password = try Key.newPassword(newPasswordFile)
                let (context, id) = try await Key.withKeyring(global, exclusive: true) { ($0, try $1.add(password: password)) }
                context.say("added key \(id)")
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a key (not the one the password opened).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The key's id (see `snapshot key list`).")
            var id: String

            func run() async throws {
                let (context, _) = try await Key.withKeyring(global, exclusive: true) { ($0, try $1.remove(id: id)) }
                context.say("removed key \(id)")
            }
        }

        struct Passwd: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Change the password: the key it opened is replaced by one for the new password.")
            @OptionGroup var global: GlobalOptions
            @Option(help: ArgumentHelp("The new password, in a file only its owner can read (or SNAPSHOT_NEW_PASSWORD).", valueName: "file"))
            var newPasswordFile: String?

            func run() async throws {
                let password = try Key.newPassword(newPasswordFile)
                let (context, id) = try await Key.withKeyring(global, exclusive: true) { ($0, try $1.changePassword(to: password)) }
                context.say("password changed: key \(id) replaces the old one")
            }
        }
    }
}
