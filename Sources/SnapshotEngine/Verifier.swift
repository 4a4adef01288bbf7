#if canImport(Glibc)
import Glibc
#endif
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

/// `verify --json`: `{"ok", "snapshots":[…], "repository_errors":[…]}`. Repository errors
/// are damage that no snapshot's data suffers from (yet): a pack whose trailer — the list
/// the index can be rebuilt from — is damaged while its blobs still read back.
public struct VerifyReport: Sendable, Codable, Equatable {
    public var ok: Bool
    public var snapshots: [SnapshotVerification]
    public var repositoryErrors: [String] = []
    /// Not damage: repository files open to more users than they should be.
    public var warnings: [String] = []

    enum CodingKeys: String, CodingKey {
        case ok, snapshots, warnings
        case repositoryErrors = "repository_errors"
    }
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
    private let resource = Mutex<RepositoryError?>(nil)

    /// The first resource error (EMFILE, ENOMEM, EIO…) met while verifying: the report is
    /// then incomplete, and the caller must fail with it (exit 74), not report damage.
    public var resourceError: RepositoryError? { resource.withLock { $0 } }

    /// True (and remembered) when `error` is the machine's failure rather than damage.
    private func isResource(_ error: any Error) -> Bool {
        guard let e = error as? RepositoryError, e.isResourceError else { return false }
        resource.withLock { if $0 == nil { $0 = e } }
        return true
    }

    public init(repository: Repository, progress: WorkProgress = WorkProgress(), workers: Int = 2) {
        self.repository = repository
        self.progress = progress
        self.workers = workers
    }

    /// `verify`, failing with the resource error, if one stopped part of the check.
    public func verifyOrFail(_ records: [SnapshotRecord], component: String? = nil, readData: Bool, packs: Set<BlobID>? = nil) throws -> VerifyReport {
        let report = verify(records, component: component, readData: readData, packs: packs)
        if let failure = resourceError { throw failure }
        return report
    }

    /// With `packs`, `readData` reads only the blobs in those packs (and checks their
    /// trailers): the monitor's rolling share of the data.
    public func verify(_ records: [SnapshotRecord], component: String? = nil, readData: Bool, packs: Set<BlobID>? = nil) -> VerifyReport {
        let catalog = SnapshotCatalog(repository: repository)
        let reader = BlobReader(repository: repository)
        var results: [SnapshotVerification] = []
        var toRead = Set<BlobID>()
        progress.phase = "checking trees"
        progress.filesTotal.store(records.count, ordering: .relaxed)
        var packsPresent: [BlobID: Bool] = [:]
        for record in records {
            var errors: [String] = []
            defer {
                results.append(SnapshotVerification(snapshotID: record.id, ok: errors.isEmpty, errors: errors))
                progress.filesDone.add(1, ordering: .relaxed)
            }
            let manifest: SnapshotManifest
            do {
                manifest = try catalog.readManifest(record)
            } catch where isResource(error) {
                continue
            } catch {
                errors.append("\(error)")
                continue
            }
            if let component, manifest.components[component] == nil {
                continue  // nothing of it to check here (the service refuses a snapshot without it)
            }
            for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
                if let component, name != component { continue }
                do {
                    let digest = try ComponentDigest.compute(root: c.treeID, version: record.metadata.checksumVersion) { id, path in
                        let t = try reader.readTree(id, path: path.isEmpty ? name : name + "/" + path)
                        do {
                            for node in t.nodes where node.kind == .file {
                                let file = name + "/" + (path.isEmpty ? node.name : path + "/" + node.name)
                                for blob in node.content {
                                    guard let loc = repository.location(of: blob) else {
                                        throw VerifyFailure("file \(file): content blob \(blob.short) missing from the index")
                                    }
                                    if packsPresent[loc.pack] == nil {
                                        packsPresent[loc.pack] = try repository.packExists(loc.pack)
                                    }
                                    if packsPresent[loc.pack] == false {
                                        throw VerifyFailure("file \(file): pack \(loc.pack.short) missing")
                                    }
                                    if readData { toRead.insert(blob) }
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
                } catch where isResource(error) {
                    continue
                } catch {
                    errors.append("component \(name): \(error)")
                }
            }
        }
        var packErrors: [String] = []
        if readData {
            let (damagedBlobs, badPacks) = readAllData(Array(toRead), packs: packs)
            packErrors = badPacks
            let damaged = Dictionary(damagedBlobs, uniquingKeysWith: { a, _ in a })
            if !damaged.isEmpty {
                // Every file of every snapshot that uses a damaged blob, however many share it.
                progress.phase = "naming damaged files"
                for (i, record) in records.enumerated() {
                    guard let manifest = try? catalog.readManifest(record) else { continue }
                    for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) where component == nil || name == component {
                        try? ComponentDigest.walk(c.treeID, prefix: name, loadTree: { id, path in try reader.readTree(id, path: path) }) { path, node in
                            guard node.kind == .file, let message = node.content.lazy.compactMap({ damaged[$0] }).first else { return }
                            results[i].errors.append("file \(path): \(message)")
                            results[i].ok = false
                        }
                    }
                }
            }
        }
        progress.phase = "done"
        return VerifyReport(ok: results.allSatisfy(\.ok) && packErrors.isEmpty, snapshots: results, repositoryErrors: packErrors)
    }

    /// Reads every blob once, pack by pack, and checks each pack's trailer against the index;
    /// returns the damaged blobs with what is wrong, and the packs whose trailer is damaged.
    private func readAllData(_ blobs: [BlobID], packs only: Set<BlobID>?) -> (blobs: [(BlobID, String)], packs: [String]) {
        progress.phase = "reading data"
        let wanted = Set(blobs)
        // Every pack the index names: its trailer is checked against all its index entries
        // (tree-only packs included); its content blobs that snapshots use are read.
        let byPack = Dictionary(grouping: repository.index.allLocations().map { ($0.key, $0.value) }.filter { only?.contains($0.1.pack) ?? true }, by: { $0.1.pack })
        let work = byPack.map { (pack: $0.key, indexed: $0.value, toRead: $0.value.filter { wanted.contains($0.0) }) }
        progress.bytesTotal.store(work.reduce(0) { $0 + $1.toRead.reduce(0) { $0 + Int($1.1.length) } }, ordering: .relaxed)
        let damaged = Mutex<[(BlobID, String)]>([])
        let badPacks = Mutex<[String]>([])
        let repository = self.repository
        let progress = self.progress
        // A damaged blob is a finding, not a failure: every blob is read whatever happens.
        try? WorkerThreads.forEach(work, threads: workers, state: { BlobReader(repository: repository) }) { item, reader in
            do {
                if try repository.packExists(item.pack), let problem = try Self.checkTrailer(repository, pack: item.pack, indexed: item.indexed) {
                    badPacks.withLock { $0.append(problem) }
                }
            } catch {
                _ = self.isResource(error)  // out of descriptors or memory: not damage
            }
            // Decoded one by one, checked against their ids two at a time (BlobID.hashPair).
            var waiting: (id: BlobID, location: BlobLocation, data: [UInt8])?
            var trail = PackReadTrail(repository: repository)
            defer { trail.release() }
            for (blob, loc) in item.toRead.sorted(by: { $0.1.offset < $1.1.offset }) {
                trail.reading(loc)
                do {
                    let data = try reader.read(blob, at: loc, check: false)
                    if let w = waiting {
                        waiting = nil
                        let (a, b) = w.data.withUnsafeBytes { a in data.withUnsafeBytes { b in repository.blobIDs(a, b) } }
                        if a != w.id { damaged.withLock { $0.append((w.id, "\(reader.mismatch(w.id, at: w.location))")) } }
                        if b != blob { damaged.withLock { $0.append((blob, "\(reader.mismatch(blob, at: loc))")) } }
                    } else {
                        waiting = (blob, loc, data)
                    }
                } catch where self.isResource(error) {
                    continue
                } catch {
                    damaged.withLock { $0.append((blob, "\(error)")) }
                }
                progress.bytesDone.add(Int(loc.length), ordering: .relaxed)
            }
            if let w = waiting, (w.data.withUnsafeBytes { repository.blobID($0) }) != w.id {
                damaged.withLock { $0.append((w.id, "\(reader.mismatch(w.id, at: w.location))")) }
            }
        }
        return (damaged.withLock { $0 }, badPacks.withLock { $0 }.sorted())
    }

    /// What is wrong with a pack's trailer, or nil: it must decode (magic, version,
    /// checksum), list entries that follow each other from offset 0 up to the trailer itself
    /// (nothing appended, nothing missing), and agree with every index entry of the pack.
    /// A resource error (EMFILE, EIO…) is thrown, never reported as damage.
    static func checkTrailer(_ path: String, indexed: [(BlobID, BlobLocation)]) throws -> String? {
        try checkTrailer(path, indexed: indexed, entries: { try PackFormat.readTrailer(path: path) }) {
            var st = stat()
            return stat(path, &st) == 0 ? Int(st.st_size) : nil
        }
    }

    /// The same for a pack of any repository (a ranged read of an object store's).
    static func checkTrailer(_ repository: Repository, pack: BlobID, indexed: [(BlobID, BlobLocation)]) throws -> String? {
        if repository.isLocal { return try checkTrailer(repository.packPath(pack), indexed: indexed) }
        return try checkTrailer(repository.packPath(pack), indexed: indexed, entries: { try repository.readTrailer(pack) }) {
            try repository.packSize(pack)
        }
    }

    static func checkTrailer(_ path: String, indexed: [(BlobID, BlobLocation)], entries read: () throws -> [PackEntry], size: () throws -> Int?) throws -> String? {
        let entries: [PackEntry]
        do {
            entries = try read()
        } catch let e as RepositoryError where e.isResourceError {
            throw e
        } catch {
            return "\(error); its blobs still read back, but the index could not be rebuilt from it"
        }
        var expectedOffset: UInt32 = 0
        for e in entries.sorted(by: { $0.offset < $1.offset }) {
            guard e.offset == expectedOffset else {
                return "damaged repository file \(path): pack trailer entries do not follow each other (an entry at \(e.offset), expected \(expectedOffset))"
            }
            expectedOffset = e.offset &+ e.length
        }
        if let size = try size(), size != Int(expectedOffset) + entries.count * PackFormat.entrySize + 32 + PackFormat.footerSize {
            return "damaged repository file \(path): \(size) bytes where the trailer accounts for \(Int(expectedOffset) + entries.count * PackFormat.entrySize + 32 + PackFormat.footerSize)"
        }
        let byID = Dictionary(entries.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for (blob, loc) in indexed {
            guard let e = byID[blob], e.offset == loc.offset, e.length == loc.length, e.type == loc.type, e.rawLength == loc.rawLength else {
                return "damaged repository file \(path): the pack trailer does not list blob \(blob.short) where the index has it"
            }
        }
        return nil
    }
}

struct VerifyFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
