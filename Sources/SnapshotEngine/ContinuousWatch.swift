import Foundation
import Synchronization
import CSystemShims
import SnapshotCore

/// One `continuous:` entry: files components snapshotted after `debounce` seconds of quiet,
/// and at least every `maxInterval` seconds while changes keep coming.
public struct ContinuousEntry: Sendable, Equatable {
    public var components: [String]
    public var debounce: Double
    public var maxInterval: Double

    public init(components: [String], debounce: Double = 1, maxInterval: Double = 60) {
        self.components = components
        self.debounce = debounce
        self.maxInterval = maxInterval
    }
}

/// Where a continuous watch stands (`status/<id>/continuous`, `snapshot watch`).
public struct ContinuousStatus: Sendable, Equatable {
    public var components: [String]
    /// Changed paths not yet in a snapshot.
    public var pendingPaths: Int
    /// Age of the oldest change not yet in a snapshot (0: none waiting).
    public var lagSeconds: Double
    public var lastID: String?
    /// When the newest continuous snapshot was taken (ISO 8601).
    public var lastAt: String?
    public var watchedDirectories: Int
    public var lastError: String?
}

/// What a continuous watch did.
public enum ContinuousEvent: Sendable {
    /// Watches are in place; the start-up scan comes next.
    case watching(directories: Int)
    /// A snapshot of this many changed paths begins (reported on the watch's thread, which
    /// reads no notifications until the snapshot is done).
    case taking(changedPaths: Int)
    /// A snapshot committed: how many paths changed, how many files were read, how long it took,
    /// and whether it was a whole rescan (start-up, overflow).
    case snapshot(SnapshotRecord, changedPaths: Int, readFiles: Int, readBytes: Int, seconds: Double, rescan: Bool)
    /// Changes came and went with nothing different to commit.
    case unchanged(changedPaths: Int)
    /// A snapshot failed; its changes stay pending and are tried again.
    case failed(String, retryIn: Double)
    /// The status changed (changes pending after a quiet time, a snapshot taken, an error).
    case status(ContinuousStatus)
}

/// Continuous snapshots of files components (the config's `continuous:`): a recursive
/// inotify watch collects changed paths; after an entry's debounce (or its max_interval
/// while changes keep coming) one snapshot of type `continuous` reads only those paths and
/// keeps the previous continuous snapshot's trees for everything else. Every continuous
/// snapshot holds every watched component, so `continuous@TIME` restores any of them. The
/// first snapshot after start, and the one after a notification overflow, scan everything
/// once (comparing with the parent, so unchanged files are not read).
///
/// `run` blocks its thread; `stop` ends it (taking a last snapshot of what is pending).
public final class ContinuousWatch: @unchecked Sendable {
    public let service: SnapshotService
    public let entries: [ContinuousEntry]
    public let sources: [FileSource]
    private let report: @Sendable (ContinuousEvent) -> Void
    private let state = Mutex<(watcher: ChangeWatcher?, stopped: Bool)>((nil, false))

    // Kept across snapshots so that each costs what changed, not an open of the repository.
    private var repository: Repository?
    private var parent: SnapshotRecord?
    private var lastError: String?
    /// Tree digests by id, kept across snapshots: a checksum costs the directories changed.
    private let digests = DigestCache()

    /// Validates that every component is a configured files component.
    public init(service: SnapshotService, entries: [ContinuousEntry], report: @escaping @Sendable (ContinuousEvent) -> Void) throws {
        guard !entries.isEmpty else { throw EngineError.usage("nothing to watch: the config has no continuous: entry (or name components with --component)") }
        var sources: [FileSource] = []
        for name in entries.flatMap(\.components) {
            guard let source = service.config.component(name) else {
                throw EngineError.unknownComponent(name, known: service.config.components.map(\.name))
            }
            guard case .files(let path, let exclude) = source else {
                throw EngineError.usage("component \(name) is a \(source.kind) component; only files components can be watched")
            }
            guard !sources.contains(where: { $0.name == name }) else { continue }
            sources.append(FileSource(name: name, path: path, excludes: exclude))
        }
        self.service = service
        self.entries = entries
        self.sources = sources
        self.report = report
    }

    public var componentNames: [String] { sources.map(\.name) }

    /// Ends `run` (from any thread): it takes a last snapshot of pending changes and returns.
    public func stop() {
        let w = state.withLock { s -> ChangeWatcher? in
            s.stopped = true
            return s.watcher
        }
        w?.stop()
    }

    /// Watches and snapshots until `stop`. Throws when the watch cannot be set up.
    public func run() throws {
        let watcher = try ChangeWatcher(roots: sources.map { ChangeWatcher.Root(name: $0.name, path: $0.path, excludes: $0.excludes) }, leavingOut: FileIdentity(path: service.repositoryPath))
        let stoppedEarly = state.withLock { s -> Bool in
            s.watcher = watcher
            return s.stopped
        }
        if stoppedEarly { return }
        report(.watching(directories: watcher.watchCount))
        // The start-up scan: whatever changed while nothing watched.
        watcher.markAllWhole()
        var first: [String: Date] = [:], last: [String: Date] = [:], seen: [String: Int] = [:]
        var retryAt: Date?
        var failures = 0
        var reportedPending = false
        while true {
            let now = Date()
            for (c, n) in watcher.activity where n != seen[c] {
                seen[c] = n
                last[c] = now
                if first[c] == nil { first[c] = now }
            }
            var deadline: Date?
            for e in entries {
                let firsts = e.components.compactMap { first[$0] }, lasts = e.components.compactMap { last[$0] }
                guard let f = firsts.min(), let l = lasts.max() else { continue }
                let d = min(l.addingTimeInterval(e.debounce), f.addingTimeInterval(e.maxInterval))
                deadline = deadline.map { min($0, d) } ?? d
            }
            if let r = retryAt, let d = deadline { deadline = max(d, r) }
            if deadline != nil && !reportedPending {
                reportedPending = true
                report(.status(status(watcher, oldest: first.values.min())))
            }
            if let d = deadline, d <= now {
                watcher.rewatchLostRoots()
                let changes = watcher.take()
                // take() read what was still queued: those events are in this snapshot.
                for (c, n) in watcher.activity { seen[c] = n }
                let oldest = first.values.min()
                first = [:]
                last = [:]
                do {
                    try snapshot(changes)
                    retryAt = nil
                    failures = 0
                    lastError = nil
                } catch {
                    // Kept for the next try; a notification that comes meanwhile adds to them.
                    watcher.putBack(changes)
                    for c in changes.keys {
                        first[c] = oldest ?? now
                        last[c] = now
                    }
                    failures += 1
                    let wait = min(entries.map(\.maxInterval).min() ?? 60, pow(2, Double(min(failures, 6))))
                    retryAt = Date().addingTimeInterval(wait)
                    lastError = "\(error)".escapingControlCharacters
                    report(.failed(lastError!, retryIn: wait))
                }
                reportedPending = false
                report(.status(status(watcher, oldest: first.values.min())))
                continue
            }
            guard watcher.wait(timeout: deadline.map { max(0, $0.timeIntervalSince(now)) }) else { break }
        }
        // Stopped: what is pending goes into one last snapshot, so that nothing is lost.
        let pending = watcher.take()
        if pending.values.contains(where: { !$0.isEmpty }) {
            do {
                try snapshot(pending)
            } catch {
                report(.failed("\(error)".escapingControlCharacters, retryIn: 0))
            }
        }
        repository = nil
    }

    private func status(_ watcher: ChangeWatcher, oldest: Date?) -> ContinuousStatus {
        ContinuousStatus(
            components: componentNames, pendingPaths: watcher.pending.values.reduce(0) { $0 + $1.count },
            lagSeconds: oldest.map { (Date().timeIntervalSince($0) * 1000).rounded() / 1000 } ?? 0,
            lastID: parent?.id, lastAt: parent?.metadata.timestamp, watchedDirectories: watcher.watchCount, lastError: lastError)
    }

    /// One continuous snapshot of `changes`, under the locks a create of type `continuous`
    /// takes (readers and creates of other types run beside it).
    private func snapshot(_ changes: [String: ComponentChanges]) throws {
        let started = Date()
        let path = service.repositoryPath
        if repository == nil {
            // The first time: created if missing, leftovers of killed runs removed, as create does.
            let (repo, lock) = try service.open(.shared, purpose: "create", createIfMissing: true)
            lock.release()
            try repo.ensureConfigCopy()
            repository = repo
        }
        // The locks `create --type continuous` takes (the repository stays open in between).
        let lock = try RepositoryLock(storePath: path + "/.store", mode: .shared, purpose: "create", wait: service.lockWait)
        defer { lock.release() }
        let typeLock = try service.createLock(type: .continuous, purpose: "watch (continuous snapshots)", wait: max(service.lockWait, 5))
        defer { typeLock?.release() }
        if repository!.indexWasRewritten {
            // prune or rebuild-metadata ran since: blobs may have moved; start from what is there.
            repository = try Repository.open(at: path, keyring: service.keyring)
            parent = nil
        }
        let catalog = service.catalog
        if let p = parent, !POSIX.isDirectory(p.directory) { parent = nil }
        if parent == nil { parent = try catalog.all(type: .continuous).first }
        var request = CreateRequest(type: .continuous, auto: true, sources: sources, compressionLevel: service.config.compressionLevel)
        request.workers = min(request.workers, 2)
        var all = changes
        if parent == nil {
            // No continuous snapshot to build on: the first one reads (or compares) everything.
            for s in sources { all[s.name, default: ComponentChanges()].whole = true }
        }
        let archiver = Archiver(repository: repository!, digestCache: digests)
        let changed = all.values.reduce(0) { $0 + $1.count }
        report(.taking(changedPaths: changed))
        let created = try archiver.createContinuous(request, parent: parent, changes: all)
        // A whole scan builds the tree in memory; the watch then idles for hours: hand back what it freed.
        if all.values.contains(where: { $0.whole }) { _ = snapshot_malloc_trim() }
        guard let record = created else {
            report(.unchanged(changedPaths: changed))
            return
        }
        parent = record
        let read = archiver.lastRead
        report(.snapshot(record, changedPaths: changed, readFiles: read.files, readBytes: read.bytes,
                         seconds: Date().timeIntervalSince(started), rescan: all.values.contains { $0.whole }))
    }
}
