import Foundation
import SnapshotCore

/// The operations on one repository with one configuration: what each CLI subcommand and
/// each MQTT action calls, so that both take the same path. Each call takes the repository
/// lock it needs for its duration.
public struct SnapshotService: Sendable {
    public let config: SnapshotConfig
    public let repositoryPath: String
    public let workingDirectory: String
    /// Where `mqtt` components are captured from (nil: the config's broker).
    public let broker: BrokerSettings?
    /// With `--debug`: notes on the lock, the repository opened and what was found.
    public var trace: WorkProgress?
    /// `--lock-wait`: how long a command waits for a lock another command holds (0: fail
    /// at once with exit 75 naming the holder).
    public var lockWait: Double = 0
    /// Told about what the service did on its own (leftovers of killed runs removed).
    public var notice: (@Sendable (String) -> Void)?

    /// The repository's password (when it is encrypted), opened once per process.
    public let keyring: Keyring

    public init(config: SnapshotConfig, repositoryPath: String, workingDirectory: String = POSIX.currentDirectory(), broker: BrokerSettings? = nil, password: [UInt8]? = nil) {
        self.config = config
        self.repositoryPath = repositoryPath
        self.workingDirectory = workingDirectory
        self.broker = broker
        keyring = Keyring(repositoryPath: repositoryPath, password: password)
    }

    /// With a keyring of the caller's, shared by every service made from it.
    public init(config: SnapshotConfig, repositoryPath: String, workingDirectory: String = POSIX.currentDirectory(), broker: BrokerSettings? = nil, keyring: Keyring) {
        self.config = config
        self.repositoryPath = repositoryPath
        self.workingDirectory = workingDirectory
        self.broker = broker
        self.keyring = keyring
    }

    /// Opens the repository under a lock; `createIfMissing` initialises a missing one.
    public func open(_ mode: RepositoryLock.Mode, purpose: String, createIfMissing: Bool = false) throws -> (Repository, RepositoryLock) {
        let storage = self.storage
        if createIfMissing, !(try Repository.exists(in: storage)) {
            if let s3 = storage as? S3Storage { try s3.createBucketIfMissing() }
            // With a password given, the new repository is an encrypted one.
            try Repository.initialize(in: storage, encryption: keyring.password == nil ? "none" : "aes-256-gcm", password: keyring.password)
        }
        guard try Repository.exists(in: storage) else { throw RepositoryError.notFound(path: repositoryPath) }
        let started = Date()
        let lock = try RepositoryLock(storage: storage, mode: mode, purpose: purpose, wait: lockWait, adding: purpose == "create")
        let locked = Date()
        let repository = try Repository.open(storage: storage, keyring: keyring)
        if isLocal && (mode == .exclusive || purpose == "create") { removeLeftovers() }
        if let trace, trace.isTracing {
            let packs = Set(repository.index.allLocations().values.map(\.pack)).count
            trace.note(String(format: "%@ lock for %@ taken in %.3f s; index read in %.3f s: %d blobs in %d packs from %d index files", mode == .exclusive ? "exclusive" : "shared", purpose, locked.timeIntervalSince(started), Date().timeIntervalSince(locked), repository.index.count, packs, (try? repository.indexFileNames().count) ?? 0))
            if repository.keys != nil { trace.note("the master keys opened by \(keyring.openedBy)") }
            for problem in repository.damagedIndexFiles + repository.configProblems { trace.note("set aside: \(problem)") }
        }
        return (repository, lock)
    }

    public var catalog: SnapshotCatalog { SnapshotCatalog(storage: storage, keyring: keyring) }

    /// Where the repository is: the keyring's storage (an object store's client is made
    /// once, by whoever made the keyring), or the local directory.
    public var storage: any RepositoryStorage {
        keyring.repositoryPath == repositoryPath ? keyring.storage : LocalStorage(root: repositoryPath)
    }

    /// True for a repository in a local directory.
    public var isLocal: Bool { storage is LocalStorage }

    /// A usage error for a `--type` that neither the configuration nor the repository
    /// knows (a typo would otherwise list, prune or monitor nothing, silently).
    func checkKnown(_ type: SnapshotType?) throws {
        guard let type, !knownTypes.contains(type) else { return }
        throw EngineError.unknownType(type.name, known: knownTypes.sorted().map(\.name))
    }

    /// Every type this repository and configuration know of: the built-in ones, the
    /// configured ones, and any that has snapshots in the repository.
    public var knownTypes: Set<SnapshotType> {
        Set(SnapshotType.builtIn).union(config.types.keys).union([.preRestore, .sanitized, .continuous]).union((try? catalog.types()) ?? [])
    }

    /// Captures the components and commits a snapshot.
    public func create(_ options: CreateOptions, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) async throws -> SnapshotRecord {
        let request = try await prepareCreate(options, progress: progress, cancellation: cancellation)
        return try await Blocking.run { try commitCreate(request, progress: progress, cancellation: cancellation) }
    }

    /// The first half of `create`: validates the options and captures the generated
    /// components (commands, environment, MQTT messages), which needs no lock.
    public func prepareCreate(_ options: CreateOptions, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) async throws -> CreateRequest {
        try options.validate()
        let plan = try config.sources(type: options.type, paths: options.path, extraExcludes: options.exclude, workingDirectory: workingDirectory)
        progress.phase = "capturing"
        let generated = try await plan.captureGenerated(broker: try broker ?? config.mqtt.brokerSettings(), directory: config.root)
        for g in generated {
            progress.note("component \(g.name) (\(g.kind): \(g.source)): \(g.files.count) files\(g.details.messages.map { ", \($0) messages" } ?? "")\(g.details.note.map { "; \($0)" } ?? "")")
        }
        // Qdrant's snapshots are downloaded beside the repository (same file system), or, for
        // an object store, into the temporary directory.
        let scratch = isLocal ? repositoryPath + "/.store/tmp" : POSIX.temporaryDirectory() + "/snapshot-\(getpid())-\(BlobID.random().short)"
        if isLocal { try POSIX.makeDirectories(repositoryPath, mode: RepositoryModes.directory) }
        // Scratch directories in $TMPDIR of creates on object stores and of exports from
        // repositories that could not be written, left by processes that are gone.
        for line in Leftovers.cleanTemporary() { notice?("removed \(line)") }
        try POSIX.makeDirectories(scratch, mode: RepositoryModes.storeDirectory)
        // The temporary directory's scratch is this create's own: it goes when the create
        // ends, with what is in it (the repository's .store/tmp stays).
        let ownScratch = isLocal ? [] : [scratch]
        let qdrant: (sources: [FileSource], directories: [String])
        do {
            qdrant = try await plan.downloadQdrant(scratchRoot: scratch)
        } catch {
            for d in ownScratch { try? POSIX.removeTree(d) }
            throw error
        }
        if cancellation.isCancelled {
            for d in qdrant.directories + ownScratch { try? POSIX.removeTree(d) }
            throw EngineError.cancelled
        }
        var request = CreateRequest(
            type: options.type, name: options.name, auto: options.auto, time: options.time.flatMap { Timestamp(iso8601: $0) },
            tags: options.tags, sources: plan.files + qdrant.sources, generated: generated, compressionLevel: config.compressionLevel)
        request.temporaryDirectories = qdrant.directories + ownScratch
        return request
    }

    /// The second half of `create`: reads the files and commits, under the exclusive lock.
    /// Blocking and CPU-bound: call it from a thread of its own, not from the cooperative pool.
    public func commitCreate(_ request: CreateRequest, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) throws -> SnapshotRecord {
        defer { for d in request.temporaryDirectories { try? POSIX.removeTree(d) } }
        // Readers (list, verify, restore --target…) and creates of other types run beside a
        // create: it holds the store lock shared, its type's create lock alone, and the
        // commit lock for the moment it names and commits the snapshot (docs/design.md).
        let (repository, lock) = try open(.shared, purpose: "create", createIfMissing: true)
        defer { lock.release() }
        let typeLock = try createLock(type: request.type, purpose: "create --type \(request.type.name)")
        defer { typeLock?.release() }
        try repository.ensureConfigCopy()
        return try Archiver(repository: repository, progress: progress, cancellation: cancellation).create(request)
    }

    /// `.store/locks/create-<type>`, alone: one create of a type at a time (with the store
    /// lock held shared). `wait` defaults to `--lock-wait`.
    public func createLock(type: SnapshotType, purpose: String, wait: Double? = nil) throws -> RepositoryLock? {
        // On an object store the repository lock's `create` kind does this (one at a time).
        guard isLocal else { return nil }
        let locks = repositoryPath + "/.store/locks"
        try POSIX.makeDirectories(locks, mode: RepositoryModes.storeDirectory)
        return try RepositoryLock(path: locks + "/create-\(type.name)", mode: .exclusive, purpose: purpose, wait: wait ?? lockWait, repository: repositoryPath)
    }

    /// Verifies snapshots and records the outcome in each one's metadata.json.
    public func verify(_ options: VerifyOptions, progress: WorkProgress = WorkProgress()) throws -> VerifyReport {
        try options.validate()
        let (repository, lock) = try open(.shared, purpose: "verify")
        defer { lock.release() }
        var records = try options.snapshot.map { [try catalog.resolve($0)] } ?? catalog.all()
        if let component = options.component {
            // A component a snapshot does not have is a usage error, not damage. (A manifest
            // that cannot be read stays in: verify reports it.)
            let manifests = records.map { try? catalog.readManifest($0) }
            let having = zip(records, manifests).filter { $0.1 == nil || $0.1?.components[component] != nil }.map(\.0)
            guard !having.isEmpty else {
                let known = Set(manifests.compactMap { $0 }.flatMap(\.components.keys)).sorted().joined(separator: ", ")
                let which = options.snapshot.map { "snapshot \(records.first?.id ?? $0) has" } ?? "no snapshot has"
                throw EngineError.usage("\(which) no component \(component) (\(options.snapshot == nil ? "components" : "it has"): \(known))")
            }
            records = having
        }
        let verifier = Verifier(repository: repository, progress: progress)
        var report = verifier.verify(records, component: options.component, readData: options.readData)
        if let failure = verifier.resourceError {
            // Out of descriptors or memory, or an I/O error: the check is incomplete, and
            // none of it is recorded as the snapshots' outcome.
            throw failure
        }
        if !repository.damagedIndexFiles.isEmpty {
            report.repositoryErrors += repository.damagedIndexFiles.map { "\($0); `snapshot rebuild-metadata` rebuilds the index from the packs" }
            report.ok = false
        }
        if !repository.configProblems.isEmpty {
            report.repositoryErrors += repository.configProblems
            report.ok = false
        }
        report.warnings = RepositoryModes.looser(in: repositoryPath)
        if options.snapshot == nil {
            // Snapshots whose metadata.json cannot be read are damaged too.
            for d in try catalog.damaged() {
                report.snapshots.append(SnapshotVerification(snapshotID: d.id, ok: false, errors: [d.problem]))
                report.ok = false
            }
        }
        let now = Timestamp.now().iso8601
        for (record, result) in zip(records, report.snapshots) {
            // One component checked says nothing about the others: only a failure is recorded.
            if options.component != nil && result.ok { continue }
            var m = record.metadata
            m.verified = VerificationRecord(timestamp: now, ok: result.ok, readData: options.readData)
            try? catalog.rewriteMetadata(record, m)
        }
        return report
    }

    /// Restores into `target` (component C under `target/C/`). A dry run lists what would be
    /// written and writes nothing.
    public func restore(_ options: RestoreOptions, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) throws -> (summary: RestoreSummary?, plannedEntries: [ListedEntry]) {
        try options.validate()
        guard let target = options.target else {
            throw EngineError.usage("restore without a target restores in place: use restoreInPlace")
        }
        let (repository, lock) = try open(.shared, purpose: "restore")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot, type: options.type)
        let manifest = try catalog.readManifest(record)
        for name in options.component where manifest.components[name] == nil {
            throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
        }
        let dir = POSIX.absolute(target, relativeTo: workingDirectory)
        try refuseOverRepository(target: dir, manifest: manifest, components: options.component, repository: repository)
        if options.dryRun {
            let entries = try Browser(repository: repository).list(manifest).filter { e in
                options.component.isEmpty || options.component.contains { e.path == $0 || e.path.hasPrefix($0 + "/") }
            }
            return (nil, entries)
        }
        let result = try Restorer(repository: repository, progress: progress, cancellation: cancellation)
            .restore(record, manifest: manifest, components: options.component, target: dir, verify: options.verify)
        let summary = RestoreSummary(
            ok: result.mismatches.isEmpty, snapshotID: record.id, target: dir, files: result.files, bytes: result.bytes,
            seconds: (result.seconds * 1000).rounded() / 1000, mismatches: result.mismatches)
        return (summary, [])
    }

    /// A restore never writes into the repository: refused when a component's directory
    /// under `target` is the repository or lies in it, or holds it while the snapshot has
    /// entries where the repository is (an old snapshot of a tree that held it).
    func refuseOverRepository(target: String, manifest: SnapshotManifest, components: [String], repository: Repository) throws {
        guard isLocal else { return }
        let repo = POSIX.resolveExisting(POSIX.absolute(repositoryPath))
        for name in components.isEmpty ? manifest.components.keys.sorted() : components {
            let destination = POSIX.resolveExisting(target + "/" + name)
            var clash = POSIX.isWithin(destination, repo)
            if !clash && POSIX.isWithin(repo, destination) {
                let inside = name + String(repo.dropFirst(destination.count))
                clash = (try? Browser(repository: repository).node(manifest, path: inside)) != nil
            }
            if clash {
                throw EngineError.usage("restore --target \(target): \(name) would be written \(POSIX.isWithin(destination, repo) ? "into" : "over") the repository \(repositoryPath); choose a target outside it")
            }
        }
    }

    /// Restores over the live component locations (see `InPlaceRestorer`), or with
    /// `dryRun` lists what would change. `configuredOnly` (the MQTT agent) refuses components
    /// that have no files component of the same name in the config.
    public func restoreInPlace(_ options: RestoreOptions, configuredOnly: Bool = false, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) async throws -> (summary: InPlaceRestoreSummary?, planned: [PlannedChange]) {
        try options.validate()
        let restorer = InPlaceRestorer(service: self)
        if options.dryRun {
            let (repository, lock) = try open(.shared, purpose: "restore --dry-run")
            defer { lock.release() }
            let record = try catalog.resolve(options.snapshot, type: options.type)
            return (nil, try restorer.plan(record, manifest: try catalog.readManifest(record), components: options.component, repository: repository))
        }
        let (repository, lock) = try open(.exclusive, purpose: "restore in place")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot, type: options.type)
        let manifest = try catalog.readManifest(record)
        let summary = try await restorer.restore(record, manifest: manifest, components: options.component, noBackup: options.noBackup,
                                                 configuredOnly: configuredOnly, repository: repository, progress: progress, cancellation: cancellation)
        return (summary, [])
    }

    /// Applies the retention policy (`configs/retention.yaml` by default) and reclaims space.
    public func prune(_ options: PruneOptions, policy: RetentionPolicy? = nil, progress: WorkProgress = WorkProgress()) throws -> PruneReport {
        try options.validate()
        try checkKnown(options.type)
        let rules = try policy ?? RetentionPolicy.load(path: config.retention, knownTypes: knownTypes)
        let (repository, lock) = try open(options.dryRun ? .shared : .exclusive, purpose: "prune")
        defer { lock.release() }
        var pruner = Pruner(repository: repository)
        pruner.repackThreshold = config.repackThreshold
        return try pruner.prune(policy: rules, type: options.type, dryRun: options.dryRun, progress: progress)
    }

    /// Copies snapshots (`refs`, else every one of `type`, else all) into the repository in
    /// `target`, creating it like this one when it does not exist (the same chunker seed and,
    /// when encrypted, the same master keys under the same password).
    /// With `types`, only snapshots of those types (replication). `targetKeyring` is the
    /// target's (`replicaKeyring`), kept by a caller that copies again and again, so that an
    /// encrypted target's key is derived once.
    public func copy(
        to target: any RepositoryStorage, snapshots refs: [String], type: SnapshotType?, types: [SnapshotType] = [],
        targetKeyring: Keyring? = nil, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()
    ) throws -> CopyReport {
        try checkKnown(type)
        guard target.location != repositoryPath else { throw EngineError.usage("copy --to \(target.location): that is the repository itself") }
        let (source, lock) = try open(.shared, purpose: "copy")
        defer { lock.release() }
        var records: [SnapshotRecord] = []
        if refs.isEmpty {
            records = try catalog.all(type: type).filter { types.isEmpty || types.contains($0.type) }
        } else {
            for ref in refs { records.append(try catalog.resolve(ref, type: type)) }
        }
        progress.phase = "opening \(target.location)"
        let targetKeys = targetKeyring ?? replicaKeyring(target)
        if !(try Repository.exists(in: target)) {
            if let s3 = target as? S3Storage { try s3.createBucketIfMissing() }
            try Repository.initialize(in: target, encryption: source.config.encryption, password: keyring.password, like: source)
        }
        // It only adds, as a create does: readers go on beside it.
        let targetLock = try RepositoryLock(storage: target, mode: .shared, purpose: "copy", wait: lockWait, adding: true)
        defer { targetLock.release() }
        let destination = try Repository.open(storage: target, keyring: targetKeys)
        if let problem = Copier.incompatibility(source: source, target: destination) { throw EngineError.usage("copy --to \(target.location): \(problem)") }
        return try Copier(source: source, target: destination, progress: progress, cancellation: cancellation).copy(records)
    }

    /// The keys of another repository (a copy's or replication's target): this one's password.
    public func replicaKeyring(_ target: any RepositoryStorage) -> Keyring {
        Keyring(storage: target, password: keyring.password)
    }

    /// The snapshots a replication target has, as `TYPE/ID`.
    public func replicaSnapshots(_ target: any RepositoryStorage, keyring targetKeyring: Keyring? = nil) throws -> Set<String> {
        let there = try SnapshotCatalog(storage: target, keyring: targetKeyring ?? replicaKeyring(target)).all()
        return Set(there.map { "\($0.type.name)/\($0.id)" })
    }

    /// The snapshots of `types` (empty: all) that are not in `present` (`TYPE/ID`), oldest first.
    public func replicationPending(types: [SnapshotType], present: Set<String>) throws -> [SnapshotRecord] {
        try catalog.all().filter { (types.isEmpty || types.contains($0.type)) && !present.contains("\($0.type.name)/\($0.id)") }.reversed()
    }

    /// Applies this repository's retention policy to a replication target: it keeps what the
    /// same rules keep.
    public func pruneReplica(_ target: any RepositoryStorage, keyring targetKeyring: Keyring? = nil, progress: WorkProgress = WorkProgress()) throws -> PruneReport? {
        let rules = try RetentionPolicy.load(path: config.retention, knownTypes: knownTypes)
        guard try Repository.exists(in: target) else { return nil }
        let lock = try RepositoryLock(storage: target, mode: .exclusive, purpose: "prune (replica)", wait: lockWait)
        defer { lock.release() }
        let repository = try Repository.open(storage: target, keyring: targetKeyring ?? replicaKeyring(target))
        var pruner = Pruner(repository: repository)
        pruner.repackThreshold = config.repackThreshold
        return try pruner.prune(policy: rules, type: nil, dryRun: false, progress: progress)
    }

    /// Removes one snapshot, also a damaged one; its data is reclaimed by the next prune.
    public func delete(_ options: DeleteOptions) throws -> DeletedSnapshot {
        try options.validate()
        let (repository, lock) = try open(.exclusive, purpose: "delete")
        defer { lock.release() }
        let found = try locate(options.snapshot)
        trace?.note("removing \(found.directory)\(found.damaged.map { " (damaged: \($0))" } ?? ""); the next prune reclaims the data only it uses")
        try Pruner(repository: repository).delete(directory: found.directory, type: found.type, id: found.id)
        return DeletedSnapshot(snapshotID: found.id, type: found.type, metadata: found.record?.metadata, damaged: found.damaged)
    }

    /// A snapshot by reference, also one whose metadata.json is damaged (by id, TYPE/ID or
    /// `latest` when it is the newest): what `delete` and `rebuild-metadata --snapshot` work on.
    func locate(_ reference: String) throws -> (type: SnapshotType, id: String, directory: String, record: SnapshotRecord?, damaged: String?) {
        do {
            let r = try catalog.resolve(reference)
            return (r.type, r.id, r.directory, r, nil)
        } catch RepositoryError.corrupt(let file, let detail) {
            // The reference named a damaged snapshot: the error names its file.
            guard let d = try catalog.damaged().first(where: { $0.file == file }) else {
                throw RepositoryError.corrupt(file: file, detail: detail)
            }
            return (d.type, d.id, d.directory, nil, d.problem)
        }
    }

    /// Snapshots whose metadata.json cannot be read (`list` shows them as damaged).
    public func damaged(_ options: ListOptions) throws -> [DamagedSnapshot] {
        try listing(options).damaged
    }

    /// Snapshots, newest first.
    public func list(_ options: ListOptions) throws -> [SnapshotRecord] {
        try listing(options).records
    }

    /// Snapshots, newest first, and the damaged ones, from one reading of the catalog. It
    /// needs the store's lock but not its index (on an object store, loading the index is a
    /// request per index file).
    public func listing(_ options: ListOptions) throws -> (records: [SnapshotRecord], damaged: [DamagedSnapshot]) {
        try options.validate()
        try checkKnown(options.type)
        let storage = self.storage
        guard try Repository.exists(in: storage) else { throw RepositoryError.notFound(path: repositoryPath) }
        let started = Date()
        let lock = try RepositoryLock(storage: storage, mode: .shared, purpose: "list", wait: lockWait)
        defer { lock.release() }
        trace?.note(String(format: "shared lock for list taken in %.3f s (the index is not read)", Date().timeIntervalSince(started)))
        let (records, damaged) = try catalog.scan(type: options.type)
        trace?.note("\(records.count) snapshots\(options.type.map { " of type \($0)" } ?? "") read from their metadata.json, \(damaged.count) damaged")
        return (records, damaged)
    }

    /// One snapshot's record.
    public func show(_ options: ShowOptions) throws -> SnapshotRecord {
        try options.validate()
        let (_, lock) = try open(.shared, purpose: "show")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        trace?.note("\(options.snapshot) is \(record.type)/\(record.id) (\(record.directory)/metadata.json)")
        return record
    }
}
