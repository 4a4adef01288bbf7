#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT

/// What a subcommand needs from the global options: the loaded config and repository path,
/// output helpers and the one place where errors become exit codes.
struct Context {
    let options: GlobalOptions
    let config: SnapshotConfig
    let repositoryPath: String
    /// The repository password, read once (`--password-file`, SNAPSHOT_PASSWORD_FILE,
    /// SNAPSHOT_PASSWORD); nil when none is given.
    let password: [UInt8]?
    /// One per process, so that the password is turned into keys (scrypt) once.
    let keyring: Keyring
    /// `--lock-wait`, in seconds.
    let lockWait: Double

    /// - Parameter remote: the command works on an object store (`s3://`); other commands
    ///   given one exit 64 saying so.
    /// - Parameter keyCache: keys `key unlock` left in the kernel keyring open the
    ///   repository (the `key` commands say false: they prove the password).
    init(_ options: GlobalOptions, command: String = "this command", remote: Bool = false, keyCache: Bool = true) throws {
        self.options = options
        let env = ProcessInfo.processInfo.environment
        let cwd = POSIX.currentDirectory()
        do {
            if let explicit = options.config ?? env["SNAPSHOT_CONFIG"] {
                config = try SnapshotConfig.load(path: explicit, required: true, workingDirectory: cwd)
            } else {
                config = try SnapshotConfig.load(path: "configs/snapshots.yaml", required: false, workingDirectory: cwd)
            }
        } catch {
            throw Context.fail(error)
        }
        if let repo = options.repo ?? env["SNAPSHOT_REPO"] {
            if let problem = SnapshotConfig.repositoryURLProblem(repo) {
                throw Context.fail(EngineError.usage("--repo \(problem)"))
            }
            repositoryPath = S3Location(repo)?.description ?? POSIX.absolute(repo, relativeTo: cwd)
        } else {
            repositoryPath = config.repository
        }
        if repositoryPath.hasPrefix("s3://") && !remote {
            throw Context.fail(EngineError.usage("\(command) does not work on an s3:// repository yet (\(repositoryPath)); `snapshot copy --to DIR` makes a local copy to run it on"))
        }
        do {
            password = try Keyring.readPassword(file: options.passwordFile.map { POSIX.absolute($0, relativeTo: cwd) }, environment: env)
            keyring = Keyring(storage: try config.storage(for: repositoryPath, environment: env), password: password, usesKeyCache: keyCache)
        } catch {
            throw Context.fail(error)
        }
        if let text = options.lockWait {
            guard let seconds = AlertThresholds.parseDuration(text) ?? Double(text), seconds >= 0, seconds <= 86400 * 7 else {
                throw Context.fail(EngineError.usage("--lock-wait \(text): expected a duration such as 30s, 5m or 1h"))
            }
            lockWait = seconds
        } else {
            lockWait = 0
        }
        debug("config \(config.file.map { POSIX.absolute($0, relativeTo: cwd) } ?? "(none found: built-in defaults)"), root \(config.root), repository \(repositoryPath)")
    }

    /// When the process started, for `--debug` timings.
    static let started = Date()

    /// With `--debug`, one line on stderr: `debug: +1.234 s what`.
    func debug(_ line: @autoclosure () -> String) {
        guard options.debug else { return }
        Context.debugLine(line())
    }

    static func debugLine(_ line: String) {
        let text = String(format: "debug: +%.3f s ", Date().timeIntervalSince(started)) + line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// The progress of one operation; with `--debug` its phases and notes go to stderr.
    func makeProgress() -> WorkProgress {
        guard options.debug else { return WorkProgress() }
        return WorkProgress(trace: { line in Context.debugLine(line) })
    }

    /// The operations, on this repository and config.
    var service: SnapshotService {
        var s = SnapshotService(config: config, repositoryPath: repositoryPath, keyring: keyring)
        s.lockWait = lockWait
        s.notice = { line in FileHandle.standardError.write(Data("snapshot: \(line)\n".utf8)) }
        if options.debug { s.trace = makeProgress() }
        return s
    }

    /// Opens the repository with a lock.
    func open(_ mode: RepositoryLock.Mode, purpose: String) throws -> (Repository, RepositoryLock) {
        do {
            return try service.open(mode, purpose: purpose)
        } catch {
            throw Context.fail(error)
        }
    }

    /// Runs an operation, turning its errors into the CLI's one-line message and exit code.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Context.fail(error)
        }
    }

    func resolve(_ reference: String, in repository: Repository) throws -> (SnapshotRecord, SnapshotManifest) {
        do {
            let catalog = SnapshotCatalog(repository: repository)
            let record = try catalog.resolve(reference)
            let manifest = try catalog.readManifest(record)
            debug("\(reference) is \(record.type)/\(record.id): components \(manifest.components.keys.sorted().joined(separator: ", "))")
            return (record, manifest)
        } catch {
            throw Context.fail(error)
        }
    }

    /// Prints to stdout unless quiet.
    func say(_ text: String) {
        if !options.quiet { print(text) }
    }

    /// Writes a JSON document to stdout.
    func printJSON<T: Encodable>(_ value: T) throws {
        let data = try JSONEncoder.snapshot.encode(value)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data([0x0a]))
    }

    /// Runs `body` with a progress display appropriate to the options.
    func withProgress<T>(_ progress: WorkProgress, _ body: () async throws -> T) async throws -> T {
        let printer = ProgressPrinter(progress: progress, json: options.json, enabled: !options.quiet)
        printer.start()
        defer { printer.stop() }
        do {
            return try await body()
        } catch {
            printer.stop()
            throw Context.fail(error)
        }
    }

    /// Waits up to 5 s for a started client's connection (`fleet`, `dashboard`); exit 74
    /// naming the broker when none comes.
    func waitForBroker(_ client: MQTTClient, _ settings: BrokerSettings) async throws {
        try await run {
            do {
                try await client.waitUntilConnected(timeout: 5)
            } catch {
                throw EngineError.brokerUnreachable(url: settings.url, detail: "\(error)")
            }
        }
    }

    /// Calls `handler` on SIGINT or SIGTERM instead of dying (`watch`, `fleet --watch`), until
    /// the returned sources are cancelled.
    static func onTerminationSignals(_ handler: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        return [SIGINT, SIGTERM].map { sig in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler(handler: handler)
            s.resume()
            return s
        }
    }

    /// Prints the one-line error and turns it into the exit code of README.md ("Exit codes").
    static func fail(_ error: any Error) -> any Error {
        if error is ExitCode || error is CleanExit { return error }
        let code: Int32
        switch error {
        case let e as RepositoryError:
            switch e {
            case .notFound, .io: code = 74
            case .corrupt, .unsupportedVersion, .missingBlob: code = 65
            case .locked: code = 75
            case .permission, .key: code = 77
            case .snapshotNotFound: code = 64
            case .remote(_, _, let status, _): code = status == 403 ? 77 : 74
            }
        case let e as EngineError:
            switch e {
            case .sourceMissing, .config, .unsafePath: code = 65
            case .watch, .brokerUnreachable: code = 74
            case .unknownComponent, .unknownType, .usage: code = 64
            case .cancelled, .pathNotInSnapshot, .componentFailed, .hookFailed: code = 1
            }
        default:
            code = 1
        }
        FileHandle.standardError.write(Data("snapshot: error: \("\(error)".escapingControlCharacters)\n".utf8))
        return ExitCode(code)
    }
}

/// Human-readable byte counts (MiB etc., 1024-based like restic).
func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    return u == 0 ? "\(n) B" : String(format: "%.1f ", v) + units[u]
}
