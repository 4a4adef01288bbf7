import Foundation
import SnapshotCore

/// `analyze --json`: where a snapshot's bytes are and what they cost.
public struct AnalyzeReport: Codable, Sendable, Equatable {
    public struct Component: Codable, Sendable, Equatable {
        public var name: String
        public var kind: ComponentKind
        public var files: Int
        /// Sum of the files' sizes.
        public var logicalBytes: UInt64
        /// Bytes its distinct chunks take in the store (compressed), counted once each.
        public var storedBytes: UInt64
        /// Plaintext bytes of its distinct chunks that the parent snapshot also has.
        public var sharedWithParentBytes: UInt64
        /// Stored / plaintext bytes of its distinct chunks.
        public var compressionRatio: Double

        enum CodingKeys: String, CodingKey {
            case name, kind, files
            case logicalBytes = "logical_bytes"
            case storedBytes = "stored_bytes"
            case sharedWithParentBytes = "shared_with_parent_bytes"
            case compressionRatio = "compression_ratio"
        }
    }

    public struct File: Codable, Sendable, Equatable {
        public var path: String
        public var size: UInt64
        /// Its size in the parent (0 when new), for growth.
        public var parentSize: UInt64?
        public var growth: Int64?

        enum CodingKeys: String, CodingKey {
            case path, size, growth
            case parentSize = "parent_size"
        }
    }

    public var snapshotID: String
    public var type: SnapshotType
    public var parent: String?
    public var components: [Component]
    public var largestFiles: [File]
    public var largestGrowth: [File]

    enum CodingKeys: String, CodingKey {
        case type, parent, components
        case snapshotID = "snapshot_id"
        case largestFiles = "largest_files"
        case largestGrowth = "largest_growth"
    }
}

extension SnapshotService {
    /// How many files and bytes each component holds, what its distinct chunks take in the
    /// store, how much it shares with its parent, its 20 largest files, and the 20 files that
    /// grew most since the parent (new files count from 0). Reads trees and the index only.
    public func analyze(_ options: AnalyzeOptions) throws -> AnalyzeReport {
        try options.validate()
        let (repository, lock) = try open(.shared, purpose: "analyze")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        let reader = BlobReader(repository: repository)
        func files(of manifest: SnapshotManifest) throws -> [String: [(path: String, node: Node)]] {
            var out: [String: [(String, Node)]] = [:]
            for (name, c) in manifest.components {
                var list: [(String, Node)] = []
                try ComponentDigest.walk(c.treeID, prefix: name, loadTree: { id, path in try reader.readTree(id, path: path) }) { path, node in
                    if node.kind == .file { list.append((path, node)) }
                }
                out[name] = list
            }
            return out
        }
        let manifest = try catalog.readManifest(record)
        let mine = try files(of: manifest)
        let parentRecord = record.metadata.parent.flatMap { try? catalog.resolve($0) }
        let theirs = try parentRecord.map { try files(of: catalog.readManifest($0)) } ?? [:]
        let parentBlobs = Set(theirs.values.flatMap { $0.flatMap(\.node.content) })
        let parentSizes = Dictionary(theirs.values.flatMap { $0.map { ($0.path, $0.node.size) } }, uniquingKeysWith: { a, _ in a })

        var components: [AnalyzeReport.Component] = []
        for (name, list) in mine.sorted(by: { $0.key < $1.key }) {
            var stored: UInt64 = 0, raw: UInt64 = 0, shared: UInt64 = 0
            for blob in Set(list.flatMap(\.node.content)) {
                guard let loc = repository.location(of: blob) else { continue }
                stored += UInt64(loc.length)
                raw += UInt64(loc.rawLength)
                if parentBlobs.contains(blob) { shared += UInt64(loc.rawLength) }
            }
            components.append(.init(
                name: name, kind: manifest.components[name]?.kind ?? .files, files: list.count, logicalBytes: list.reduce(0) { $0 + $1.node.size },
                storedBytes: stored, sharedWithParentBytes: shared,
                compressionRatio: raw > 0 ? (Double(stored) / Double(raw) * 1000).rounded() / 1000 : 1))
        }
        let all = mine.values.flatMap { $0 }
        let largest = all.sorted { ($0.node.size, $1.path) > ($1.node.size, $0.path) }.prefix(20)
            .map { AnalyzeReport.File(path: $0.path, size: $0.node.size) }
        var growth: [AnalyzeReport.File] = []
        if parentRecord != nil {
            growth = all.compactMap { f -> AnalyzeReport.File? in
                let before = parentSizes[f.path] ?? 0
                guard f.node.size > before else { return nil }
                return AnalyzeReport.File(path: f.path, size: f.node.size, parentSize: before, growth: Int64(f.node.size - before))
            }.sorted { ($0.growth ?? 0, $1.path) > ($1.growth ?? 0, $0.path) }.prefix(20).map { $0 }
        }
        return AnalyzeReport(snapshotID: record.id, type: record.type, parent: parentRecord?.id, components: components,
                             largestFiles: Array(largest), largestGrowth: growth)
    }
}
