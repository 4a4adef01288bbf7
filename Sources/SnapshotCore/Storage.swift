#if canImport(Glibc)
import Glibc
#endif

/// One stored object: its key (relative to the repository's root) and size.
public struct StoredObject: Sendable, Equatable {
    public var key: String
    public var size: Int

    public init(key: String, size: Int) {
        self.key = key
        self.size = size
    }
}

/// Where a repository's files live, seen as named immutable-or-replaced objects: a local
/// directory or an S3 bucket under a prefix. Keys are relative paths (`.store/index/<id>`,
/// `<type>/<id>/metadata.json`) made of `/`-separated names that are never empty, `.` or `..`.
///
/// What every backend guarantees (the conformance suite checks each one):
/// - `save` is atomic: a reader sees the old object or the whole new one, never a part;
///   saving the same bytes again is harmless (idempotent), and a failed save leaves no
///   object that could pass for a complete one.
/// - `load` returns exactly what was saved, or throws `RepositoryError.io(…, ENOENT)` when
///   the object does not exist; a ranged load returns exactly `length` bytes or throws
///   (`.corrupt` when the object ends before the range: it is shorter than its index says).
/// - `list` returns every object whose key starts with the prefix, with its size, in key
///   order; objects saved before the call are listed (S3 has been strongly consistent
///   since December 2020; MinIO, Ceph and Garage are too).
/// - `remove` of a missing object succeeds (idempotent).
/// Other errors name the object (`describe`) and are `RepositoryError.io`, `.permission` or
/// `.remote`: the machine or the network, never damage.
public protocol RepositoryStorage: Sendable {
    /// Where the repository is: a directory path or `s3://bucket/prefix`.
    var location: String { get }
    /// The full name of an object, for messages.
    func describe(_ key: String) -> String
    func save(_ key: String, _ bytes: [UInt8]) throws
    func load(_ key: String) throws -> [UInt8]
    func load(_ key: String, offset: Int, length: Int) throws -> [UInt8]
    func list(prefix: String) throws -> [StoredObject]
    /// The object's size, or nil when it does not exist.
    func size(_ key: String) throws -> Int?
    func remove(_ key: String) throws
}

extension RepositoryStorage {
    public func describe(_ key: String) -> String { location + "/" + key }

    /// Whether an object exists.
    public func exists(_ key: String) throws -> Bool { try size(key) != nil }

    /// Loads an object, or nil when it does not exist.
    public func loadIfPresent(_ key: String) throws -> [UInt8]? {
        do {
            return try load(key)
        } catch RepositoryError.io(_, _, let code) where code == ENOENT {
            return nil
        }
    }

    /// The names directly below `prefix` (a key ending in `/`): object names and the first
    /// name of deeper keys, each once, sorted.
    public func names(under prefix: String) throws -> [String] {
        var names = Set<String>()
        for o in try list(prefix: prefix) {
            let name = String(o.key.dropFirst(prefix.count).prefix { $0 != "/" })
            if !name.isEmpty { names.insert(name) }
        }
        return names.sorted()
    }
}

/// A repository in a local directory: objects are files, saved atomically (temporary name,
/// fsync, rename, directory fsync) with the repository's file modes.
public struct LocalStorage: RepositoryStorage {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public var location: String { root }

    func path(_ key: String) -> String { root + "/" + key }

    public func save(_ key: String, _ bytes: [UInt8]) throws {
        let file = path(key)
        try POSIX.makeDirectories(POSIX.parent(of: file), mode: key.hasPrefix(".store/") ? RepositoryModes.storeDirectory : RepositoryModes.directory)
        try POSIX.writeFileAtomically(file, bytes, mode: key.hasPrefix(".store/") ? RepositoryModes.storeFile : RepositoryModes.snapshotFile)
    }

    public func load(_ key: String) throws -> [UInt8] {
        try POSIX.readFile(path(key))
    }

    public func load(_ key: String, offset: Int, length: Int) throws -> [UInt8] {
        let file = path(key)
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: file, operation: "open") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: length)
        try out.withUnsafeMutableBytes { try POSIX.preadExactly(fd, into: $0, offset: offset, path: file) }
        return out
    }

    public func list(prefix: String) throws -> [StoredObject] {
        // The deepest directory the prefix names, walked recursively; temporary files of
        // writers (`*.tmp-*`) are not objects.
        let dirKey = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : ""
        var out: [StoredObject] = []
        func walk(_ key: String) throws {
            let dir = key.isEmpty ? root : path(key)
            let names: [String]
            do {
                names = try POSIX.listDirectory(dir)
            } catch RepositoryError.io(_, _, let code) where code == ENOENT || code == ENOTDIR {
                return
            }
            for name in names where !name.contains(".tmp") {
                let child = key.isEmpty ? name : key + "/" + name
                guard child.hasPrefix(prefix) || prefix.hasPrefix(child + "/") else { continue }
                var st = stat()
                guard lstat(path(child), &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: try walk(child)
                case S_IFREG: out.append(StoredObject(key: child, size: Int(st.st_size)))
                default: break
                }
            }
        }
        try walk(dirKey)
        return out.sorted { $0.key < $1.key }
    }

    public func size(_ key: String) throws -> Int? {
        var st = stat()
        guard stat(path(key), &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw RepositoryError.fromErrno(path: path(key), operation: "stat")
        }
        return Int(st.st_size)
    }

    public func remove(_ key: String) throws {
        guard unlink(path(key)) == 0 || errno == ENOENT else {
            throw RepositoryError.fromErrno(path: path(key), operation: "remove")
        }
    }
}
