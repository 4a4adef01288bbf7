#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// `prune --json`: `{"keep":[{"snapshot_id","reasons"}], "remove":[{"snapshot_id"}], "reclaimed_bytes"}`.
public struct PruneReport: Codable, Sendable, Equatable {
    public struct Kept: Codable, Sendable, Equatable {
        public var snapshotID: String
        public var type: SnapshotType
        public var reasons: [String]
        enum CodingKeys: String, CodingKey {
            case snapshotID = "snapshot_id"
            case type, reasons
        }
    }
    public struct Removed: Codable, Sendable, Equatable {
        public var snapshotID: String
        public var type: SnapshotType
        enum CodingKeys: String, CodingKey {
            case snapshotID = "snapshot_id"
            case type
        }
    }
    public var keep: [Kept]
    public var remove: [Removed]
    public var reclaimedBytes: UInt64
    public var packsDeleted: Int
    public var packsRepacked: Int
    public var dryRun: Bool
    /// What prune could not do, and why (a damaged snapshot whose data it cannot tell).
    public var warnings: [String] = []

    enum CodingKeys: String, CodingKey {
        case keep, remove, warnings
        case reclaimedBytes = "reclaimed_bytes"
        case packsDeleted = "packs_deleted"
        case packsRepacked = "packs_repacked"
        case dryRun = "dry_run"
    }
}

/// Removes snapshots and reclaims the space only they used.
///
/// Order, so that a kill at any point leaves a repository that verifies: (1) snapshot
/// directories are removed (each by one rename out of sight, then deletion); (2) the blobs
/// still referenced are found by walking the remaining snapshots' trees (each tree once);
/// (3) packs mostly unused are repacked — their live blobs written to new packs; (4) one new
/// index file listing every live blob is written atomically; (5) the old index files are
/// deleted; (6) packs no longer in the index are deleted. Before (5) the old index files
/// still describe existing packs; after it the new one does. The work is one walk of the
/// unique trees plus I/O for what is removed or repacked.
public struct Pruner: Sendable {
    let repository: Repository
    let catalog: SnapshotCatalog
    /// Repack a pack when at least this share of its bytes is unused.
    public var repackThreshold: Double = 0.2

    public init(repository: Repository) {
        self.repository = repository
        self.catalog = SnapshotCatalog(repository: repository)
    }

    /// Removes one snapshot directory: renamed to a hidden name first, so that it vanishes
    /// from listings in one step, then deleted; `latest` is updated.
    public func delete(_ record: SnapshotRecord) throws {
        try delete(directory: record.directory, type: record.type, id: record.id)
    }

    /// Removes a snapshot directory (out of sight in one rename, then deleted) and points
    /// its type's `latest` at the newest one left.
    /// `pointLatest: false` leaves the link to the caller (prune moves it once per type, not
    /// once per snapshot: each move reads every metadata.json of the type).
    public func delete(directory: String, type: SnapshotType, id: String, pointLatest: Bool = true) throws {
        if !repository.isLocal {
            // metadata.json first: the snapshot is gone from listings with that one request.
            let key = type.name + "/" + id
            try repository.storage.remove(key + "/metadata.json")
            for o in try repository.storage.list(prefix: key + "/") { try repository.storage.remove(o.key) }
            return
        }
        let hidden = POSIX.parent(of: directory) + "/.deleting-" + id
        try POSIX.removeTree(hidden)
        guard rename(directory, hidden) == 0 else { throw RepositoryError.fromErrno(path: directory, operation: "remove snapshot") }
        try POSIX.syncDirectory(POSIX.parent(of: directory))
        try POSIX.removeTree(hidden)
        if pointLatest { try catalog.updateLatest(type: type) }
    }

    /// Applies `policy` (to `type` only, when given), deletes what falls out and reclaims.
    public func prune(policy: RetentionPolicy, type: SnapshotType?, dryRun: Bool, progress: WorkProgress = WorkProgress()) throws -> PruneReport {
        let records = try catalog.all()
        let decisions = policy.decide(records.filter { type == nil || $0.type == type })
        let byID = Dictionary(records.map { ("\($0.type)/\($0.id)", $0) }, uniquingKeysWith: { a, _ in a })
        var report = PruneReport(
            keep: decisions.filter(\.keep).map { .init(snapshotID: $0.snapshotID, type: $0.type, reasons: $0.reasons) },
            remove: decisions.filter { !$0.keep }.map { .init(snapshotID: $0.snapshotID, type: $0.type) },
            reclaimedBytes: 0, packsDeleted: 0, packsRepacked: 0, dryRun: dryRun)
        let removing = report.remove.compactMap { byID["\($0.type)/\($0.snapshotID)"] }
        do {
            if dryRun {
                let plan = try reclaimPlan(keeping: records.filter { r in !removing.contains { $0.directory == r.directory } })
                let orphans = try orphanPacks()
                report.reclaimedBytes = plan.reclaimable + orphans.reduce(0) { $0 + $1.size }
                report.packsDeleted = plan.unused.count + orphans.count
                report.packsRepacked = plan.repack.count
                return report
            }
            progress.phase = "removing snapshots"
            progress.filesTotal.add(removing.count, ordering: .relaxed)
            // An object store's snapshots that never reached their commit point.
            try catalog.removeUncommitted()
            let types = Set(removing.map(\.type)).sorted()
            do {
                for r in removing {
                    try delete(directory: r.directory, type: r.type, id: r.id, pointLatest: false)
                    progress.filesDone.add(1, ordering: .relaxed)
                }
            } catch {
                for t in types { try? catalog.updateLatest(type: t) }
                throw error
            }
            for t in types { try catalog.updateLatest(type: t) }
            let result = try reclaim(progress: progress)
            report.reclaimedBytes = result.reclaimed
            report.packsDeleted = result.deleted
            report.packsRepacked = result.repacked
            if let note = result.notRepacked { report.warnings.append(note) }
        } catch let blocked as UnknownLiveData {
            report.warnings.append("space not reclaimed: \(blocked.reason)")
        }
        return report
    }

    /// A damaged snapshot whose manifest cannot be read either: what it uses is unknown, so
    /// nothing may be reclaimed until it is deleted or repaired.
    struct UnknownLiveData: Error {
        let reason: String
    }

    struct Plan {
        var live: Set<BlobID>
        var unused: [BlobID]
        var repack: [BlobID]
        var reclaimable: UInt64
        var packSizes: [BlobID: UInt64]
    }

    /// Which packs are wholly unused, which are worth repacking, and how many bytes that frees.
    func reclaimPlan(keeping records: [SnapshotRecord]) throws -> Plan {
        if let damaged = repository.damagedIndexFiles.first {
            throw UnknownLiveData(reason: "\(damaged); `snapshot rebuild-metadata` rebuilds the index from the packs")
        }
        let reader = BlobReader(repository: repository)
        var live = Set<BlobID>()
        var seenTrees = Set<BlobID>()
        var manifests = try records.map { try catalog.readManifest($0) }
        live.formUnion(records.compactMap { BlobID(hex: $0.metadata.manifest) })
        // A damaged snapshot keeps what its manifest.json names (and the manifest blob, which
        // holds manifest.json without its final newline).
        for d in try catalog.damaged() {
            guard let bytes = try? catalog.manifestPlaintext(directory: d.directory), let m = try? catalog.readManifest(directory: d.directory) else {
                throw UnknownLiveData(reason: "snapshot \(d.type)/\(d.id) is damaged and its manifest.json cannot be read (\(d.problem)); `snapshot delete --snapshot \(d.type)/\(d.id)` lets prune reclaim again")
            }
            manifests.append(m)
            live.insert(repository.blobID(bytes))
        }
        for manifest in manifests {
            for (name, c) in manifest.components {
                var stack = [(c.treeID, name)]
                while let (id, path) = stack.popLast() {
                    guard seenTrees.insert(id).inserted else { continue }
                    live.insert(id)
                    let tree: Tree
                    do {
                        tree = try reader.readTree(id, path: path)
                    } catch let e as RepositoryError {
                        guard case .missingBlob = e else { throw e }
                        throw UnknownLiveData(reason: "snapshot \(manifest.snapshotID): \(e); `snapshot verify --all` names what is affected, `snapshot rebuild-metadata` rebuilds a lost index from the packs")
                    }
                    for node in tree.nodes {
                        if let sub = node.subtree { stack.append((sub, path + "/" + node.name)) }
                        for blob in node.content { live.insert(blob) }
                    }
                }
            }
        }
        var used: [BlobID: UInt64] = [:]
        var total: [BlobID: UInt64] = [:]
        for (id, loc) in repository.index.allLocations() {
            total[loc.pack, default: 0] += UInt64(loc.length)
            if live.contains(id) { used[loc.pack, default: 0] += UInt64(loc.length) }
        }
        var unused: [BlobID] = []
        var repack: [BlobID] = []
        var reclaimable: UInt64 = 0
        for (pack, size) in total {
            let u = used[pack] ?? 0
            if u == 0 {
                unused.append(pack)
                reclaimable += size
            } else if Double(size - u) >= repackThreshold * Double(size) {
                repack.append(pack)
                reclaimable += size - u
            }
        }
        return Plan(live: live, unused: unused, repack: repack, reclaimable: reclaimable, packSizes: total)
    }

    /// Pack files that no index names: left by a killed `create` (never referenced by a
    /// committed snapshot) or by a killed prune after its index rewrite. With their sizes.
    func orphanPacks() throws -> [(path: String, size: UInt64)] {
        var named = Set<String>()
        for loc in repository.index.allLocations().values { named.insert(repository.packPath(loc.pack)) }
        if !repository.isLocal {
            return try repository.storage.list(prefix: ".store/data/").compactMap { o in
                let path = repository.storage.describe(o.key)
                return named.contains(path) ? nil : (path, UInt64(o.size))
            }
        }
        let data = repository.path + "/.store/data"
        var out: [(String, UInt64)] = []
        for dir in (try? POSIX.listDirectory(data)) ?? [] {
            for name in (try? POSIX.listDirectory(data + "/" + dir)) ?? [] {
                let path = data + "/\(dir)/\(name)"
                guard !named.contains(path) else { continue }
                var st = stat()
                out.append((path, lstat(path, &st) == 0 ? UInt64(st.st_size) : 0))
            }
        }
        return out
    }

    /// Repacks, rewrites the index, deletes unused packs (see the type's documentation).
    /// `notRepacked` says why the packs due for repacking were left as they were.
    func reclaim(progress: WorkProgress) throws -> (reclaimed: UInt64, deleted: Int, repacked: Int, notRepacked: String?) {
        progress.phase = "finding used data"
        // First what is live: it fails when a snapshot's trees cannot be found in the index,
        // before anything is deleted — with the index lost, every pack would look orphaned.
        let plan = try reclaimPlan(keeping: try catalog.all())
        var orphaned: UInt64 = 0
        let orphans = try orphanPacks()
        for (path, size) in orphans {
            if repository.isLocal {
                try POSIX.removeTree(path)
            } else {
                try repository.storage.remove(String(path.dropFirst(repository.path.count + 1)))
            }
            orphaned += size
        }
        guard !plan.unused.isEmpty || !plan.repack.isEmpty else { return (orphaned, orphans.count, 0, nil) }
        let locations = repository.index.allLocations()
        // (3) Live blobs of packs being repacked go to new packs. When they do not fit (a
        // full disk or quota) repacking waits for the next prune: the packs this one wrote are
        // removed and the unused packs are still reclaimed, which is often what makes room.
        progress.phase = "repacking"
        var repack = plan.repack
        var newPacks: [(pack: BlobID, entries: [PackEntry])] = []
        var notRepacked: String?
        do {
            try copyLive(of: Set(plan.repack), live: plan.live, locations: locations)
            newPacks = repository.index.takeNewPacks()
        } catch let e as RepositoryError where e.isOutOfSpace {
            for written in repository.index.takeNewPacks() { try? repository.removePack(written.pack) }
            let bytes = plan.repack.reduce(UInt64(0)) { $0 + (plan.packSizes[$1] ?? 0) }
            notRepacked = "\(plan.repack.count) packs (\(String(format: "%.1f MiB", Double(bytes) / 1_048_576))) not repacked: \(e.systemReason); run prune again once there is room"
            repack = []
        }
        let obsolete = Set(plan.unused + repack)
        guard !obsolete.isEmpty else { return (orphaned, orphans.count, 0, notRepacked) }
        // (4) One index with every live blob: new packs plus the untouched ones.
        progress.phase = "writing index"
        var byPack: [BlobID: [PackEntry]] = [:]
        for (pack, entries) in newPacks { byPack[pack, default: []] += entries }
        // Packs left unrepacked keep every entry in the index, the unused ones too, so that
        // the next prune sees them as this one did.
        let unrepacked = notRepacked == nil ? [] : Set(plan.repack)
        for (id, loc) in locations where !obsolete.contains(loc.pack) && (plan.live.contains(id) || unrepacked.contains(loc.pack)) {
            byPack[loc.pack, default: []].append(PackEntry(id: id, type: loc.type, offset: loc.offset, length: loc.length, rawLength: loc.rawLength))
        }
        let oldIndexFiles = try repository.indexFileNames()
        try repository.writeIndex(byPack.map { ($0.key, $0.value.sorted { $0.offset < $1.offset }) })
        // (5) Old index files, then (6) the packs only they named.
        progress.phase = "deleting"
        for name in oldIndexFiles { try repository.removeIndexFile(name) }
        var reclaimed: UInt64 = 0
        for pack in obsolete {
            reclaimed += plan.packSizes[pack] ?? 0
            try repository.removePack(pack)
        }
        let added = newPacks.reduce(UInt64(0)) { $0 + $1.entries.reduce(0) { $0 + UInt64($1.length) } }
        return ((reclaimed > added ? reclaimed - added : 0) + orphaned, plan.unused.count + orphans.count, repack.count, notRepacked)
    }

    /// Copies the live blobs of `packs` into new packs, each checked against its id on the
    /// way (damaged data is never carried over). The writer is gone when this returns or
    /// throws, its unfinished pack removed with it.
    private func copyLive(of packs: Set<BlobID>, live: Set<BlobID>, locations: [BlobID: BlobLocation]) throws {
        let writer = repository.makeBlobWriter(compressionLevel: 3)
        let reader = BlobReader(repository: repository)
        for (id, loc) in locations where packs.contains(loc.pack) && live.contains(id) {
            let entry = try repository.readEntry(loc)
            _ = try reader.read(id)
            try writer.storeCopy(id: id, type: loc.type, entry: entry, rawLength: Int(loc.rawLength))
        }
        try writer.flush()
    }
}
