import Dispatch
import Synchronization
import SnapshotCore

/// The outcome of verifying one snapshot.
public struct SnapshotVerification: Sendable, Codable, Equatable {
    public var snapshotID: String
    public var ok: Bool
    public var errors: [String]

    enum CodingKeys: String, CodingKey {
        case snapshotID = "snapshot_id"
        case ok, errors
    }
}

/// `verify --json`: `{"ok", "snapshots":[…]}`.
public struct VerifyReport: Sendable, Codable, Equatable {
    public var ok: Bool
    public var snapshots: [SnapshotVerification]
}

/// Checks snapshots. The quick check reads every tree (each checked against its hash),
/// confirms that every content blob is in the index and that its pack exists, and recomputes
/// each component checksum. `readData` also reads, decompresses and re-hashes every content
/// blob, once per blob however many snapshots share it, pack by pack on `workers` threads.
/// Every error names the snapshot, the component and, where there is one, the file.
public final class Verifier: Sendable {
    let repository: Repository
    public let progress: WorkProgress
    let workers: Int

    public init(repository: Repository, progress: WorkProgress = WorkProgress(), workers: Int = 2) {
        self.repository = repository
        self.progress = progress
        self.workers = workers
    }

    private struct Use {
        var snapshot: Int
        var where_: String
    }

    public func verify(_ records: [SnapshotRecord], component: String? = nil, readData: Bool) -> VerifyReport {
        let catalog = SnapshotCatalog(repositoryPath: repository.path)
        let reader = BlobReader(repository: repository)
        var results: [SnapshotVerification] = []
        var firstUse: [BlobID: [Use]] = [:]
        progress.phase = "checking trees"
        progress.filesTotal.store(records.count, ordering: .relaxed)
        var packsPresent: [BlobID: Bool] = [:]
        for (i, record) in records.enumerated() {
            var errors: [String] = []
            defer {
                results.append(SnapshotVerification(snapshotID: record.id, ok: errors.isEmpty, errors: errors))
                progress.filesDone.add(1, ordering: .relaxed)
            }
            let manifest: SnapshotManifest
            do {
                manifest = try catalog.readManifest(record)
            } catch {
                errors.append("\(error)")
                continue
            }
            if let component, manifest.components[component] == nil {
                errors.append("component \(component): not in this snapshot")
                continue
            }
            for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
                if let component, name != component { continue }
                do {
                    let digest = try ComponentDigest.compute(root: c.treeID) { id, path in
                        let t = try reader.readTree(id, path: path.isEmpty ? name : name + "/" + path)
                        do {
                            for node in t.nodes where node.kind == .file {
                                let file = name + "/" + (path.isEmpty ? node.name : path + "/" + node.name)
                                for blob in node.content {
                                    guard let loc = repository.index.location(of: blob) else {
                                        throw VerifyFailure("file \(file): content blob \(blob.short) missing from the index")
                                    }
                                    if packsPresent[loc.pack] == nil {
                                        packsPresent[loc.pack] = POSIX.exists(repository.packPath(loc.pack))
                                    }
                                    if packsPresent[loc.pack] == false {
                                        throw VerifyFailure("file \(file): pack \(loc.pack.short) missing")
                                    }
                                    if readData {
                                        var uses = firstUse[blob, default: []]
                                        if uses.count < 8 { uses.append(Use(snapshot: i, where_: file)); firstUse[blob] = uses }
                                    }
                                }
                            }
                        }
                        return t
                    }
                    let expected = record.metadata.checksums[name]
                    if expected == nil {
                        errors.append("component \(name): no checksum in metadata.json")
                    } else if expected != digest {
                        errors.append("component \(name): checksum mismatch (metadata \(expected!), contents \(digest))")
                    }
                } catch let failure as VerifyFailure {
                    errors.append("component \(name): \(failure.message)")
                } catch {
                    errors.append("component \(name): \(error)")
                }
            }
        }
        if readData {
            for (blob, message) in readAllData(Array(firstUse.keys)) {
                for use in firstUse[blob] ?? [] {
                    results[use.snapshot].errors.append("file \(use.where_): \(message)")
                    results[use.snapshot].ok = false
                }
            }
        }
        progress.phase = "done"
        return VerifyReport(ok: results.allSatisfy(\.ok), snapshots: results)
    }

    /// Reads every blob once, pack by pack; returns the damaged ones with what is wrong.
    private func readAllData(_ blobs: [BlobID]) -> [(BlobID, String)] {
        progress.phase = "reading data"
        var byPack: [BlobID: [(BlobID, BlobLocation)]] = [:]
        var total = 0
        for blob in blobs {
            guard let loc = repository.index.location(of: blob) else { continue }
            byPack[loc.pack, default: []].append((blob, loc))
            total += Int(loc.length)
        }
        progress.bytesTotal.store(total, ordering: .relaxed)
        let damaged = Mutex<[(BlobID, String)]>([])
        let repository = self.repository
        let progress = self.progress
        // A damaged blob is a finding, not a failure: every blob is read whatever happens.
        try? WorkerThreads.forEach(Array(byPack.values), threads: workers, state: { BlobReader(repository: repository) }) { pack, reader in
            for (blob, loc) in pack.sorted(by: { $0.1.offset < $1.1.offset }) {
                do {
                    _ = try reader.read(blob, check: true)
                } catch {
                    damaged.withLock { $0.append((blob, "\(error)")) }
                }
                progress.bytesDone.add(Int(loc.length), ordering: .relaxed)
            }
        }
        return damaged.withLock { $0 }
    }
}

struct VerifyFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
