import Foundation
import SnapshotCore
import Synchronization

/// `copy --json`: what was copied, what the target had already, and what was sent.
public struct CopyReport: Codable, Sendable, Equatable {
    public var to: String
    /// `TYPE/ID` of each snapshot copied, oldest first.
    public var copied: [String] = []
    /// Snapshots the target already had.
    public var present: [String] = []
    /// Blobs sent, their plaintext bytes and what they took in the target's packs.
    public var blobs = 0
    public var bytes = 0
    public var storedBytes = 0
    public var seconds = 0.0

    enum CodingKeys: String, CodingKey {
        case to, copied, present, blobs, bytes, seconds
        case storedBytes = "stored_bytes"
    }
}

/// Copies snapshots into another repository, sending only the blobs it lacks.
///
/// Order, as in `create`: blobs are read from the source (each checked against its id),
/// written into new packs of the target, and indexed there in batches; a snapshot's
/// manifest.json and metadata.json are written only after every blob it needs is indexed
/// in the target. A kill leaves at most unindexed packs (prune reclaims them); the next run
/// skips the snapshots the target has and the blobs its index lists, so it resumes where the
/// last committed batch ended. The two repositories must give the same data the same blob id:
/// both unencrypted, or both encrypted with the same master keys (a target that `copy`
/// creates is made so).
public struct Copier {
    let source: Repository
    let target: Repository
    let progress: WorkProgress
    let cancellation: CancellationFlag
    /// Source packs per batch: the target's index is written after each.
    var batchPacks = 8

    public init(source: Repository, target: Repository, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) {
        self.source = source
        self.target = target
        self.progress = progress
        self.cancellation = cancellation
    }

    /// Why the two repositories cannot share blobs, or nil.
    public static func incompatibility(source: Repository, target: Repository) -> String? {
        switch (source.keys, target.keys) {
        case (nil, nil): return nil
        case (let a?, let b?) where a == b: return nil
        case (nil, _?), (_?, nil):
            return "\(target.path) is \(target.keys == nil ? "not " : "")encrypted and \(source.path) is \(source.keys == nil ? "not" : "")"
                + "; copy to a new repository (copy creates it like the source)"
        default:
            return "\(target.path) has other master keys than \(source.path), so the same data has other blob ids there; copy to a new repository (copy creates it with the source's keys)"
        }
    }

    public func copy(_ records: [SnapshotRecord]) throws -> CopyReport {
        let started = Date()
        var report = CopyReport(to: target.path)
        let sourceCatalog = SnapshotCatalog(repository: source)
        let targetCatalog = SnapshotCatalog(repository: target)
        var existing: [String: SnapshotRecord] = [:]
        for r in try targetCatalog.all() { existing["\(r.type.name)/\(r.id)"] = r }
        var walkedTrees = Set<BlobID>()
        let reader = BlobReader(repository: source)
        let oldestFirst = records.sorted { a, b in a.metadata.timestamp != b.metadata.timestamp ? a.metadata.timestamp < b.metadata.timestamp : SnapshotCatalog.idOrder(b.id, a.id) }
        for record in oldestFirst {
            if cancellation.isCancelled { throw EngineError.cancelled }
            let name = "\(record.type.name)/\(record.id)"
            if let there = existing[name] {
                guard there.metadata.manifest == record.metadata.manifest else {
                    throw RepositoryError.corrupt(file: there.directory, detail: "the target has another snapshot \(name) (a different manifest); it was not copied")
                }
                report.present.append(name)
                continue
            }
            progress.phase = "copying \(name)"
            // Every blob the snapshot needs that the target lacks, by source pack.
            let manifest = try sourceCatalog.readManifest(record)
            var needed: [BlobID: BlobLocation] = [:]
            func need(_ id: BlobID, _ what: @autoclosure () -> String) throws {
                // The target's index as loaded (asking `location` would list its index files
                // again for every blob it lacks).
                guard needed[id] == nil, target.index.location(of: id) == nil else { return }
                guard let loc = source.location(of: id) else { throw RepositoryError.missingBlob(id: id, context: "\(what()) of \(name) in \(source.path)") }
                needed[id] = loc
            }
            if let m = BlobID(hex: record.metadata.manifest) { try need(m, "manifest") }
            for (component, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
                var stack: [(BlobID, String)] = [(c.treeID, component)]
                while let (id, path) = stack.popLast() {
                    try need(id, "tree \(path)")
                    guard walkedTrees.insert(id).inserted else { continue }
                    for node in try reader.readTree(id, path: path).nodes {
                        for blob in node.content { try need(blob, "content of \(path)/\(node.name)") }
                        if let sub = node.subtree { stack.append((sub, path + "/" + node.name)) }
                    }
                }
            }
            let sent = try send(needed)
            report.blobs += sent.blobs
            report.bytes += sent.bytes
            report.storedBytes += sent.stored
            // The commit point: the snapshot's files, after its blobs are indexed.
            var metadata = record.metadata
            metadata.verified = nil
            _ = try targetCatalog.withCommitLock { try targetCatalog.commit(metadata: metadata, manifest: manifest) }
            report.copied.append(name)
            progress.note("copied \(name): \(sent.blobs) blobs, \(sent.bytes) bytes")
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Reads the blobs from the source (checked) and stores them in the target, a batch of
    /// source packs at a time, each batch indexed in the target before the next.
    private func send(_ needed: [BlobID: BlobLocation]) throws -> (blobs: Int, bytes: Int, stored: Int) {
        guard !needed.isEmpty else { return (0, 0, 0) }
        var byPack: [BlobID: [(BlobID, BlobLocation)]] = [:]
        for (id, loc) in needed { byPack[loc.pack, default: []].append((id, loc)) }
        let packs = byPack.keys.sorted { $0.hex < $1.hex }.map { byPack[$0]!.sorted { $0.1.offset < $1.1.offset } }
        progress.bytesTotal.add(needed.values.reduce(0) { $0 + Int($1.rawLength) }, ordering: .relaxed)
        let totals = Mutex((blobs: 0, bytes: 0, stored: 0))
        let source = self.source, target = self.target, progress = self.progress
        for start in stride(from: 0, to: packs.count, by: batchPacks) {
            let batch = Array(packs[start..<min(start + batchPacks, packs.count)])
            try WorkerThreads.forEach(
                batch, threads: WorkerThreads.defaultCount, cancellation: cancellation,
                state: { (reader: BlobReader(repository: source), writer: target.makeBlobWriter(compressionLevel: 3)) },
                finish: { state in
                    try state.writer.flush()
                    let stored = state.writer.newStoredBytes
                    totals.withLock { $0.stored += stored }
                }
            ) { blobs, state in
                for (id, loc) in blobs {
                    guard state.writer.reserve(id) else { continue }
                    let plain = try state.reader.read(id, at: loc, check: true)
                    _ = try plain.withUnsafeBytes { try state.writer.storeNew(id: id, data: $0, type: loc.type, compress: true) }
                    totals.withLock {
                        $0.blobs += 1
                        $0.bytes += plain.count
                    }
                    progress.bytesDone.add(Int(loc.rawLength), ordering: .relaxed)
                }
            }
            try target.commitIndex()
        }
        return totals.withLock { $0 }
    }
}
