import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "key",
            abstract: "Manage the passwords of an encrypted repository.",
            discussion: "Several passwords may open one repository: each has a key file in .store/keys sealing the same master key. No data is re-encrypted. `key unlock` keeps the master key in the kernel keyring of this login for a while, so that commands need neither the password nor its slow key derivation; `key forget` ends that.",
            subcommands: [List.self, Add.self, Remove.self, Passwd.self, Unlock.self, Forget.self])

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
            let context = try Context(global, remote: true, keyCache: false)
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
            static let configuration = CommandConfiguration(commandName: "list", abstract: "The key files and which one the password opened.")
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
            static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a password that opens the repository too.")
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
            static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a key (not the one the password opened).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The key's id (see `snapshot key list`).")
            var id: String

            func run() async throws {
                let (context, _) = try await Key.withKeyring(global, exclusive: true) { ($0, try $1.remove(id: id)) }
                context.say("removed key \(id)")
            }
        }

        struct Unlock: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "unlock",
                abstract: "Keep the repository unlocked in this login's kernel keyring for a while.",
                discussion: "The password is checked (and its key derived) once; until the time is up, `snapshot key forget`, or the key file is removed or replaced, commands on this repository from this login session need no password and derive no key. The master key is kept in the kernel (keyrings(7)): readable only by processes of this session's keyring, never written to disk.")
            @OptionGroup var global: GlobalOptions
            @Option(name: .customLong("for"), help: ArgumentHelp("How long: 90s, 15m (the default), 8h, up to 7d.", valueName: "duration"))
            var duration: String?

            struct Report: Encodable {
                let repository: String
                let key: String
                let expires: String
            }

            func run() async throws {
                var seconds = KeyCache.defaultDuration
                if let text = duration {
                    guard let value = AlertThresholds.parseDuration(text) ?? Double(text), value >= 1, value <= KeyCache.longest else {
                        throw Context.fail(EngineError.usage("--for \(text): expected a duration from 1s to 7d, such as 15m or 8h"))
                    }
                    seconds = value.rounded()
                }
                let (context, id) = try await Key.withKeyring(global, exclusive: false) { ($0, try $1.unlockForSession(seconds: seconds)) }
                let expires = Timestamp(seconds: Timestamp.now().seconds + Int64(seconds)).iso8601
                if global.json {
                    try context.printJSON(Report(repository: context.repositoryPath, key: id, expires: expires))
                    return
                }
                context.say("unlocked \(context.repositoryPath) until \(expires) (key \(id), in the kernel keyring of this session); `snapshot key forget` locks it again")
            }
        }

        struct Forget: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "forget", abstract: "Drop what `key unlock` kept: the repository needs its password again.")
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let context = try Context(global, remote: true, keyCache: false)
                let count = try await context.run { try context.keyring.forgetSession() }
                context.say(count == 0 ? "nothing was unlocked for \(context.repositoryPath)" : "forgot the unlocked key of \(context.repositoryPath)")
            }
        }

        struct Passwd: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change the password: the key it opened is replaced by one for the new password.")
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
