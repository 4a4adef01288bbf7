import Synchronization

/// The per-component checksum in metadata.json (`sha256:<hex>`), which `verify` recomputes
/// from the trees alone. Two versions (docs/design.md, "Component checksum"):
///
/// - 1 (metadata `version` "1"): a SHA-256 over a canonical listing of the component's
///   entries in path order — kind, path, size, and the content chunk ids of files or the
///   target of symlinks.
/// - 2 (metadata `version` "2", every snapshot taken since continuous snapshots came): the
///   same facts per directory, each directory's line naming its own digest (a Merkle tree),
///   so that a digest is a function of one tree id and an unchanged directory's is not
///   recomputed.
///
/// Chunk ids are hashes of the content, so either binds every byte.
public enum ComponentDigest {
    /// The version new snapshots are written with.
    public static let currentVersion = 2

    /// Digests the component whose root tree is `root`.
    public static func compute(root: BlobID, version: Int = currentVersion, loadTree: (BlobID, String) throws -> Tree) throws -> String {
        try summarize(root: root, version: version, loadTree: loadTree).digest
    }

    /// The checksum, and the files and bytes the component holds (counted in the same walk).
    /// `cache` (version 2) keeps each tree's digest and counts by tree id across calls.
    public static func summarize(root: BlobID, version: Int = currentVersion, cache: DigestCache? = nil, loadTree: (BlobID, String) throws -> Tree) throws -> (digest: String, files: Int, bytes: UInt64) {
        guard version == 1 else {
            let e = try treeDigest(root, path: "", cache: cache ?? DigestCache(), loadTree: loadTree)
            return ("sha256:" + e.digest.hex, e.files, e.bytes)
        }
        return try linear(root: root, loadTree: loadTree)
    }

    /// Version 2 of one tree: SHA-256 over one line per entry, in name order:
    /// `<kind> <name byte count>:<name> <size>` then ` <chunk id>` per chunk for files,
    /// ` -> <target>` for symlinks, ` <digest of the subtree>` for directories, then `\n`.
    public static func treeDigest(_ id: BlobID, path: String, cache: DigestCache, loadTree: (BlobID, String) throws -> Tree) throws -> DigestCache.Entry {
        if let e = cache[id] { return e }
        let e = try entry(of: try loadTree(id, path), path: path) { sub, subPath in
            try treeDigest(sub, path: subPath, cache: cache, loadTree: loadTree)
        }
        cache[id] = e
        return e
    }

    /// The version 2 digest and counts of `tree` (at `path`), given those of its subtrees:
    /// a writer that builds trees bottom-up digests each as it stores it.
    public static func entry(of tree: Tree, path: String, subtree: (BlobID, String) throws -> DigestCache.Entry) rethrows -> DigestCache.Entry {
        var out: [UInt8] = []
        out.reserveCapacity(tree.nodes.count * 120)
        var files = 0
        var bytes: UInt64 = 0
        for node in tree.nodes {
            out.append(contentsOf: node.kind.name.utf8)
            out.append(0x20)
            out.append(contentsOf: String(node.name.utf8.count).utf8)
            out.append(0x3a)
            out.append(contentsOf: node.name.utf8)
            out.append(0x20)
            out.append(contentsOf: String(node.size).utf8)
            switch node.kind {
            case .file:
                files += 1
                bytes += node.size
                for c in node.content {
                    out.append(0x20)
                    c.appendHex(to: &out)
                }
            case .symlink:
                out.append(contentsOf: " -> ".utf8)
                out.append(contentsOf: node.linkTarget.utf8)
            case .directory:
                if let sub = node.subtree {
                    let e = try subtree(sub, path.isEmpty ? node.name : path + "/" + node.name)
                    files += e.files
                    bytes += e.bytes
                    out.append(0x20)
                    e.digest.appendHex(to: &out)
                }
            default:
                break
            }
            out.append(0x0a)
        }
        return DigestCache.Entry(digest: BlobID.hash(out), files: files, bytes: bytes)
    }

    static func linear(root: BlobID, loadTree: (BlobID, String) throws -> Tree) throws -> (digest: String, files: Int, bytes: UInt64) {
        var stream = SHA256Stream()
        var files = 0
        var bytes: UInt64 = 0
        try walk(root, prefix: "", loadTree: loadTree) { path, node in
            if node.kind == .file {
                files += 1
                bytes += node.size
            }
            var line = "\(node.kind.name) \(path) \(node.size)"
            switch node.kind {
            case .file:
                for id in node.content { line += " " + id.hex }
            case .symlink:
                line += " -> " + node.linkTarget
            default:
                break
            }
            line += "\n"
            stream.update(line)
        }
        return ("sha256:" + stream.finish().hex, files, bytes)
    }

    /// Visits every node under a tree in pre-order with its path relative to the root.
    public static func walk(_ tree: BlobID, prefix: String, loadTree: (BlobID, String) throws -> Tree, visit: (String, Node) throws -> Void) throws {
        let t = try loadTree(tree, prefix)
        for node in t.nodes {
            let path = prefix.isEmpty ? node.name : prefix + "/" + node.name
            try visit(path, node)
            if node.kind == .directory, let sub = node.subtree {
                try walk(sub, prefix: path, loadTree: loadTree, visit: visit)
            }
        }
    }
}

/// Version 2 digests and counts by tree id, so that a process taking snapshot after snapshot
/// of the same tree (a continuous watch) digests only the directories that changed. Bounded:
/// past `limit` entries it starts over (the next digest reads every tree once).
public final class DigestCache: Sendable {
    public struct Entry: Sendable {
        public init(digest: BlobID, files: Int, bytes: UInt64) {
            self.digest = digest
            self.files = files
            self.bytes = bytes
        }

        public var digest: BlobID
        public var files: Int
        public var bytes: UInt64
    }

    private let entries = Mutex<[BlobID: Entry]>([:])
    public let limit: Int

    public init(limit: Int = 100_000) { self.limit = limit }

    public var count: Int { entries.withLock { $0.count } }

    public subscript(id: BlobID) -> Entry? {
        get { entries.withLock { $0[id] } }
        set {
            entries.withLock {
                if $0.count >= limit { $0.removeAll(keepingCapacity: true) }
                $0[id] = newValue
            }
        }
    }
}
