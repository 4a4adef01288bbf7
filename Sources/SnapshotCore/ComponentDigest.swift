/// The per-component checksum in metadata.json (`sha256:<hex>`): a SHA-256 over a canonical
/// listing of the component's entries in path order — kind, path, size, and the content chunk
/// ids of files or the target of symlinks. Chunk ids are SHA-256s of the content, so the
/// digest binds every byte, and `verify` can recompute it from the trees alone.
public enum ComponentDigest {
    /// Walks the trees under `root` (pre-order, entries by name) and digests them.
    public static func compute(root: BlobID, loadTree: (BlobID, String) throws -> Tree) throws -> String {
        var stream = SHA256Stream()
        try walk(root, prefix: "", loadTree: loadTree) { path, node in
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
        return "sha256:" + stream.finish().hex
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
