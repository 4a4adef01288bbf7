#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The repository lock: `flock(2)` on `.store/lock`, shared for readers and exclusive for
/// writers.
///
/// The kernel drops the lock when its holder exits, however it exits, so a lock can never be
/// stale on a local file system; the holder's PID, host, command and start time are written
/// into the file only for the "locked by …" message. Held until `release()` or deinit.
/// `release()` may be called from any thread, also twice at once: the descriptor is closed
/// exactly once.
public final class RepositoryLock: Sendable {
    public enum Mode: Sendable { case shared, exclusive }

    private let descriptor: Mutex<Int32>
    public let mode: Mode

    /// Takes the lock without waiting; throws `RepositoryError.locked` naming the holder.
    public init(storePath: String, mode: Mode, purpose: String) throws {
        let path = storePath + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, RepositoryModes.storeFile)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open lock") }
        self.mode = mode
        if !Self.take(fd, mode: mode, path: path) {
            let e = errno
            let holder = (try? POSIX.readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            close(fd)
            descriptor = Mutex(-1)
            guard e == EWOULDBLOCK else { throw RepositoryError.fromErrno(path: path, operation: "lock", errno: e) }
            let who = holder.isEmpty || mode == .exclusive && holder.hasPrefix("released")
                ? "another process (reading)" : holder.trimmingCharacters(in: "\n ")
            throw RepositoryError.locked(path: POSIX.parent(of: storePath), holder: who)
        }
        descriptor = Mutex(fd)
        if mode == .exclusive {
            let info = "PID \(getpid()) on host \(POSIX.hostName()) (\(purpose), since \(Timestamp.now().iso8601))\n"
            _ = ftruncate(fd, 0)
            try? POSIX.writeAll(fd, Array(info.utf8), path: path)
        }
    }

    /// flock without waiting. A writer that has released the lock (its file says so) may
    /// still be holding it for a moment through a child process that another thread is
    /// starting: between fork and exec the child has a copy of every descriptor, close-on-exec
    /// ones included. That copy goes away at the exec, so in that case only, retry for up to
    /// 100 ms.
    private static func take(_ fd: Int32, mode: Mode, path: String) -> Bool {
        let operation = (mode == .exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB
        for attempt in 0..<20 {
            if flock(fd, operation) == 0 { return true }
            let e = errno
            guard e == EWOULDBLOCK, attempt < 19,
                let holder = try? POSIX.readFile(path), holder.starts(with: Array("released".utf8))
            else {
                errno = e
                return false
            }
            usleep(5_000)
        }
        return false
    }

    /// Releases the lock (idempotent).
    public func release() {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            if mode == .exclusive {
                _ = ftruncate(fd, 0)
                _ = lseek(fd, 0, SEEK_SET)
                try? POSIX.writeAll(fd, Array("released\n".utf8), path: "lock")
            }
            close(fd)
            fd = -1
        }
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
