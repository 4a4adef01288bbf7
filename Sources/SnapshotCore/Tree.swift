/// The kind of a file system entry.
public enum NodeKind: UInt8, Sendable, Codable {
    case file = 0
    case directory = 1
    case symlink = 2
    case fifo = 3
    case socket = 4
    case charDevice = 5
    case blockDevice = 6

    public var name: String {
        switch self {
        case .file: return "file"
        case .directory: return "dir"
        case .symlink: return "symlink"
        case .fifo: return "fifo"
        case .socket: return "socket"
        case .charDevice: return "chardev"
        case .blockDevice: return "blockdev"
        }
    }
}

/// One entry of a directory in a snapshot: its metadata and where its content is.
public struct Node: Sendable, Equatable {
    public var name: String
    public var kind: NodeKind
    /// Permission bits and set-id/sticky bits (no file type bits).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Timestamp
    public var ctime: Timestamp
    public var inode: UInt64
    public var device: UInt64
    /// Number of hard links to the inode at capture time; >1 marks a hardlink group.
    public var links: UInt32
    /// Logical size (files), 0 for others.
    public var size: UInt64
    /// The file had holes (fewer allocated blocks than its size).
    public var sparse: Bool
    /// Files: content chunks in order.
    public var content: [BlobID]
    /// Directories: the tree blob of the directory's entries.
    public var subtree: BlobID?
    /// Symlinks: the link target, verbatim.
    public var linkTarget: String
    /// Device nodes: the device number.
    public var rdev: UInt64
    /// Extended attributes, sorted by name: `user.*`, `trusted.*` (as root), `security.*`
    /// (file capabilities) and the POSIX ACLs (`system.posix_acl_access`/`_default`).
    public var xattrs: [Xattr]

    public init(name: String, kind: NodeKind) {
        self.name = name
        self.kind = kind
        mode = 0
        uid = 0
        gid = 0
        mtime = Timestamp(seconds: 0)
        ctime = Timestamp(seconds: 0)
        inode = 0
        device = 0
        links = 1
        size = 0
        sparse = false
        content = []
        subtree = nil
        linkTarget = ""
        rdev = 0
        xattrs = []
    }
}

/// One extended attribute of a node.
public struct Xattr: Sendable, Equatable {
    public var name: String
    public var value: [UInt8]

    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// A directory listing, stored as a tree blob. Nodes are sorted by name (byte order), so
/// equal directories give equal blobs and are stored once.
public struct Tree: Sendable, Equatable {
    public var nodes: [Node]

    public init(nodes: [Node]) {
        self.nodes = nodes.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// Version 1 has no extended attributes; a tree with any is written as version 2, which
    /// appends them to every node. A tree without any keeps version 1 bytes (and so its id).
    static let version: UInt8 = 1
    static let versionWithXattrs: UInt8 = 2

    /// The tree blob's bytes (format in docs/design.md, "Trees").
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 64 + nodes.count * 96)
        let withXattrs = nodes.contains { !$0.xattrs.isEmpty }
        w.u8(withXattrs ? Tree.versionWithXattrs : Tree.version)
        w.uvarint(UInt64(nodes.count))
        for n in nodes {
            w.string(n.name)
            w.u8(n.kind.rawValue)
            w.uvarint(UInt64(n.mode))
            w.uvarint(UInt64(n.uid))
            w.uvarint(UInt64(n.gid))
            w.varint(n.mtime.seconds)
            w.uvarint(UInt64(n.mtime.nanoseconds))
            w.varint(n.ctime.seconds)
            w.uvarint(UInt64(n.ctime.nanoseconds))
            w.uvarint(n.inode)
            w.uvarint(n.device)
            w.uvarint(UInt64(n.links))
            w.uvarint(n.size)
            w.u8(n.sparse ? 1 : 0)
            switch n.kind {
            case .file:
                w.uvarint(UInt64(n.content.count))
                for id in n.content { w.id(id) }
            case .directory:
                w.id(n.subtree!)
            case .symlink:
                w.string(n.linkTarget)
            case .charDevice, .blockDevice:
                w.uvarint(n.rdev)
            case .fifo, .socket:
                break
            }
            if withXattrs {
                w.uvarint(UInt64(n.xattrs.count))
                for x in n.xattrs {
                    w.string(x.name)
                    w.uvarint(UInt64(x.value.count))
                    w.raw(x.value)
                }
            }
        }
        return w.bytes
    }

    /// Decodes a tree blob; rejects names that could escape the restore target, and names
    /// that are not strictly increasing (byte order, as every writer stores them): a name
    /// given twice could make one path both a directory and a symlink, and a restore would
    /// then write through the link.
    public static func decode(_ bytes: [UInt8]) throws -> Tree {
        var r = ByteReader(bytes)
        let v = try r.u8()
        guard v == version || v == versionWithXattrs else { throw CoreError.corrupt("tree version \(v)") }
        let count = try r.count(max: r.remaining)
        var nodes: [Node] = []
        nodes.reserveCapacity(count)
        for _ in 0..<count {
            let name = try r.string()
            guard !name.isEmpty, name != ".", name != "..", !name.utf8.contains(where: { $0 == 0x2F || $0 == 0 }) else {
                throw CoreError.corrupt("unsafe entry name \"\(name.escapingControlCharacters)\"")
            }
            if let previous = nodes.last?.name, !previous.utf8.lexicographicallyPrecedes(name.utf8) {
                throw CoreError.corrupt(previous == name ? "entry \"\(name.escapingControlCharacters)\" listed twice" : "entries out of order (\"\(name.escapingControlCharacters)\" after \"\(previous.escapingControlCharacters)\")")
            }
            guard let kind = NodeKind(rawValue: try r.u8()) else { throw CoreError.corrupt("unknown node kind") }
            var n = Node(name: name, kind: kind)
            n.mode = UInt32(truncatingIfNeeded: try r.uvarint())
            n.uid = UInt32(truncatingIfNeeded: try r.uvarint())
            n.gid = UInt32(truncatingIfNeeded: try r.uvarint())
            n.mtime = Timestamp(seconds: try r.varint(), nanoseconds: Int32(truncatingIfNeeded: try r.uvarint()))
            n.ctime = Timestamp(seconds: try r.varint(), nanoseconds: Int32(truncatingIfNeeded: try r.uvarint()))
            n.inode = try r.uvarint()
            n.device = try r.uvarint()
            n.links = UInt32(truncatingIfNeeded: try r.uvarint())
            n.size = try r.uvarint()
            n.sparse = try r.u8() & 1 == 1
            switch kind {
            case .file:
                let chunks = try r.count(max: r.remaining / 32)
                n.content.reserveCapacity(chunks)
                for _ in 0..<chunks { n.content.append(try r.id()) }
            case .directory:
                n.subtree = try r.id()
            case .symlink:
                n.linkTarget = try r.string()
            case .charDevice, .blockDevice:
                n.rdev = try r.uvarint()
            case .fifo, .socket:
                break
            }
            if v == versionWithXattrs {
                let count = try r.count(max: r.remaining)
                for _ in 0..<count {
                    let name = try r.string()
                    guard !name.isEmpty, !name.utf8.contains(0), n.xattrs.last.map({ $0.name.utf8.lexicographicallyPrecedes(name.utf8) }) ?? true else {
                        throw CoreError.corrupt("extended attribute names of \"\(n.name.escapingControlCharacters)\" empty, repeated or out of order")
                    }
                    let length = try r.count(max: r.remaining)
                    n.xattrs.append(Xattr(name: name, value: try r.raw(length)))
                }
            }
            nodes.append(n)
        }
        guard r.remaining == 0 else { throw CoreError.corrupt("\(r.remaining) trailing bytes") }
        var tree = Tree(nodes: [])
        tree.nodes = nodes
        return tree
    }
}

extension BlobReader {
    /// Reads and decodes a tree blob; errors name the tree and the path it stands for.
    public func readTree(_ id: BlobID, path: String) throws -> Tree {
        let bytes = try read(id)
        do {
            return try Tree.decode(bytes)
        } catch CoreError.corrupt(let detail) {
            throw RepositoryError.corrupt(file: "tree \(id.short) (\(path.isEmpty ? "/" : path))", detail: detail)
        }
    }
}
