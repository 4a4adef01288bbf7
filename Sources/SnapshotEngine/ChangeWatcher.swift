#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import CSystemShims
import SnapshotCore

/// What changed under one files component since the last snapshot, as paths relative to its
/// root (`""` is the root). Collected from the kernel's change notifications by
/// `ChangeWatcher`; `Archiver.createContinuous` re-reads only these.
public struct ComponentChanges: Sendable, Equatable {
    /// Entries that were created, written, removed, renamed or changed attributes.
    public var paths: Set<String> = []
    /// Directories whose whole content is read again: created or moved in (their files may
    /// have been written before a watch was on them).
    public var rescan: Set<String> = []
    /// A rename seen whole: new relative path → old one, so that moved content is not read
    /// again (a rename is one change, not a delete and an unrelated add).
    public var moved: [String: String] = [:]
    /// Scan the whole component (start-up, a notification overflow, the root itself changed).
    public var whole = false

    public init() {}

    public var isEmpty: Bool { paths.isEmpty && !whole }

    /// How many paths are waiting (`pending_paths` in the status).
    public var count: Int { whole ? max(1, paths.count) : paths.count }

    public mutating func merge(_ other: ComponentChanges) {
        paths.formUnion(other.paths)
        rescan.formUnion(other.rescan)
        moved.merge(other.moved) { _, new in new }
        whole = whole || other.whole
    }
}

/// A recursive watch over files components with inotify(7): one watch per directory, added
/// as directories appear and dropped as they go. Reading it blocks in poll(2) with no timer of
/// its own, so an idle watch costs nothing. Events are folded into `ComponentChanges`; a queue
/// overflow (`IN_Q_OVERFLOW`) marks every component whole, for one full rescan.
public final class ChangeWatcher: @unchecked Sendable {
    /// A component to watch: a directory tree (or one file) and its exclude patterns.
    public struct Root: Sendable {
        public var name: String
        public var path: String
        public var excludes: ExcludeMatcher
        public init(name: String, path: String, excludes: [String]) {
            self.name = name
            self.path = path
            self.excludes = ExcludeMatcher(excludes)
        }
    }

    public let roots: [Root]
    private let leftOut: FileIdentity?
    private let fd: Int32
    /// Written to by `stop()` to end a blocked `next`.
    private let wake: (read: Int32, write: Int32)
    private let stopped = Atomic<Bool>(false)
    /// Watch descriptor → (root index, directory relative to the root; for a root that is a
    /// file, the file's name in the watched parent directory).
    private var watches: [Int32: [(root: Int, relative: String)]] = [:]
    /// Roots that are one file (their parent directory is watched).
    private var rootIsFile: [Bool] = []
    /// A rename's first half, waiting for its second (same cookie).
    private var movedFrom: [UInt32: (root: Int, relative: String, isDirectory: Bool)] = [:]
    private var changes: [String: ComponentChanges] = [:]
    /// Events seen per component, ever: a count that moved means "something happened" (a
    /// file still being written adds no path but must hold the debounce off).
    public private(set) var activity: [String: Int] = [:]
    /// The last watch the kernel refused after start (a new directory past the limit): the
    /// directory is still snapshotted, by a rescan, but changes in it are not seen.
    public private(set) var lastProblem: String?
    /// Directories watched (for the note and the figures).
    public var watchCount: Int { watches.count }

    static let mask: UInt32 = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
        | IN_DELETE_SELF | IN_MOVE_SELF) | UInt32(IN_DONT_FOLLOW) | UInt32(IN_EXCL_UNLINK) | UInt32(IN_ONLYDIR)

    /// Starts watching every directory under the roots. Throws naming the directory when the
    /// kernel refuses a watch (most often `fs.inotify.max_user_watches`).
    /// - Parameter leavingOut: a directory not to watch wherever it appears (the repository,
    ///   when a component's tree holds it: each snapshot written there would start the next).
    public init(roots: [Root], leavingOut: FileIdentity? = nil) throws {
        self.roots = roots
        self.leftOut = leavingOut
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw EngineError.watch("inotify_init1: \(POSIX.errorText(errno)) (fs.inotify.max_user_instances?)") }
        var p: [Int32] = [0, 0]
        guard snapshot_pipe_cloexec(&p) == 0 else {
            close(fd)
            throw EngineError.watch("pipe: \(POSIX.errorText(errno))")
        }
        wake = (p[0], p[1])
        for d in p { _ = fcntl(d, F_SETFL, O_NONBLOCK) }
        do {
            for (i, root) in roots.enumerated() { try addRoot(i, root) }
        } catch {
            close(fd)
            close(wake.read)
            close(wake.write)
            throw error
        }
    }

    deinit {
        close(fd)
        close(wake.read)
        close(wake.write)
    }

    private func addRoot(_ index: Int, _ root: Root) throws {
        var st = stat()
        guard stat(root.path, &st) == 0 else { throw EngineError.sourceMissing(component: root.name, path: root.path) }
        rootIsFile.append((st.st_mode & S_IFMT) != S_IFDIR)
        if !rootIsFile[index] {
            // The root itself may be a link to a directory (create follows it too).
            let wd = inotify_add_watch(fd, root.path, Self.mask & ~UInt32(IN_DONT_FOLLOW))
            guard wd >= 0 else { throw Self.watchError(root.path, errno) }
            try addTree(index, absolute: root.path, relative: "", wd: wd)
        } else {
            // A single file: watch its directory, keep only events naming it.
            let dir = (root.path as NSString).deletingLastPathComponent
            let wd = inotify_add_watch(fd, dir.isEmpty ? "/" : dir, Self.mask)
            guard wd >= 0 else { throw Self.watchError(dir, errno) }
            watches[wd, default: []].append((index, POSIX.lastComponent(root.path)))
        }
    }

    static func watchError(_ path: String, _ code: Int32) -> EngineError {
        if code == ENOSPC {
            let limit = (try? String(contentsOfFile: "/proc/sys/fs/inotify/max_user_watches", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            return .watch("\(path): the kernel's limit of watches is reached (fs.inotify.max_user_watches = \(limit)); raise it with sysctl")
        }
        return .watch("\(path): \(POSIX.errorText(code))")
    }

    /// Watches `absolute` and every directory below it (not following links, skipping
    /// excluded ones). A directory that vanished meanwhile is skipped: its removal is an event.
    private func addTree(_ index: Int, absolute: String, relative: String, wd known: Int32? = nil) throws {
        let wd = known ?? FileName.withCString(absolute) { inotify_add_watch(fd, $0, Self.mask) }
        guard wd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return }
            throw Self.watchError(absolute, errno)
        }
        watches[wd, default: []].removeAll { $0.root == index }
        watches[wd, default: []].append((index, relative))
        guard let names = try? POSIX.listDirectory(absolute) else { return }
        for name in names {
            let rel = relative.isEmpty ? name : relative + "/" + name
            if roots[index].excludes.excludes(name: name, relativePath: rel) { continue }
            var st = stat()
            guard POSIX.lstat(absolute + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, FileIdentity(st) != leftOut else { continue }
            try addTree(index, absolute: absolute + "/" + name, relative: rel)
        }
    }

    /// Drops the watches of a directory that moved away or was removed, and of those below it.
    private func dropTree(_ index: Int, relative: String) {
        for (wd, list) in watches {
            let kept = list.filter { !($0.root == index && ($0.relative == relative || relative.isEmpty || $0.relative.hasPrefix(relative + "/"))) }
            guard kept.count != list.count else { continue }
            if kept.isEmpty {
                inotify_rm_watch(fd, wd)
                watches[wd] = nil
            } else {
                watches[wd] = kept
            }
        }
    }

    /// Ends a `next` blocked in another thread (it returns nil), and every later one.
    public func stop() {
        stopped.store(true, ordering: .sequentiallyConsistent)
        var b: UInt8 = 1
        _ = write(wake.write, &b, 1)
    }

    public var isStopped: Bool { stopped.load(ordering: .sequentiallyConsistent) }

    /// Waits up to `timeout` seconds (nil: until something happens) for notifications and
    /// folds them into the pending changes. Returns false once stopped.
    @discardableResult
    public func wait(timeout: Double?) -> Bool {
        if isStopped { return false }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
        let ms: Int32 = timeout.map { Int32(max(0, min(Double(Int32.max), ($0 * 1000).rounded(.up)))) } ?? -1
        let n = poll(&fds, 2, ms)
        if isStopped { return false }
        if n > 0 && fds[0].revents != 0 { drain() }
        return true
    }

    /// Takes the changes collected so far (per component name), leaving none pending.
    public func take() -> [String: ComponentChanges] {
        drain()
        let out = changes
        changes = [:]
        return out
    }

    /// Pending changes without taking them.
    public var pending: [String: ComponentChanges] { changes }

    /// Marks every component for a whole rescan (start-up; after an error).
    public func markAllWhole() {
        for r in roots {
            changes[r.name, default: ComponentChanges()].whole = true
            activity[r.name, default: 0] += 1
        }
    }

    /// Watches again a directory root whose watch went with it (removed or moved away and
    /// made anew): called before each snapshot, which scans such a root whole anyway.
    public func rewatchLostRoots() {
        for (i, root) in roots.enumerated() where !rootIsFile[i] {
            guard !watches.values.contains(where: { $0.contains { $0.root == i && $0.relative.isEmpty } }) else { continue }
            let wd = inotify_add_watch(fd, root.path, Self.mask & ~UInt32(IN_DONT_FOLLOW))
            guard wd >= 0 else { continue }
            do {
                try addTree(i, absolute: root.path, relative: "", wd: wd)
            } catch {
                lastProblem = "\(error)"
            }
        }
    }

    /// Gives back changes taken for a snapshot that failed (they are tried again).
    public func putBack(_ taken: [String: ComponentChanges]) {
        for (name, c) in taken { changes[name, default: ComponentChanges()].merge(c) }
    }

    /// Reads every queued event without blocking.
    private func drain() {
        let size = 64 * 1024
        var buffer = [UInt8](repeating: 0, count: size)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, size) }
            if n <= 0 { break }
            buffer.withUnsafeBytes { raw in
                var offset = 0
                while offset + MemoryLayout<inotify_event>.size <= n {
                    let base = raw.baseAddress! + offset
                    let wd = base.loadUnaligned(fromByteOffset: 0, as: Int32.self)
                    let mask = base.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                    let cookie = base.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
                    let len = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                    var name = ""
                    if len > 0 {
                        let start = base + MemoryLayout<inotify_event>.size
                        let bytes = UnsafeRawBufferPointer(start: start, count: len)
                        let end = bytes.firstIndex(of: 0) ?? len
                        name = FileName.decode(UnsafeRawBufferPointer(rebasing: bytes[..<end]))
                    }
                    handle(wd: wd, mask: mask, cookie: cookie, name: name)
                    offset += MemoryLayout<inotify_event>.size + len
                }
            }
        }
        // A rename whose other half never came is a removal (moved out) or an arrival
        // (moved in, already marked for a rescan).
        if !movedFrom.isEmpty {
            for (_, m) in movedFrom where m.isDirectory { dropTree(m.root, relative: m.relative) }
            movedFrom = [:]
        }
    }

    private func watchNew(_ index: Int, relative: String) {
        do {
            try addTree(index, absolute: roots[index].path + "/" + relative, relative: relative)
        } catch {
            lastProblem = "\(error)"
        }
    }

    private func handle(wd: Int32, mask: UInt32, cookie: UInt32, name: String) {
        if mask & UInt32(IN_Q_OVERFLOW) != 0 {
            markAllWhole()
            return
        }
        guard let list = watches[wd] else { return }
        if mask & UInt32(IN_IGNORED) != 0 {
            watches[wd] = nil
            return
        }
        for w in list { handle(w, mask: mask, cookie: cookie, name: name) }
    }

    private func handle(_ w: (root: Int, relative: String), mask: UInt32, cookie: UInt32, name: String) {
        let root = roots[w.root]
        let isDir = mask & UInt32(IN_ISDIR) != 0
        activity[root.name, default: 0] += 1
        if rootIsFile[w.root] {
            // A root that is one file: only events naming it count; they mean "read it again".
            if name == w.relative { changes[root.name, default: ComponentChanges()].whole = true }
            return
        }
        if name.isEmpty {
            // The watched directory itself: its attributes (the parent's watch names it too),
            // or the root removed or moved away.
            if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF) != 0 && w.relative.isEmpty {
                // Gone from its path: its watches would report the tree wherever it went.
                // The next snapshot watches the path again (`rewatchLostRoots`) and scans it.
                changes[root.name, default: ComponentChanges()].whole = true
                dropTree(w.root, relative: "")
            }
            return
        }
        let rel = w.relative.isEmpty ? name : w.relative + "/" + name
        if root.excludes.excludes(name: name, relativePath: rel) { return }
        var c = changes[root.name, default: ComponentChanges()]
        c.paths.insert(rel)
        if mask & UInt32(IN_MOVED_FROM) != 0 {
            movedFrom[cookie] = (w.root, rel, isDir)
        } else if mask & UInt32(IN_MOVED_TO) != 0 {
            if let from = movedFrom.removeValue(forKey: cookie) {
                if from.root == w.root { c.moved[rel] = from.relative }
                if from.isDirectory { dropTree(from.root, relative: from.relative) }
            }
            if isDir {
                c.rescan.insert(rel)
                watchNew(w.root, relative: rel)
            }
        } else if mask & UInt32(IN_CREATE) != 0 && isDir {
            c.rescan.insert(rel)
            watchNew(w.root, relative: rel)
        } else if mask & UInt32(IN_DELETE) != 0 && isDir {
            dropTree(w.root, relative: rel)
        }
        changes[root.name] = c
    }
}
