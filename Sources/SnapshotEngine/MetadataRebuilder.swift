#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// `rebuild-metadata --json`.
public struct RebuildReport: Codable, Sendable, Equatable {
    /// Packs whose trailers were read into the new index, and the blobs they list.
    public var packs: Int = 0
    public var blobs: Int = 0
    /// Packs whose trailer could not be read: their blobs stay unindexed.
    public var damagedPacks: [String] = []
    /// Index files replaced by the rebuilt one.
    public var replacedIndexFiles: Int = 0
    /// Snapshot directories recreated from manifest blobs (`type/id`).
    public var recreated: [String] = []
    /// metadata.json and manifest.json files written anew (`type/id/metadata.json`).
    public var rebuilt: [String] = []
    /// What was done to the repository's config file and its copy.
    public var config: [String] = []

    enum CodingKeys: String, CodingKey {
        case packs, blobs, recreated, rebuilt, config
        case damagedPacks = "damaged_packs"
        case replacedIndexFiles = "replaced_index_files"
    }
}

extension SnapshotService {
    /// Rebuilds what can be derived from the packs, which describe themselves: the index from
    /// every pack's trailer (one new index file, written atomically before the old ones are
    /// removed), every snapshot directory whose manifest.json is gone from the manifest blobs
    /// in the packs, every missing or unreadable metadata.json from its manifest (counts,
    /// sizes and checksums recomputed from the trees; the name, tags, timings and parent are
    /// not recoverable and are left empty, with a `rebuilt` tag), and every `latest` link.
    /// With `snapshot`, only that snapshot's metadata.json. Each step is atomic: a kill
    /// leaves a repository that verifies and a rebuild that can be run again.
    public func rebuildMetadata(_ options: RebuildOptions, progress: WorkProgress = WorkProgress()) throws -> RebuildReport {
        var report = RebuildReport()
        guard Repository.exists(at: repositoryPath) else { throw RepositoryError.notFound(path: repositoryPath) }
        let lock = try RepositoryLock(storePath: repositoryPath + "/.store", mode: .exclusive, purpose: "rebuild-metadata", wait: lockWait)
        defer { lock.release() }
        let opened: Repository
        do {
            opened = try Repository.open(at: repositoryPath, keyring: keyring)
        } catch RepositoryError.corrupt(let file, _) where file == repositoryPath + "/.store/config" {
            // The config and its copy are both lost: a new one (new chunker seed) opens the
            // repository again; every blob is still found by its hash.
            _ = try Repository.replaceLostConfig(at: repositoryPath)
            report.config.append("\(file) and its copy were lost: wrote a new config (new content-defined chunks will not deduplicate against older ones)")
            opened = try Repository.open(at: repositoryPath, keyring: keyring)
        }
        for file in try opened.rewriteConfigFiles() { report.config.append("wrote \(file) from the intact config") }
        progress.note("exclusive lock for rebuild-metadata taken; the index names \(opened.index.count) blobs, \(opened.damagedIndexFiles.count) index files set aside")
        if let reference = options.snapshot {
            let (type, id, directory, _, _) = try locate(reference)
            let manifest = try catalog.readManifest(directory: directory)
            let metadata = try Self.rebuiltMetadata(manifest, manifestBlob: opened.blobID(try catalog.manifestPlaintext(directory: directory)), repository: opened)
            try POSIX.writeFileAtomically(directory + "/metadata.json", try catalog.metadataBytes(metadata), mode: RepositoryModes.snapshotFile)
            try catalog.updateLatest(type: type)
            report.rebuilt.append("\(type)/\(id)/metadata.json")
            return report
        }

        progress.phase = "reading pack trailers"
        var packs: [(pack: BlobID, entries: [PackEntry])] = []
        let data = repositoryPath + "/.store/data"
        for dir in try POSIX.listDirectory(data).sorted() where POSIX.isDirectory(data + "/" + dir) {
            for name in try POSIX.listDirectory(data + "/" + dir).sorted() where !name.contains(".tmp") {
                guard let pack = BlobID(hex: name) else { continue }
                do {
                    packs.append((pack, try PackFormat.readTrailer(path: data + "/\(dir)/\(name)")))
                } catch let e as RepositoryError {
                    guard case .corrupt = e else { throw e }
                    report.damagedPacks.append("\(e)")
                }
            }
        }
        report.packs = packs.count
        report.blobs = packs.reduce(0) { $0 + $1.entries.count }
        progress.phase = "writing index"
        let old = try opened.indexFileNames()
        try opened.writeIndex(packs)
        for name in old { try opened.removeIndexFile(name) }
        report.replacedIndexFiles = old.count

        progress.phase = "rebuilding snapshots"
        let repository = try Repository.open(at: repositoryPath, keyring: keyring)
        let reader = BlobReader(repository: repository)
        var types = Set(try catalog.types())
        for (id, location) in repository.index.allLocations() where location.type == .manifest {
            guard let bytes = try? reader.read(id), let manifest = try? JSONDecoder().decode(SnapshotManifest.self, from: Data(bytes)),
                let type = SnapshotType(manifest.type), SnapshotCatalog.isValidID(manifest.snapshotID)
            else { continue }
            let typeDir = repositoryPath + "/" + type.name
            let directory = typeDir + "/" + manifest.snapshotID
            let metadataReadable = (try? catalog.readMetadata(directory + "/metadata.json")) != nil
            let manifestReadable = (try? catalog.readManifest(directory: directory)) != nil
            if manifestReadable && metadataReadable { continue }
            if POSIX.isDirectory(directory) && (manifestReadable || metadataReadable) {
                // One of the two files survives: the other is written anew beside it.
                if !manifestReadable {
                    try POSIX.writeFileAtomically(directory + "/manifest.json", try catalog.manifestBytes(plain: bytes), mode: RepositoryModes.snapshotFile)
                    report.rebuilt.append("\(type)/\(manifest.snapshotID)/manifest.json")
                } else {
                    let metadata = try Self.rebuiltMetadata(manifest, manifestBlob: id, repository: repository)
                    try POSIX.writeFileAtomically(directory + "/metadata.json", try catalog.metadataBytes(metadata), mode: RepositoryModes.snapshotFile)
                    report.rebuilt.append("\(type)/\(manifest.snapshotID)/metadata.json")
                }
            } else {
                let metadata = try Self.rebuiltMetadata(manifest, manifestBlob: id, repository: repository)
                // As create commits: both files in a hidden directory, then one rename.
                let staging = typeDir + "/.tmp-" + manifest.snapshotID
                try POSIX.removeTree(staging)
                try POSIX.makeDirectories(staging, mode: RepositoryModes.directory)
                try POSIX.writeFileAtomically(staging + "/manifest.json", try catalog.manifestBytes(plain: bytes), mode: RepositoryModes.snapshotFile)
                try POSIX.writeFileAtomically(staging + "/metadata.json", try catalog.metadataBytes(metadata), mode: RepositoryModes.snapshotFile)
                try? POSIX.removeTree(directory)  // an empty or half-deleted leftover
                guard rename(staging, directory) == 0 else { throw RepositoryError.fromErrno(path: directory, operation: "rename") }
                try POSIX.syncDirectory(typeDir)
                report.recreated.append("\(type)/\(manifest.snapshotID)")
            }
            types.insert(type)
        }
        for type in types { try catalog.updateLatest(type: type) }
        report.recreated.sort()
        report.rebuilt.sort()
        return report
    }

    /// A component's file count, logical bytes and checksum, from its trees: what
    /// metadata.json says of a component that rebuild, repair or sanitize writes anew.
    static func totals(of root: BlobID, component name: String, reader: BlobReader) throws -> (files: Int, bytes: UInt64, checksum: String) {
        let s = try ComponentDigest.summarize(root: root) { id, path in try reader.readTree(id, path: path.isEmpty ? name : name + "/" + path) }
        return (s.files, s.bytes, s.digest)
    }

    /// metadata.json for a snapshot known only by its manifest.
    static func rebuiltMetadata(_ manifest: SnapshotManifest, manifestBlob: BlobID, repository: Repository) throws -> SnapshotMetadata {
        let reader = BlobReader(repository: repository)
        var components: [String: ComponentSummary] = [:]
        var checksums: [String: String] = [:]
        var total: UInt64 = 0
        for (name, c) in manifest.components {
            let t = try Self.totals(of: c.treeID, component: name, reader: reader)
            checksums[name] = t.checksum
            components[name] = ComponentSummary(kind: c.kind, source: c.source, files: t.files, bytes: t.bytes)
            total += t.bytes
        }
        let time = SnapshotCatalog.time(ofID: manifest.snapshotID) ?? Timestamp.now()
        return SnapshotMetadata(
            snapshotID: manifest.snapshotID, timestamp: time.iso8601, type: manifest.type, name: "", components: components,
            checksums: checksums, sizeBytes: total, storedBytes: 0, compressionRatio: 1, durationS: 0, parent: nil,
            hostname: "", tags: ["rebuilt": Timestamp.now().iso8601], auto: false, manifest: manifestBlob.hex)
    }
}
