#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SnapshotCore

/// Builds a snapshot node from `lstat` results.
enum FileStat {
    static func kind(_ mode: mode_t) -> NodeKind? {
        switch mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        case S_IFLNK: return .symlink
        case S_IFIFO: return .fifo
        case S_IFSOCK: return .socket
        case S_IFCHR: return .charDevice
        case S_IFBLK: return .blockDevice
        default: return nil
        }
    }

    static func node(name: String, _ st: stat) -> Node? {
        guard let kind = kind(st.st_mode) else { return nil }
        var n = Node(name: name, kind: kind)
        n.mode = UInt32(st.st_mode & 0o7777)
        n.uid = st.st_uid
        n.gid = st.st_gid
        n.mtime = Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: Int32(st.st_mtim.tv_nsec))
        n.ctime = Timestamp(seconds: Int64(st.st_ctim.tv_sec), nanoseconds: Int32(st.st_ctim.tv_nsec))
        n.inode = UInt64(st.st_ino)
        n.device = UInt64(st.st_dev)
        n.links = UInt32(truncatingIfNeeded: st.st_nlink)
        if kind == .file {
            n.size = UInt64(st.st_size)
            // Allocated blocks well below the size: the file has holes.
            n.sparse = Int64(st.st_blocks) * 512 + 65536 <= Int64(st.st_size)
        }
        if kind == .charDevice || kind == .blockDevice { n.rdev = UInt64(st.st_rdev) }
        return n
    }

    static func xattrs(_ path: String) -> [Xattr] { POSIX.xattrs(path) }

    /// The target of the symlink `name` in the directory open as `fd`.
    static func readLink(at fd: Int32, _ name: String) -> String? {
        var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = FileName.withCString(name) { name in
            buf.withUnsafeMutableBytes { readlinkat(fd, name, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        }
        guard n >= 0 else { return nil }
        return FileName.decode(Array(buf[0..<n]))
    }

    static func readLink(_ path: String) -> String? { readLink(at: AT_FDCWD, path) }
}

/// Shell-style exclude patterns (fnmatch): a pattern without `/` matches an entry's name at
/// any depth; one with `/` matches the path relative to the component root.
public struct ExcludeMatcher: Sendable {
    public let patterns: [String]

    public init(_ patterns: [String]) { self.patterns = patterns }

    public func excludes(name: String, relativePath: String) -> Bool {
        for p in patterns {
            if p.contains("/") {
                if fnmatch(p, relativePath, FNM_PATHNAME) == 0 { return true }
            } else if fnmatch(p, name, 0) == 0 {
                return true
            }
        }
        return false
    }
}
