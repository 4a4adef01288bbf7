#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// A directory that a restore writes into, and nothing outside it: every path is resolved
/// below the directory's descriptor following no symlink on the way (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and every change is made relative to the
/// descriptor of the entry's parent with the `*at` calls that do not follow a symlink in the
/// last component either. So even an entry swapped for a symlink while the restore runs —
/// by another process, or by a forged snapshot that listed the same name twice — cannot
/// redirect a write, a chmod, a chown or a link outside the directory.
///
/// Paths are given absolute (they must start with `root + "/"`), as the restorer plans them.
public final class ConfinedDirectory: Sendable {
    public let root: String
    private let fd: Int32

    /// Opens `root`, which must be a directory (a symlink given as the root itself is
    /// followed: that is the caller's choice of target).
    public init(_ root: String) throws {
        self.root = root
        fd = FileName.withCString(root) { Glibc.open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: root, operation: "open") }
    }

    deinit { close(fd) }

    func relative(_ path: String) throws -> String {
        guard path.hasPrefix(root + "/"), path.count > root.count + 1 else {
            throw RepositoryError.permission(path: path, operation: "write outside \(root)")
        }
        return String(path.dropFirst(root.count + 1))
    }

    /// Opens `path` (flags as for open(2); O_NOFOLLOW and O_CLOEXEC are added).
    public func open(_ path: String, flags: Int32, mode: mode_t = 0) throws -> Int32 {
        let fd = FileName.withCString(try relative(path)) { snapshot_open_beneath(self.fd, $0, flags, UInt32(mode)) }
        guard fd >= 0 else { throw Self.error(path, "open") }
        return fd
    }

    /// `open` for callers that look at errno themselves: -1 with errno on failure.
    public func openOrFail(_ path: String, flags: Int32, mode: mode_t) -> Int32 {
        guard let rel = try? relative(path) else {
            errno = EXDEV
            return -1
        }
        return FileName.withCString(rel) { snapshot_open_beneath(fd, $0, flags, UInt32(mode)) }
    }

    /// Runs `body` with the descriptor of `path`'s parent directory and its last name (as
    /// the bytes it stands for: `FileName`).
    func inParent<T>(_ path: String, _ body: (Int32, UnsafePointer<CChar>) throws -> T) throws -> T {
        let rel = try relative(path)
        guard let slash = rel.lastIndex(of: "/") else { return try FileName.withCString(rel) { try body(fd, $0) } }
        let parent = FileName.withCString(String(rel[..<slash])) { snapshot_open_beneath(fd, $0, O_RDONLY | O_DIRECTORY, 0) }
        guard parent >= 0 else { throw Self.error(POSIX.parent(of: path), "open") }
        defer { close(parent) }
        return try FileName.withCString(String(rel[rel.index(after: slash)...])) { try body(parent, $0) }
    }

    static func error(_ path: String, _ operation: String) -> RepositoryError {
        if errno == ELOOP || errno == EXDEV {
            return .permission(path: path, operation: "\(operation) (a symlink on the way, or a path leaving the restore target)")
        }
        return .fromErrno(path: path, operation: operation)
    }

    /// lstat(2) of `path`; nil when it does not exist.
    public func lstat(_ path: String) throws -> stat? {
        try inParent(path) { dir, name in
            var st = stat()
            if fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { return st }
            if errno == ENOENT { return nil }
            throw Self.error(path, "stat")
        }
    }

    public func mkdir(_ path: String, mode: mode_t) throws {
        try inParent(path) { dir, name in
            guard mkdirat(dir, name, mode) == 0 else { throw Self.error(path, "mkdir") }
        }
    }

    public func symlink(_ target: String, at path: String) throws {
        try inParent(path) { dir, name in
            guard FileName.withCString(target, { symlinkat($0, dir, name) }) == 0 else { throw Self.error(path, "symlink") }
        }
    }

    public func mknod(_ path: String, mode: mode_t, device: dev_t) throws {
        try inParent(path) { dir, name in
            guard mknodat(dir, name, mode, device) == 0 else { throw Self.error(path, (mode & S_IFMT) == S_IFIFO ? "mkfifo" : "mknod") }
        }
    }

    /// A hard link at `path` to the existing `existing` (both inside), replacing what is at
    /// `path`.
    public func link(_ existing: String, at path: String) throws {
        try inParent(existing) { fromDir, fromName in
            try inParent(path) { dir, name in
                if unlinkat(dir, name, 0) != 0 && errno != ENOENT {
                    if errno == EISDIR || errno == EPERM { try removeTree(path) } else { throw Self.error(path, "remove") }
                }
                guard linkat(fromDir, fromName, dir, name, 0) == 0 else { throw Self.error(path, "link") }
            }
        }
    }

    /// Removes `path` and, for a directory, everything below it; never follows a symlink.
    public func removeTree(_ path: String) throws {
        try inParent(path) { dir, name in try Self.remove(name, in: dir, shown: path) }
    }

    private static func remove(_ name: UnsafePointer<CChar>, in dir: Int32, shown: String) throws {
        if unlinkat(dir, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR || errno == EPERM else { throw error(shown, "remove") }
        let sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard sub >= 0 else { throw error(shown, "open") }
        defer { close(sub) }
        for child in try POSIX.listDirectory(descriptor: sub, path: shown) {
            try FileName.withCString(child) { try remove($0, in: sub, shown: shown + "/" + child) }
        }
        guard unlinkat(dir, name, AT_REMOVEDIR) == 0 else { throw error(shown, "remove") }
    }

    /// Sets extended attributes on an open descriptor. What the file system or the user may
    /// not set (no xattr support, `trusted.*` or `security.*` when not root, a value too
    /// large) is skipped and returned by name; other errors throw.
    public static func setXattrs(_ xattrs: [Xattr], fd: Int32, path: String) throws -> [String] {
        var skipped: [String] = []
        for x in xattrs {
            if snapshot_fsetxattr(fd, x.name, x.value, UInt(x.value.count)) == 0 { continue }
            switch errno {
            case ENOTSUP, EPERM, E2BIG, ERANGE, ENOSPC, EACCES: skipped.append(x.name)
            default: throw RepositoryError.fromErrno(path: path, operation: "set extended attribute \(x.name) of")
            }
        }
        return skipped
    }

    /// Extended attributes of the directory `path`, through a descriptor opened below the root.
    public func setXattrs(_ xattrs: [Xattr], directory path: String) throws -> [String] {
        guard !xattrs.isEmpty else { return [] }
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        return try Self.setXattrs(xattrs, fd: fd, path: path)
    }

    /// Owner (`chown`: as root), permission bits (not for symlinks) and mtime of `path`,
    /// none of them following a symlink.
    public func setMetadata(_ path: String, uid: UInt32, gid: UInt32, mode: UInt32, mtime: Timestamp, isSymlink: Bool, chown: Bool) throws {
        try inParent(path) { dir, name in
            if chown && fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 { throw Self.error(path, "chown") }
            // glibc performs fchmodat(AT_SYMLINK_NOFOLLOW) through an O_PATH descriptor: it
            // changes the entry itself and refuses a symlink (EOPNOTSUPP).
            if !isSymlink && fchmodat(dir, name, mode_t(mode), AT_SYMLINK_NOFOLLOW) != 0 { throw Self.error(path, "chmod") }
            var times = [
                timespec(tv_sec: Int(mtime.seconds), tv_nsec: Int(mtime.nanoseconds)),
                timespec(tv_sec: Int(mtime.seconds), tv_nsec: Int(mtime.nanoseconds)),
            ]
            if utimensat(dir, name, &times, AT_SYMLINK_NOFOLLOW) != 0 { throw Self.error(path, "set times of") }
        }
    }
}
