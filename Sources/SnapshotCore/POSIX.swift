#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import CSystemShims

/// Numbers the temporary files of this process, so that two threads writing the same file
/// never share one.
private let temporaryCounter = Atomic<Int>(0)

/// Thin, throwing wrappers over the POSIX calls the repository needs. Paths are Strings;
/// every error names the path and the operation.
public enum POSIX {
    /// Reads a whole file.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "stat") }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw RepositoryError.fromErrno(path: path, operation: "read")
            }
            if n == 0 { out.removeLast(out.count - done); break }
            done += n
        }
        return out
    }

    /// Writes `bytes` to `path` through a temporary file, fsyncs it, renames it into place
    /// and fsyncs the directory: readers see the old file or the new one, never a mix, and
    /// of two writers at once (threads or processes) the last rename wins whole.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = RepositoryModes.storeFile) throws {
        let tmp = path + ".tmp-\(getpid())-\(temporaryCounter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: tmp, operation: "create") }
        do {
            try writeAll(fd, bytes, path: tmp)
            guard fsync(fd) == 0 else { throw RepositoryError.fromErrno(path: tmp, operation: "fsync") }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw RepositoryError.fromErrno(path: path, operation: "rename", errno: e)
        }
        try syncDirectory(parent(of: path))
    }

    /// Opens `input` to read and `output` to write anew (owner-only): the two ends of a file
    /// transformed whole (compressed, encrypted).
    public static func openTransform(input: String, output: String) throws -> (input: Int32, output: Int32) {
        let inFD = open(input, O_RDONLY | O_CLOEXEC)
        guard inFD >= 0 else { throw RepositoryError.fromErrno(path: input, operation: "open") }
        let outFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard outFD >= 0 else {
            let e = errno
            close(inFD)
            throw RepositoryError.fromErrno(path: output, operation: "create", errno: e)
        }
        return (inFD, outFD)
    }

    /// Reads up to `count` bytes (fewer only at the end of the file).
    public static func readUpTo(_ fd: Int32, _ count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw RepositoryError.fromErrno(path: path, operation: "read")
            }
            if n == 0 { break }
            done += n
        }
        out.removeLast(count - done)
        return out
    }

    /// Writes all of `bytes` at the current offset.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
    }

    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw RepositoryError.fromErrno(path: path, operation: "write")
            }
            done += n
        }
    }

    /// Reads exactly `count` bytes at `offset`, throwing on a short read.
    public static func pread(_ fd: Int32, count: Int, offset: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try preadExactly(fd, into: $0, offset: offset, path: path) }
        return out
    }

    /// Fills `buffer` from `offset`, throwing on a short read.
    public static func preadExactly(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw RepositoryError.fromErrno(path: path, operation: "read")
            }
            if n == 0 {
                throw RepositoryError.corrupt(file: path, detail: "file ends at \(offset + done), \(buffer.count - done) bytes short")
            }
            done += n
        }
    }

    /// `$TMPDIR`, else /tmp.
    public static func temporaryDirectory() -> String {
        if let t = getenv("TMPDIR"), let s = String(validatingCString: t), s.hasPrefix("/") { return s.count > 1 && s.hasSuffix("/") ? String(s.dropLast()) : s }
        return "/tmp"
    }

    /// fsyncs a directory so that renames and creations in it are durable.
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        _ = fsync(fd)
    }

    /// Creates a directory and its missing parents.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let p = parent(of: path)
        if p != path && !p.isEmpty { try makeDirectories(p, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw RepositoryError.fromErrno(path: path, operation: "mkdir")
        }
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Names in a directory, without "." and "..", unsorted.
    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = FileName.withCString(path, { opendir($0) }) else { throw RepositoryError.fromErrno(path: path, operation: "open directory") }
        defer { closedir(dir) }
        return names(in: dir)
    }

    private static func names(in dir: OpaquePointer) -> [String] {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                FileName.decode(UnsafeRawBufferPointer(rebasing: raw[0..<(raw.firstIndex(of: 0) ?? raw.count)]))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The names in an open directory (`path` only names it in errors); `descriptor` stays
    /// open and owned by the caller.
    public static func listDirectory(descriptor: Int32, path: String) throws -> [String] {
        let copy = dup(descriptor)
        guard copy >= 0, let dir = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw RepositoryError.fromErrno(path: path, operation: "open directory")
        }
        defer { closedir(dir) }
        rewinddir(dir)
        return names(in: dir)
    }

    /// The extended attributes of `path` itself (never a symlink's target), sorted by name;
    /// `security.selinux` is left out (labels come from the policy of the machine restored
    /// to). Empty where the file system has none.
    public static func xattrs(_ path: String) -> [Xattr] {
        let bytes = FileName.bytes(path) + [0]
        return bytes.withUnsafeBytes { raw in
            let path = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            return xattrs(list: { snapshot_llistxattr(path, $0, $1) }, get: { snapshot_lgetxattr(path, $0, $1, $2) })
        }
    }

    /// The extended attributes of an open file or directory, as `xattrs(_:)`.
    public static func xattrs(descriptor fd: Int32) -> [Xattr] {
        xattrs(list: { snapshot_flistxattr(fd, $0, $1) }, get: { snapshot_fgetxattr(fd, $0, $1, $2) })
    }

    private static func xattrs(list: (UnsafeMutablePointer<CChar>?, UInt) -> Int, get: (String, UnsafeMutableRawPointer?, UInt) -> Int) -> [Xattr] {
        var size = list(nil, 0)
        guard size > 0 else { return [] }
        var names = [CChar](repeating: 0, count: size)
        size = names.withUnsafeMutableBufferPointer { list($0.baseAddress, UInt(size)) }
        guard size > 0 else { return [] }
        var out: [Xattr] = []
        for raw in names[0..<min(size, names.count)].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard name != "security.selinux" else { continue }
            let length = get(name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: length)
            let got = length == 0 ? 0 : value.withUnsafeMutableBytes { get(name, $0.baseAddress, UInt(length)) }
            guard got >= 0 else { continue }
            out.append(Xattr(name: name, value: Array(value[0..<min(got, length)])))
        }
        return out.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// Sets one extended attribute of `path` itself (tests and tools); false with errno.
    @discardableResult
    public static func setXattr(_ path: String, _ name: String, _ value: [UInt8]) -> Bool {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return snapshot_fsetxattr(fd, name, value, UInt(value.count)) == 0
    }

    /// A file that holds a secret (a password, a key) may be read by its owner only, as
    /// ssh requires of private keys: refuses one that group or others can read or write.
    public static func checkPrivate(_ path: String, what: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "open \(what)") }
        if st.st_mode & 0o077 != 0 {
            throw RepositoryError.key(path: path, detail: "\(what) may be opened by group or others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it first")
        }
    }

    /// A secret from a file (a password, a key): refused unless only its owner can read it
    /// (`checkPrivate`), its trailing newlines stripped.
    public static func readSecret(_ path: String, what: String) throws -> [UInt8] {
        try checkPrivate(path, what: what)
        var bytes = try readFile(path)
        while bytes.last == 0x0a || bytes.last == 0x0d { bytes.removeLast() }
        return bytes
    }

    /// Removes a file or a whole directory tree; a missing path is not an error. Names that
    /// are not UTF-8 are removed too (`FileName`).
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard POSIX.lstat(path, &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return }
            throw RepositoryError.fromErrno(path: path, operation: "stat")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try listDirectory(path) { try removeTree(path + "/" + name) }
            guard FileName.withCString(path, { rmdir($0) }) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "remove") }
        } else {
            guard FileName.withCString(path, { unlink($0) }) == 0 || errno == ENOENT else { throw RepositoryError.fromErrno(path: path, operation: "remove") }
        }
    }

    /// The directory part of a path ("." for a bare name).
    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// The last element of a path, ignoring trailing slashes.
    public static func lastComponent(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        if let slash = p.lastIndex(of: "/"), p != "/" { return String(p[p.index(after: slash)...]) }
        return String(p)
    }

    /// An absolute, "."/".."-free form of `path`, resolved against the working directory
    /// (symlinks are not resolved).
    public static func absolute(_ path: String, relativeTo base: String? = nil) -> String {
        var full = path
        if !path.hasPrefix("/") {
            let cwd = base ?? currentDirectory()
            full = cwd + "/" + path
        }
        var parts: [Substring] = []
        for part in full.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    public static func currentDirectory() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return "/" }
        return buf.withUnsafeBytes { string(fromNulTerminated: $0) }
    }

    /// Decodes the bytes before the first NUL (invalid UTF-8 is replaced).
    public static func string(fromNulTerminated raw: UnsafeRawBufferPointer) -> String {
        let end = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<end]), as: UTF8.self)
    }

    /// The host name, for metadata and locks.
    public static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, 255) == 0 else { return "localhost" }
        return buf.withUnsafeBytes { string(fromNulTerminated: $0) }
    }
}

extension POSIX {
    /// strerror as a String.
    public static func errorText(_ code: Int32) -> String {
        guard let p = strerror(code) else { return "error \(code)" }
        return string(fromNulTerminated: UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }
}
