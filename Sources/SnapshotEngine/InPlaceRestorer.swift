#if canImport(Glibc)
import Glibc
#endif
import Foundation
import CSystemShims
import SnapshotCore

/// One component of an in-place restore.
public struct ComponentRestore: Codable, Sendable, Equatable {
    public var component: String
    public var kind: ComponentKind
    /// Where it went: a path for files components, the broker for mqtt ones.
    public var destination: String
    /// `swapped`, `republished` or `skipped`.
    public var action: String
    public var files: Int
    public var bytes: UInt64
    public var note: String?
}

/// What an in-place restore did (`restore --json` without `--target`, and the MQTT result).
public struct InPlaceRestoreSummary: Codable, Sendable, Equatable {
    public var ok: Bool
    public var snapshotID: String
    /// The `pre-restore` snapshot of what was there before, unless `--no-backup`.
    public var preRestore: String?
    public var components: [ComponentRestore]
    public var seconds: Double
    /// What the restore left as it was on purpose, and why (files this run uses).
    public var notes: [String] = []

    enum CodingKeys: String, CodingKey {
        case ok, components, seconds, notes
        case snapshotID = "snapshot_id"
        case preRestore = "pre_restore"
    }
}

/// One line of `restore --dry-run` in place.
public struct PlannedChange: Codable, Sendable, Equatable {
    public enum Change: String, Codable, Sendable { case added, replaced, deleted }
    public var component: String
    public var change: Change
    public var path: String
}

/// Restores components over their live locations (README.md, `restore` without
/// `--target`):
///
/// 1. `stop_services`; if it fails nothing is touched (and `start_services` still runs);
/// 2. a `pre-restore` snapshot named `pre-restore-<id>-<its own id>` of what is there now (unless
///    `noBackup`);
/// 3. every files component is restored into a staging directory beside its destination
///    and re-read against the snapshot;
/// 4. only when all are staged and verified, each is swapped in with one atomic
///    `renameat2(RENAME_EXCHANGE)`, so a crash leaves every component wholly old or wholly
///    new; if a swap fails, the ones already swapped are swapped back;
/// 5. the old copies are removed, mqtt components are republished (retained);
/// 6. `start_services`, also when anything failed.
public struct InPlaceRestorer: Sendable {
    let service: SnapshotService
    /// The broker settings, with the password file read once, before anything is restored:
    /// a restore may put an older password file in its place.
    let broker: Result<BrokerSettings, EngineErrorBox>
    /// The config file this run loaded, as it was then.
    let configAtStart: (path: String, bytes: [UInt8])?

    init(service: SnapshotService) {
        self.service = service
        do {
            broker = .success(try service.broker ?? service.config.mqtt.brokerSettings())
        } catch {
            broker = .failure(EngineErrorBox(error))
        }
        configAtStart = service.config.file.flatMap { file in
            let path = POSIX.absolute(file, relativeTo: service.workingDirectory)
            return (try? POSIX.readFile(path)).map { (path, $0) }
        }
    }

    func brokerSettings() throws -> BrokerSettings {
        switch broker {
        case .success(let settings): return settings
        case .failure(let box): throw box.error
        }
    }

    /// Secret files this run uses (the broker password, the command-signing key, the TLS
    /// key): a restore never puts a snapshot's copy over them.
    var filesInUse: [String] {
        let q = service.config.mqtt
        return [q.passwordFile, q.hmacKeyFile, q.tls.keyFile].filter { !$0.isEmpty }.map { POSIX.absolute($0, relativeTo: service.workingDirectory) }
    }

    /// Puts the live copy of every file in use that lies inside `destination` into the
    /// staged copy, in place of the snapshot's; returns a note per file kept.
    func keepFilesInUse(destination: String, staged: String) throws -> [String] {
        var notes: [String] = []
        // Compared where they lead: the destination may be a link's target, the file named
        // through the link.
        let target = POSIX.resolveExisting(destination)
        for file in filesInUse {
            let resolved = POSIX.resolveExisting(file)
            guard POSIX.isWithin(resolved, target) else { continue }
            var st = stat()
            guard lstat(resolved, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let inStaged = staged + resolved.dropFirst(target.count)
            try POSIX.makeDirectories(POSIX.parent(of: inStaged), mode: 0o700)
            try POSIX.writeFileAtomically(inStaged, try POSIX.readFile(file), mode: st.st_mode & 0o7777)
            notes.append("kept the live \(file): this run uses it (the snapshot's copy was not put over it)")
        }
        return notes
    }

    struct Target {
        var name: String
        var manifest: ManifestComponent
        var kind: ComponentKind
        var destination: String
        var excludes: [String]
    }

    /// A component's path that is a symlink (`/var/lib/app -> /mnt/ssd/app`) stands for its
    /// target, as `create` read it: the swap happens there, beside the data on its own disk,
    /// and the link stays as it was.
    static func followingLink(_ path: String) -> String {
        var st = stat()
        guard POSIX.lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return path }
        return POSIX.resolveExisting(POSIX.absolute(path))
    }

    /// Where each selected component goes back to: the configured path of the component of
    /// the same name, else (unless `configuredOnly`) the path it was captured from.
    func targets(_ manifest: SnapshotManifest, components: [String], configuredOnly: Bool) throws -> [Target] {
        let names = components.isEmpty ? manifest.components.keys.sorted() : components
        var out: [Target] = []
        for name in names {
            guard let c = manifest.components[name] else {
                throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
            }
            switch (c.kind, service.config.component(name)) {
            case (.files, .files(let path, let exclude)?):
                out.append(Target(name: name, manifest: c, kind: .files, destination: Self.followingLink(path), excludes: exclude))
            case (.files, _):
                guard !configuredOnly else {
                    throw EngineError.unsafePath("\(c.source) (component \(name) is not a configured files component)")
                }
                out.append(Target(name: name, manifest: c, kind: .files, destination: Self.followingLink(c.source), excludes: []))
            case (.qdrant, .qdrant(let url, _, _)?):
                out.append(Target(name: name, manifest: c, kind: .qdrant, destination: url, excludes: []))
            case (.qdrant, _):
                guard !configuredOnly else {
                    throw EngineError.unsafePath("\(c.source) (component \(name) is not a configured qdrant component)")
                }
                out.append(Target(name: name, manifest: c, kind: .qdrant, destination: c.source, excludes: []))
            default:
                out.append(Target(name: name, manifest: c, kind: c.kind, destination: c.kind == .mqtt ? "broker" : "", excludes: []))
            }
        }
        // Said before the hooks run and anything is staged, not when the swap fails.
        for t in out where t.kind == .files {
            if let why = Self.inPlaceObstacle(t.destination, repositoryPath: service.isLocal ? service.repositoryPath : nil) {
                throw EngineError.usage("component \(t.name): \(why)")
            }
        }
        return out
    }

    /// Why a files component's directory cannot be restored in place, or nil. Its swap
    /// would take a repository that it holds (or lies in) away with its old copy, and a
    /// mount point cannot be exchanged with a staged copy at all (EBUSY).
    static func inPlaceObstacle(_ destination: String, repositoryPath: String?) -> String? {
        if let repositoryPath {
            let repository = POSIX.resolveExisting(POSIX.absolute(repositoryPath))
            let resolved = POSIX.resolveExisting(POSIX.absolute(destination))
            if POSIX.isWithin(repository, resolved) || POSIX.isWithin(resolved, repository) {
                return "\(destination) \(POSIX.isWithin(repository, resolved) ? "holds" : "lies in") the repository \(repositoryPath), and an in-place restore swaps the whole directory; restore it with --target DIR, or keep the repository outside the components' directories"
            }
        }
        var here = stat(), above = stat()
        if POSIX.lstat(destination, &here) == 0, (here.st_mode & S_IFMT) == S_IFDIR,
            POSIX.lstat(POSIX.parent(of: destination), &above) == 0, here.st_dev != above.st_dev {
            return "\(destination) is a mount point, which an in-place restore cannot swap whole; restore it with --target DIR and copy back what you need"
        }
        return nil
    }

    /// What a restore would change, comparing the snapshot's entries with the live ones by
    /// kind, size and mtime (as `create` decides what changed).
    func plan(_ record: SnapshotRecord, manifest: SnapshotManifest, components: [String], repository: Repository) throws -> [PlannedChange] {
        let reader = BlobReader(repository: repository)
        var out: [PlannedChange] = []
        for t in try targets(manifest, components: components, configuredOnly: false) where t.kind == .files {
            var wanted: [String: Node] = [:]
            try ComponentDigest.walk(t.manifest.treeID, prefix: "", loadTree: { id, p in try reader.readTree(id, path: p) }) { path, node in
                wanted[path] = node
            }
            var live: [String: Node] = [:]
            let root = t.manifest.rootIsFile == true ? POSIX.parent(of: t.destination) : t.destination
            if t.manifest.rootIsFile == true {
                var st = stat()
                if lstat(t.destination, &st) == 0, let n = FileStat.node(name: POSIX.lastComponent(t.destination), st) { live[n.name] = n }
            } else {
                Self.scan(root, "", into: &live)
            }
            for (path, n) in wanted.sorted(by: { $0.key < $1.key }) {
                if let l = live[path] {
                    let differs: Bool
                    switch n.kind {
                    case .file:
                        // Same size: compare content chunk by chunk, exactly.
                        differs = l.kind != .file || l.size != n.size
                            || (try? Self.contentIDs(root + "/" + path, name: n.name, repository: repository)) != n.content
                    case .symlink:
                        differs = l.kind != .symlink || FileStat.readLink(root + "/" + path) != n.linkTarget
                    default:
                        differs = l.kind != n.kind
                    }
                    if differs {
                        out.append(PlannedChange(component: t.name, change: .replaced, path: t.name + "/" + path))
                    }
                } else {
                    out.append(PlannedChange(component: t.name, change: .added, path: t.name + "/" + path))
                }
            }
            for path in live.keys.sorted() where wanted[path] == nil {
                out.append(PlannedChange(component: t.name, change: .deleted, path: t.name + "/" + path))
            }
        }
        return out
    }

    /// The chunk ids a file would get in a snapshot (the repository's chunking policy).
    static func contentIDs(_ path: String, name: String, repository: Repository) throws -> [BlobID] {
        let seed = repository.config.chunkerSeed
        let fd = POSIX.open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        let chunker = Chunker(scheme: repository.config.chunkingPolicy.scheme(forFileNamed: name), seed: seed)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * chunker.scheme.maxSize, alignment: 4096)
        defer { buffer.deallocate() }
        var ids: [BlobID] = []
        try chunker.chunkBatches(of: fd, path: path, buffer: buffer) { ids += repository.blobIDs(of: $0) }
        return ids
    }

    static func scan(_ dir: String, _ rel: String, into out: inout [String: Node]) {
        guard let names = try? POSIX.listDirectory(dir) else { return }
        for name in names {
            var st = stat()
            let path = dir + "/" + name
            guard POSIX.lstat(path, &st) == 0, let n = FileStat.node(name: name, st) else { continue }
            let r = rel.isEmpty ? name : rel + "/" + name
            out[r] = n
            if n.kind == .directory { scan(path, r, into: &out) }
        }
    }

    /// Runs the whole restore; see the type's documentation for the order.
    func restore(_ record: SnapshotRecord, manifest: SnapshotManifest, components: [String], noBackup: Bool, configuredOnly: Bool,
                 repository: Repository, progress: WorkProgress, cancellation: CancellationFlag) async throws -> InPlaceRestoreSummary {
        let started = Timestamp.now()
        let targets = try targets(manifest, components: components, configuredOnly: configuredOnly)
        let hooks = service.config.hooks
        do {
            try await Hooks.perform("stop_services", hooks["stop_services"] ?? "")
        } catch {
            // Whatever stop_services managed to stop comes back; nothing else was touched.
            try? await Hooks.perform("start_services", hooks["start_services"] ?? "")
            throw error
        }
        do {
            let summary = try await restoreStopped(record, manifest: manifest, targets: targets, noBackup: noBackup, repository: repository, progress: progress, cancellation: cancellation, started: started)
            try await Hooks.perform("start_services", hooks["start_services"] ?? "")
            return summary
        } catch {
            // Services come back whatever happened; the restore's own error is what counts.
            try? await Hooks.perform("start_services", hooks["start_services"] ?? "")
            throw error
        }
    }

    private func restoreStopped(_ record: SnapshotRecord, manifest: SnapshotManifest, targets: [Target], noBackup: Bool, repository: Repository,
                                progress: WorkProgress, cancellation: CancellationFlag, started: Timestamp) async throws -> InPlaceRestoreSummary {
        // Refuse a damaged snapshot before anything changes: trees, blob presence and
        // checksums now; every data blob is hash-checked while staging, before any swap.
        progress.phase = "checking snapshot"
        let check = try await Blocking.run { try Verifier(repository: repository).verifyOrFail([record], readData: false) }
        guard check.ok else {
            throw RepositoryError.corrupt(file: record.directory, detail: "snapshot \(record.id) is damaged, nothing restored: \(check.snapshots.flatMap(\.errors).prefix(3).joined(separator: "; "))")
        }
        let preRestore = noBackup ? nil : try await preRestoreSnapshot(record, targets: targets, repository: repository, cancellation: cancellation)
        // Stage and verify every files component.
        progress.phase = "staging"
        var staged: [(target: Target, stagingParent: String, stagedPath: String)] = []
        defer {
            for s in staged { try? POSIX.removeTree(s.stagingParent) }
        }
        var results: [ComponentRestore] = []
        var notes: [String] = []
        let restorer = Restorer(repository: repository, progress: progress, cancellation: cancellation)
        for t in targets where t.kind == .files {
            let parent = POSIX.parent(of: t.destination)
            try POSIX.makeDirectories(parent)
            let stagingParent = parent + "/.snapshot-restore-\(record.id)-\(getpid())-\(t.name)"
            try POSIX.removeTree(stagingParent)
            try POSIX.makeDirectories(stagingParent)
            // Whose it is: the next writing command removes it if this process is killed.
            try POSIX.writeFileAtomically(stagingParent + "/" + Leftovers.ownerFile, Array(Leftovers.owner.utf8))
            let stagedPath: String
            if t.manifest.rootIsFile == true {
                stagedPath = stagingParent + "/" + t.name + "/" + POSIX.lastComponent(t.destination)
            } else {
                stagedPath = stagingParent + "/" + t.name
            }
            staged.append((t, stagingParent, stagedPath))
            let result = try await Blocking.run { try restorer.restore(record, manifest: manifest, components: [t.name], target: stagingParent, verify: true) }
            guard result.mismatches.isEmpty else {
                throw EngineError.componentFailed(component: t.name, detail: "staged copy differs from the snapshot: \(result.mismatches.prefix(3).joined(separator: ", ")); nothing swapped")
            }
            guard POSIX.exists(stagedPath) else {
                throw EngineError.componentFailed(component: t.name, detail: "the snapshot has no \(POSIX.lastComponent(t.destination)); nothing swapped")
            }
            let kept = try keepFilesInUse(destination: t.destination, staged: stagedPath)
            notes += kept
            results.append(ComponentRestore(component: t.name, kind: .files, destination: t.destination, action: "swapped", files: result.files, bytes: result.bytes, note: kept.isEmpty ? nil : kept.joined(separator: "; ")))
        }
        if cancellation.isCancelled { throw EngineError.cancelled }
        // Swap them all in; undo on the first failure.
        progress.phase = "swapping"
        var swapped: [(String, String, Bool)] = []
        do {
            for s in staged {
                let exchanged = try Self.swap(s.stagedPath, s.target.destination)
                swapped.append((s.stagedPath, s.target.destination, exchanged))
            }
        } catch {
            for (stagedPath, destination, exchanged) in swapped.reversed() {
                if exchanged { _ = try? Self.swap(stagedPath, destination) } else { rename(destination, stagedPath) }
            }
            throw error
        }
        // The staging directories now hold the old copies; the deferred cleanup removes them.
        if let (path, bytes) = configAtStart, staged.contains(where: { path.hasPrefix($0.target.destination + "/") || path == $0.target.destination }),
            (try? POSIX.readFile(path)) != bytes
        {
            notes.append("\(path) now holds the snapshot's version, which differs from the config this run started with; the run went on with the config it started with (hooks, components, broker)")
        }
        for t in targets where t.kind != .files {
            if t.kind == .mqtt {
                progress.phase = "republishing \(t.name)"
                let reader = BlobReader(repository: repository)
                var files: [[UInt8]] = []
                for node in try reader.readTree(t.manifest.treeID, path: t.name).nodes where node.kind == .file {
                    var bytes: [UInt8] = []
                    for id in node.content { bytes += try reader.read(id) }
                    files.append(bytes)
                }
                let n = try await MQTTCapture.republish(files: files, broker: try brokerSettings(), component: t.name)
                results.append(ComponentRestore(component: t.name, kind: .mqtt, destination: (try? brokerSettings().url) ?? "broker", action: "republished", files: files.count, bytes: 0, note: "\(n) retained messages"))
            } else if t.kind == .qdrant {
                progress.phase = "uploading \(t.name) to Qdrant"
                let dir = repository.path + "/.store/tmp/qdrant-restore-\(getpid())-\(t.name)"
                try POSIX.removeTree(dir)
                defer { try? POSIX.removeTree(dir) }
                let restored = try await Blocking.run {
                    try Restorer(repository: repository, progress: progress, cancellation: cancellation)
                        .restore(record, manifest: manifest, components: [t.name], target: dir, verify: false)
                }
                let client = Self.qdrantClient(t, config: service.config)
                let files = try POSIX.listDirectory(dir + "/" + t.name).filter { $0.hasSuffix(".snapshot") }.sorted()
                for file in files {
                    do {
                        try await client.upload(String(file.dropLast(".snapshot".count)), file: dir + "/" + t.name + "/" + file)
                    } catch {
                        throw EngineError.componentFailed(component: t.name, detail: "upload of \(file) to Qdrant at \(t.destination): \(error)")
                    }
                }
                results.append(ComponentRestore(component: t.name, kind: .qdrant, destination: t.destination, action: "uploaded", files: files.count, bytes: restored.bytes, note: "priority=snapshot"))
            } else {
                results.append(ComponentRestore(component: t.name, kind: t.kind, destination: "", action: "skipped", files: 0, bytes: 0, note: "captured \(t.kind) output; nothing to put back in place"))
            }
        }
        progress.phase = "done"
        return InPlaceRestoreSummary(ok: true, snapshotID: record.id, preRestore: preRestore, components: results,
                                     seconds: ((Timestamp.now().timeInterval - started.timeInterval) * 1000).rounded() / 1000, notes: notes)
    }

    /// Takes the `pre-restore-<id>` snapshot of what is at the targets now (files that exist,
    /// and the current retained messages of mqtt components); nil when there is nothing.
    func preRestoreSnapshot(_ record: SnapshotRecord, targets: [Target], repository: Repository, cancellation: CancellationFlag) async throws -> String? {
        var sources: [FileSource] = []
        var generated: [GeneratedSource] = []
        var scratch: [String] = []
        defer { for d in scratch { try? POSIX.removeTree(d) } }
        for t in targets {
            if t.kind == .files, POSIX.exists(t.destination) {
                sources.append(FileSource(name: t.name, path: t.destination, excludes: t.excludes))
            } else if t.kind == .mqtt, case .mqtt(let filters)? = service.config.component(t.name) {
                generated.append(try await MQTTCapture.capture(name: t.name, filters: filters, broker: try brokerSettings()))
            } else if t.kind == .qdrant {
                let dir = repository.path + "/.store/tmp/qdrant-pre-restore-\(getpid())-\(t.name)"
                scratch.append(dir)
                _ = try await Self.qdrantClient(t, config: service.config).capture(component: t.name, collections: [], into: dir)
                sources.append(FileSource(name: t.name, path: dir, kind: .qdrant, label: t.destination))
            }
        }
        guard !sources.isEmpty || !generated.isEmpty else { return nil }
        var request = CreateRequest(type: .preRestore, name: "pre-restore-\(record.id)", sources: sources, generated: generated, compressionLevel: service.config.compressionLevel)
        request.appendIDToName = true  // pre-restore-<restored id>-<its own id>: one name, one snapshot
        return try await Blocking.run { [request] in try Archiver(repository: repository, cancellation: cancellation).create(request).id }
    }

    static func qdrantClient(_ t: Target, config: SnapshotConfig) -> QdrantClient {
        var keyEnv = "QDRANT_API_KEY"
        if case .qdrant(_, _, let env)? = config.component(t.name) { keyEnv = env }
        let key = ProcessInfo.processInfo.environment[keyEnv].flatMap { $0.isEmpty ? nil : $0 }
        return QdrantClient(baseURL: t.destination, apiKey: key)
    }

    /// Puts `staged` at `destination` atomically: exchanges the two when the destination
    /// exists (returns true), renames otherwise.
    static func swap(_ staged: String, _ destination: String) throws -> Bool {
        if POSIX.exists(destination) {
            if snapshot_renameat2(AT_FDCWD, staged, AT_FDCWD, destination, snapshot_rename_exchange()) == 0 {
                try POSIX.syncDirectory(POSIX.parent(of: destination))
                return true
            }
            throw RepositoryError.fromErrno(path: destination, operation: "swap in the restored copy of")
        }
        guard rename(staged, destination) == 0 else { throw RepositoryError.fromErrno(path: destination, operation: "move the restored copy to") }
        try POSIX.syncDirectory(POSIX.parent(of: destination))
        return false
    }
}


/// The config's `hooks`: shell commands around in-place restores.
public enum Hooks {
    /// Runs a hook (nothing when empty); a non-zero exit is an error carrying its output.
    public static func run(_ name: String, _ command: String, timeout: Double = 300, directory: String? = nil, environment: [String: String] = [:]) throws {
        guard !command.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        let out = try CommandCapture.run(command, timeout: timeout, directory: directory, environment: environment)
        guard out.status == 0 && !out.timedOut else {
            let text = String(decoding: out.stdout + out.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw EngineError.hookFailed(name: name, detail: out.timedOut ? "timed out after \(Int(timeout)) s" : "exited \(out.status)\(text.isEmpty ? "" : ": " + text.prefix(500))")
        }
    }

    /// `run` on a thread of its own, for async callers: a hook may take minutes.
    public static func perform(_ name: String, _ command: String, timeout: Double = 300, directory: String? = nil, environment: [String: String] = [:]) async throws {
        try await Blocking.run { try run(name, command, timeout: timeout, directory: directory, environment: environment) }
    }
}

/// An error kept for later (the broker settings a restore read before it began).
struct EngineErrorBox: Error, CustomStringConvertible {
    let error: any Error
    init(_ error: any Error) { self.error = error }
    var description: String { "\(error)" }
}
