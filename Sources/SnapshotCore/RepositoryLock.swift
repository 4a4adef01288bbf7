#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The repository lock: `flock(2)` on `.store/lock`, shared for readers and exclusive for
/// writers.
///
/// The kernel drops the lock when its holder exits, however it exits, so a lock can never be
/// stale on a local file system; the holder's PID, host, command and start time are written
/// into the file only for the "locked by …" message. Held until `release()` or deinit.
public final class RepositoryLock: @unchecked Sendable {
    public enum Mode: Sendable { case shared, exclusive }

    private var fd: Int32
    public let mode: Mode

    /// Takes the lock without waiting; throws `RepositoryError.locked` naming the holder.
    public init(storePath: String, mode: Mode, purpose: String) throws {
        let path = storePath + "/lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open lock") }
        self.mode = mode
        if flock(fd, (mode == .exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let e = errno
            let holder = (try? POSIX.readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            close(fd)
            fd = -1
            guard e == EWOULDBLOCK else { throw RepositoryError.fromErrno(path: path, operation: "lock", errno: e) }
            let who = holder.isEmpty || mode == .exclusive && holder.hasPrefix("released")
                ? "another process (reading)" : holder.trimmingCharacters(in: "\n ")
            throw RepositoryError.locked(path: POSIX.parent(of: storePath), holder: who)
        }
        if mode == .exclusive {
            let info = "PID \(getpid()) on host \(POSIX.hostName()) (\(purpose), since \(Timestamp.now().iso8601))\n"
            _ = ftruncate(fd, 0)
            try? POSIX.writeAll(fd, Array(info.utf8), path: path)
        }
    }

    /// Releases the lock (idempotent).
    public func release() {
        guard fd >= 0 else { return }
        if mode == .exclusive {
            _ = ftruncate(fd, 0)
            _ = lseek(fd, 0, SEEK_SET)
            try? POSIX.writeAll(fd, Array("released\n".utf8), path: "lock")
        }
        close(fd)
        fd = -1
    }

    deinit { release() }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
