#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT

/// `check-dependencies --json`: `{"ok","checks":[{"check","ok","detail"}]}`.
public struct DependencyReport: Codable, Sendable, Equatable {
    public struct Check: Codable, Sendable, Equatable {
        public var check: String
        public var ok: Bool
        public var detail: String
    }

    public var ok: Bool
    public var checks: [Check]
}

extension SnapshotService {
    /// Whether what snapshots need is there: the broker (when a component captures MQTT),
    /// every files component's path (readable), every command component's tool (found; an
    /// optional one may be missing), the repository (writable and not locked), and free
    /// space for another snapshot the size of the last one. With `snapshot`: every blob that
    /// snapshot needs present, and the parent of every restore target writable.
    public func checkDependencies(_ options: DependencyCheckOptions) async -> DependencyReport {
        var checks: [DependencyReport.Check] = []
        func add(_ check: String, _ ok: Bool, _ detail: String) { checks.append(.init(check: check, ok: ok, detail: detail)) }

        if config.components.contains(where: { if case .mqtt = $0.source { return true } else { return false } }) {
            do {
                let broker = try self.broker ?? config.mqtt.brokerSettings()
                let client = try await MQTTCapture.connect(broker, purpose: "check", component: "broker")
                client.stop()
                add("broker \(broker.url)", true, "connected")
            } catch {
                add("broker", false, "\(error)")
            }
        }
        for (name, source) in config.components {
            switch source {
            case .files(let path, _):
                let readable = access(path, R_OK) == 0
                var detail = readable ? "\(path) readable" : "\(path): \(POSIX.errorText(errno))"
                // Backups work; an in-place restore would be refused: said here, ahead of need.
                if readable, let why = InPlaceRestorer.inPlaceObstacle(InPlaceRestorer.followingLink(path), repositoryPath: isLocal ? repositoryPath : nil) {
                    detail += "; no in-place restore: \(why)"
                }
                add("component \(name)", readable, detail)
            case .command(let command, _, _, let optional):
                let tool = String(command.split(separator: " ").first ?? "")
                let found = Self.findTool(tool)
                add("component \(name)", found != nil || optional, found.map { "\(tool) at \($0)" } ?? "\(tool) not found\(optional ? " (optional: recorded as missing)" : "")")
            default:
                break
            }
        }
        // The repository: there (or creatable), lockable, writable, room for another snapshot.
        if Repository.exists(at: repositoryPath) {
            do {
                let lock = try RepositoryLock(storePath: repositoryPath + "/.store", mode: .exclusive, purpose: "check-dependencies")
                lock.release()
                trace?.note("exclusive lock for check-dependencies taken and released")
                let probe = repositoryPath + "/.store/tmp/.check-\(getpid())"
                try POSIX.makeDirectories(repositoryPath + "/.store/tmp", mode: RepositoryModes.storeDirectory)
                try POSIX.writeFileAtomically(probe, [0])
                unlink(probe)
                add("repository \(repositoryPath)", true, "writable and lockable")
            } catch {
                add("repository \(repositoryPath)", false, "\(error)")
            }
        } else {
            let parent = POSIX.parent(of: repositoryPath)
            add("repository \(repositoryPath)", access(parent, W_OK) == 0, access(parent, W_OK) == 0 ? "not created yet; \(parent) is writable" : "not created yet and \(parent) is not writable")
        }
        var fs = statvfs()
        let last = (try? catalog.all())?.first { $0.type != .preRestore }
        if statvfs(Repository.exists(at: repositoryPath) ? repositoryPath : POSIX.parent(of: repositoryPath), &fs) == 0 {
            let free = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
            let need = last?.metadata.sizeBytes ?? 0
            add("free space", free >= need, "\(free) bytes free" + (last.map { ", the last snapshot (\($0.id)) holds \($0.metadata.sizeBytes) bytes" } ?? ""))
        }

        if let reference = options.snapshot {
            do {
                let (repository, lock) = try open(.shared, purpose: "check-dependencies")
                defer { lock.release() }
                let record = try catalog.resolve(reference)
                let report = try Verifier(repository: repository).verifyOrFail([record], readData: false)
                add("snapshot \(record.id) data", report.ok, report.ok ? "every blob it needs is present" : report.snapshots.flatMap(\.errors).prefix(3).joined(separator: "; "))
                for (name, c) in try catalog.readManifest(record).components.sorted(by: { $0.key < $1.key }) where c.kind == .files {
                    let destination: String
                    if case .files(let path, _)? = config.component(name) { destination = path } else { destination = c.source }
                    let parent = POSIX.parent(of: destination)
                    let writable = access(parent, W_OK) == 0
                    add("restore target \(name)", writable, writable ? "\(parent) writable" : "\(parent): \(POSIX.errorText(errno))")
                }
            } catch {
                add("snapshot \(reference)", false, "\(error)")
            }
        }
        return DependencyReport(ok: checks.allSatisfy(\.ok), checks: checks)
    }

    /// The executable `tool` resolves to on PATH (or itself, when it names a path).
    static func findTool(_ tool: String) -> String? {
        guard !tool.isEmpty else { return nil }
        if tool.contains("/") { return access(tool, X_OK) == 0 ? tool : nil }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = dir + "/" + tool
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
