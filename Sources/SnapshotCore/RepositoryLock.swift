#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import Foundation

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
    /// On an object store: the lock object instead of a descriptor.
    private let remote: RemoteLock?

    /// The repository lock of any storage: flock on a local directory, a lock object on an
    /// object store (see `RemoteLock`; `adding` — a create or a copy into it — takes the
    /// `create` kind there: beside readers, one at a time).
    public convenience init(storage: any RepositoryStorage, mode: Mode, purpose: String, wait: Double = 0, adding: Bool = false) throws {
        if let local = storage as? LocalStorage {
            try self.init(storePath: local.root + "/.store", mode: mode, purpose: purpose, wait: wait)
        } else {
            let kind: RemoteLock.Kind = mode == .exclusive ? .exclusive : adding ? .create : .shared
            try self.init(remote: RemoteLock(storage: storage, kind: kind, purpose: purpose, wait: wait), mode: mode)
        }
    }

    private init(remote: RemoteLock, mode: Mode) {
        self.remote = remote
        self.mode = mode
        descriptor = Mutex(-1)
    }

    /// Takes the store lock (`.store/lock`); with `wait` > 0 retries for up to that many
    /// seconds. Throws `RepositoryError.locked` naming the holder (for a shared holder that
    /// blocks an exclusive request: the running creates, from their own lock files).
    public convenience init(storePath: String, mode: Mode, purpose: String, wait: Double = 0) throws {
        try self.init(path: storePath + "/lock", mode: mode, purpose: purpose, wait: wait, repository: POSIX.parent(of: storePath))
    }

    /// A lock on any file (`.store/locks/create-<type>`, `.store/locks/commit`).
    public init(path: String, mode: Mode, purpose: String, wait: Double = 0, repository: String) throws {
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, RepositoryModes.storeFile)
        if fd < 0 && mode == .shared && (errno == EROFS || errno == EACCES || errno == EPERM) {
            // A reader of a repository it may not write (a read-only mount, a backup disk
            // mounted for a recovery, files it may only read): flock needs no write access.
            fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 && errno == ENOENT && Self.isReadOnlyFileSystem(path) {
                // No lock file and no way to make one: nothing can write through this mount.
                self.mode = mode
                remote = nil
                descriptor = Mutex(-1)
                return
            }
        }
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open lock") }
        self.mode = mode
        remote = nil
        let deadline = Date.timeIntervalSinceReferenceDate + wait
        while !Self.take(fd, mode: mode, path: path) {
            let e = errno
            if e == EWOULDBLOCK && Date.timeIntervalSinceReferenceDate < deadline {
                usleep(100_000)
                continue
            }
            let holder = (try? POSIX.readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            close(fd)
            descriptor = Mutex(-1)
            guard e == EWOULDBLOCK else { throw RepositoryError.fromErrno(path: path, operation: "lock", errno: e) }
            // Who: the running creates (shared holders that say so in their own lock files),
            // else the exclusive holder the file names, if that process still lives here.
            var who = "another process (reading)"
            if let creates = Self.runningCreates(POSIX.parent(of: path) + "/locks"), !creates.isEmpty {
                who = creates.joined(separator: "; ")
            } else if !holder.isEmpty && !holder.hasPrefix("released") && Self.mayBeAlive(holder) {
                who = holder.trimmingCharacters(in: "\n ")
            }
            throw RepositoryError.locked(path: repository, holder: who + (wait > 0 ? " (waited \(Int(wait)) s)" : ""))
        }
        descriptor = Mutex(fd)
        if mode == .exclusive {
            let info = "PID \(getpid()) on host \(POSIX.hostName()) (\(purpose), since \(Timestamp.now().iso8601))\n"
            _ = ftruncate(fd, 0)
            try? POSIX.writeAll(fd, Array(info.utf8), path: path)
        }
    }

    /// Whether the file system holding `path`'s directory is mounted read-only.
    static func isReadOnlyFileSystem(_ path: String) -> Bool {
        var s = statvfs()
        return statvfs(POSIX.parent(of: path), &s) == 0 && s.f_flag & UInt(ST_RDONLY) != 0
    }

    /// False when `holder` (`PID n on host h …`) names a process of this host that is gone
    /// (a killed holder never wrote "released").
    static func mayBeAlive(_ holder: String) -> Bool {
        let words = holder.split(separator: " ")
        guard words.count >= 5, words[0] == "PID", let pid = Int32(words[1]), words[3] == "host", String(words[4]) == POSIX.hostName() else { return true }
        return kill(pid, 0) == 0 || errno != ESRCH
    }

    /// Who holds the per-type create locks now (what their files say).
    static func runningCreates(_ directory: String) -> [String]? {
        guard let names = try? POSIX.listDirectory(directory) else { return nil }
        var out: [String] = []
        for name in names.sorted() where name.hasPrefix("create-") {
            let path = directory + "/" + name
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if flock(fd, LOCK_SH | LOCK_NB) == 0 {
                flock(fd, LOCK_UN)
                continue
            }
            if let text = try? POSIX.readFile(path), !text.isEmpty { out.append(String(decoding: text, as: UTF8.self).trimmingCharacters(in: "\n ")) }
        }
        return out
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
        remote?.release()
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
