import SnapshotCore

/// One entry of `ls`.
public struct ListedEntry: Sendable, Codable, Equatable {
    public var path: String
    public var type: String
    public var mode: String
    public var size: UInt64
    public var mtime: String
}

/// One line of `diff`.
public struct DiffEntry: Sendable, Codable, Equatable {
    public enum Change: String, Sendable, Codable { case added, removed, modified }
    public var change: Change
    public var path: String
    public var size: UInt64
    public var oldSize: UInt64?

    enum CodingKeys: String, CodingKey {
        case change, path, size
        case oldSize = "old_size"
    }
}

/// Read-only views of snapshots: `ls`, `cat`, `diff`. Paths are `<component>/<path in it>`.
public struct Browser: Sendable {
    let repository: Repository

    public init(repository: Repository) {
        self.repository = repository
    }

    /// Every entry of a snapshot (or under `prefix`), in path order.
    public func list(_ manifest: SnapshotManifest, prefix: String? = nil) throws -> [ListedEntry] {
        let reader = BlobReader(repository: repository)
        var out: [ListedEntry] = []
        let clean = prefix.map { $0.split(separator: "/").joined(separator: "/") } ?? ""
        for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
            if !clean.isEmpty && !(clean == name || clean.hasPrefix(name + "/")) { continue }
            if clean.isEmpty || clean == name {
                out.append(ListedEntry(path: name, type: "dir", mode: Self.modeString(c.rootMode ?? 0o755, kind: .directory), size: 0, mtime: (c.rootMtime ?? Timestamp(seconds: 0)).iso8601))
            }
            try ComponentDigest.walk(c.treeID, prefix: name, loadTree: { id, path in try reader.readTree(id, path: path) }) { path, node in
                // Shown, and matched against the prefix, as `FileName.display` writes it.
                let path = FileName.display(path)
                if clean.isEmpty || path == clean || path.hasPrefix(clean + "/") || clean == name {
                    out.append(ListedEntry(path: path, type: node.kind.name, mode: Self.modeString(node.mode, kind: node.kind), size: node.size, mtime: node.mtime.iso8601))
                }
            }
        }
        if !clean.isEmpty && out.isEmpty {
            throw EngineError.pathNotInSnapshot(snapshot: manifest.snapshotID, path: clean)
        }
        return out
    }

    /// Finds the node at `<component>/<path>`.
    public func node(_ manifest: SnapshotManifest, path: String) throws -> Node {
        let parts = path.split(separator: "/").map(String.init)
        guard let first = parts.first, let c = manifest.components[first] else {
            throw EngineError.pathNotInSnapshot(snapshot: manifest.snapshotID, path: path)
        }
        let reader = BlobReader(repository: repository)
        var tree = try reader.readTree(c.treeID, path: first)
        var node: Node?
        for (i, part) in parts.dropFirst().enumerated() {
            guard let n = tree.nodes.first(where: { $0.name == part }) ?? tree.nodes.first(where: { FileName.display($0.name) == part }) else {
                throw EngineError.pathNotInSnapshot(snapshot: manifest.snapshotID, path: path)
            }
            node = n
            if i < parts.count - 2 {
                guard n.kind == .directory, let sub = n.subtree else {
                    throw EngineError.pathNotInSnapshot(snapshot: manifest.snapshotID, path: path)
                }
                tree = try reader.readTree(sub, path: path)
            }
        }
        guard let found = node else { throw EngineError.usage("\(path) is a component; name a file inside it") }
        return found
    }

    /// Streams a file's content to `sink`, chunk by chunk (each checked against its hash).
    public func cat(_ manifest: SnapshotManifest, path: String, sink: ([UInt8]) throws -> Void) throws {
        let node = try node(manifest, path: path)
        guard node.kind == .file else { throw EngineError.usage("\(path) is a \(node.kind.name), not a file") }
        let reader = BlobReader(repository: repository)
        for id in node.content { try sink(try reader.read(id)) }
    }

    private func signatures(_ manifest: SnapshotManifest) throws -> [String: (sig: String, size: UInt64)] {
        let reader = BlobReader(repository: repository)
        var out: [String: (sig: String, size: UInt64)] = [:]
        for (name, c) in manifest.components {
            try ComponentDigest.walk(c.treeID, prefix: name, loadTree: { id, path in try reader.readTree(id, path: path) }) { path, node in
                var sig = "\(node.kind.rawValue) \(node.mode) \(node.size) \(node.linkTarget)"
                for id in node.content { sig += id.short }
                out[path] = (sig, node.size)
            }
        }
        return out
    }

    /// Added, removed and modified paths from `old` to `new`, in path order. Metadata-only
    /// changes (mode, target) count as modified; mtime alone does not.
    public func diff(_ old: SnapshotManifest, _ new: SnapshotManifest) throws -> [DiffEntry] {
        let a = try signatures(old), b = try signatures(new)
        var out: [DiffEntry] = []
        for (path, nb) in b {
            if let na = a[path] {
                if na.sig != nb.sig { out.append(DiffEntry(change: .modified, path: FileName.display(path), size: nb.size, oldSize: na.size)) }
            } else {
                out.append(DiffEntry(change: .added, path: FileName.display(path), size: nb.size, oldSize: nil))
            }
        }
        for (path, na) in a where b[path] == nil {
            out.append(DiffEntry(change: .removed, path: FileName.display(path), size: na.size, oldSize: nil))
        }
        return out.sorted { $0.path < $1.path }
    }

    /// `drwxr-xr-x`-style mode.
    public static func modeString(_ mode: UInt32, kind: NodeKind) -> String {
        let t: Character = switch kind {
        case .directory: "d"
        case .symlink: "l"
        case .fifo: "p"
        case .socket: "s"
        case .charDevice: "c"
        case .blockDevice: "b"
        case .file: "-"
        }
        var s = String(t)
        let chars: [Character] = ["r", "w", "x"]
        for i in 0..<9 {
            s.append(mode & (1 << (8 - UInt32(i))) != 0 ? chars[i % 3] : "-")
        }
        return s
    }
}
