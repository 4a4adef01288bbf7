import Foundation
import SnapshotCore

/// Options of `sanitize`.
public struct SanitizeOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String = ""
    public var removePII: Bool = false
    public var anonymize: Bool = false
    /// Only these components (all when empty).
    public var component: [String] = []

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case snapshot, anonymize, component
        case removePII = "remove_pii"
    }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public func validate() throws {
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
        guard removePII != anonymize else { throw EngineError.usage("give either --remove-pii or --anonymize") }
    }
}

extension SnapshotService {
    /// Files larger than this are kept as they are (sanitizing reads a text file whole).
    static let sanitizeLimit = 64 << 20

    /// A new `sanitized` snapshot of REF's components (or the chosen ones) in which every text
    /// file has had personal data and secrets removed or pseudonymised (see `Sanitizer`);
    /// binary files (a NUL byte, or not UTF-8) and files over 64 MiB are kept unchanged.
    /// It has REF's time (id `<REF>-2`), `sanitized_from` and the counts per rule, and is
    /// never `latest`; REF is untouched.
    public func sanitize(_ options: SanitizeOptions, progress: WorkProgress = WorkProgress()) throws -> SnapshotRecord {
        try options.validate()
        let (repository, lock) = try open(.exclusive, purpose: "sanitize")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        let manifest = try catalog.readManifest(record)
        for name in options.component where manifest.components[name] == nil {
            throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
        }
        let sanitizer = try Sanitizer(mode: options.anonymize ? .anonymize : .remove, secret: try sanitizeSecret(repository),
                                      extraPatterns: config.sanitizePatterns, extraKeys: config.sanitizeKeys)
        let reader = BlobReader(repository: repository)
        let writer = repository.makeBlobWriter(compressionLevel: config.compressionLevel)
        var counts: [String: Int] = [:]
        var changedFiles = 0

        func sanitizeTree(_ id: BlobID, path: String) throws -> BlobID {
            let tree = try reader.readTree(id, path: path)
            var nodes: [Node] = []
            for var node in tree.nodes {
                let child = path + "/" + node.name
                if let sub = node.subtree {
                    node.subtree = try sanitizeTree(sub, path: child)
                } else if node.kind == .file, node.size <= UInt64(Self.sanitizeLimit), !node.content.isEmpty {
                    var bytes: [UInt8] = []
                    for blob in node.content { bytes += try reader.read(blob) }
                    if !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) {
                        let (clean, found) = sanitizer.apply(text)
                        if !found.isEmpty {
                            for (rule, n) in found { counts[rule, default: 0] += n }
                            changedFiles += 1
                            progress.note("\(child): " + found.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
                            let out = Array(clean.utf8)
                            let chunker = Chunker(scheme: repository.config.chunkingPolicy.scheme(forFileNamed: node.name), seed: repository.config.chunkerSeed)
                            node.content = try writer.storeChunks(out, chunker: chunker)
                            node.size = UInt64(out.count)
                        }
                    }
                }
                nodes.append(node)
            }
            return nodes == tree.nodes ? id : try writer.store(Tree(nodes: nodes).encode(), type: .tree)
        }

        progress.phase = "sanitizing"
        var components: [String: ManifestComponent] = [:]
        for name in (options.component.isEmpty ? manifest.components.keys.sorted() : options.component) {
            var c = manifest.components[name]!
            c.treeID = try sanitizeTree(c.treeID, path: name)
            components[name] = c
        }
        try writer.flush()
        var summaries: [String: ComponentSummary] = [:]
        var checksums: [String: String] = [:]
        var logical: UInt64 = 0
        for (name, c) in components {
            let t = try Self.totals(of: c.treeID, component: name, reader: reader)
            let old = record.metadata.components[name]
            summaries[name] = ComponentSummary(kind: c.kind, source: c.source, files: t.files, bytes: t.bytes, skipped: old?.skipped ?? [], details: old?.details ?? ComponentDetails())
            checksums[name] = t.checksum
            logical += t.bytes
        }
        progress.phase = "committing"
        let time = Timestamp(iso8601: record.metadata.timestamp) ?? Timestamp.now()
        let id = try catalog.allocateID(at: time)
        let newManifest = SnapshotManifest(snapshotID: id, type: SnapshotType.sanitized.name, components: components)
        let manifestID = try writer.store(Array(try JSONEncoder.snapshot.encode(newManifest)), type: .manifest)
        try writer.flush()
        try repository.commitIndex()
        var metadata = SnapshotMetadata(
            snapshotID: id, timestamp: record.metadata.timestamp, type: SnapshotType.sanitized.name, name: "", components: summaries,
            checksums: checksums, sizeBytes: logical, storedBytes: UInt64(writer.newStoredBytes),
            compressionRatio: writer.newRawBytes > 0 ? (Double(writer.newStoredBytes) / Double(writer.newRawBytes) * 1000).rounded() / 1000 : 1,
            durationS: 0, parent: nil, hostname: record.metadata.hostname, tags: record.metadata.tags, auto: false, manifest: manifestID.hex)
        metadata.sanitizedFrom = record.id
        metadata.sanitized = counts
        metadata.summary = record.metadata.summary
        progress.note("\(changedFiles) files changed: " + counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
        progress.phase = "done"
        return try catalog.commit(metadata: metadata, manifest: newManifest)
    }

    /// The key of the pseudonyms: in an encrypted repository derived from its keys, otherwise
    /// `.store/sanitize.key`, made at the first use (owner-only).
    func sanitizeSecret(_ repository: Repository) throws -> [UInt8] {
        if let keys = repository.keys {
            return Array("sanitize pseudonyms".utf8).withUnsafeBytes { Crypto.hmac($0, key: keys.ids) }.bytes
        }
        let path = repository.storePath + "/sanitize.key"
        if let existing = try? POSIX.readFile(path), existing.count == 32 { return existing }
        let secret = Crypto.random(32)
        try POSIX.writeFileAtomically(path, secret)
        return secret
    }
}
