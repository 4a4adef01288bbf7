#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization
import SnapshotCore

/// What a restore wrote.
public struct RestoreResult: Sendable, Equatable {
    public var files: Int
    public var bytes: UInt64
    public var seconds: Double
    /// Files whose re-read content did not match the snapshot (only with `verify`).
    public var mismatches: [String]
}

/// Restores snapshot components into a directory: component C goes to `target/C/`.
///
/// Every blob is checked against its SHA-256 before it is written. Entry names come from
/// trees whose decoder rejects `/`, `.` and `..`, and existing symlinks in the way are
/// replaced, never followed, so nothing is written outside the target. Files are written on
/// `workers` threads; holes of sparse files stay holes; modes, owners (as root), mtimes
/// and hard links are restored, directories' mtimes last.
public final class Restorer: Sendable {
    let repository: Repository
    public let progress: WorkProgress
    let workers: Int
    let cancellation: CancellationFlag
    private let isRoot = geteuid() == 0

    public init(repository: Repository, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag(), workers: Int = max(1, min(8, sysconf(Int32(_SC_NPROCESSORS_ONLN))))) {
        self.repository = repository
        self.cancellation = cancellation
        self.progress = progress
        self.workers = workers
    }

    public func cancel() { cancellation.cancel() }

    struct FileJob: Sendable {
        let path: String
        let node: Node
    }

    struct Plan {
        var files: [FileJob] = []
        /// How many times each content blob is used across the files to write.
        var uses: [BlobID: Int] = [:]
        var hardlinks: [(path: String, first: String)] = []
        var directories: [(path: String, node: Node)] = []
        var firstOfInode: [String: String] = [:]
    }

    /// Restores `components` (all when empty) of a snapshot under `target`.
    public func restore(_ record: SnapshotRecord, manifest: SnapshotManifest, components: [String], target: String, verify: Bool) throws -> RestoreResult {
        let started = Timestamp.now()
        let names = components.isEmpty ? manifest.components.keys.sorted() : components
        for name in names where manifest.components[name] == nil {
            throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
        }
        let reader = BlobReader(repository: repository)
        var plan = Plan()
        progress.phase = "planning"
        try POSIX.makeDirectories(target)
        for name in names {
            let c = manifest.components[name]!
            let dest = target + "/" + name
            try prepareDirectory(dest)
            var rootNode = Node(name: name, kind: .directory)
            rootNode.mode = c.rootMode ?? 0o755
            rootNode.mtime = c.rootMtime ?? Timestamp(seconds: 0)
            try makePlan(tree: c.treeID!, at: dest, relative: name, reader: reader, plan: &plan)
            if c.rootMtime != nil { plan.directories.append((dest, rootNode)) }
        }
        progress.phase = "restoring"
        let bytes = plan.files.reduce(UInt64(0)) { $0 + $1.node.size }
        progress.bytesTotal.store(Int(bytes), ordering: .relaxed)
        progress.filesTotal.store(plan.files.count + plan.hardlinks.count, ordering: .relaxed)
        let shared = SharedBlobs(uses: plan.uses.filter { $0.value > 1 })
        try runParallel(plan.files.sorted { $0.node.size > $1.node.size }) { job, reader in
            try self.write(job, reader: reader, shared: shared)
        }
        for (path, first) in plan.hardlinks {
            unlink(path)
            guard link(first, path) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "link") }
            progress.filesDone.add(1, ordering: .relaxed)
        }
        // Deepest first, so that setting a child's mtime does not disturb its parent's.
        for (path, node) in plan.directories.reversed() {
            try applyMetadata(path: path, node: node, fd: nil)
        }
        var mismatches: [String] = []
        if verify {
            progress.phase = "verifying"
            let found = Mutex<[String]>([])
            try runParallel(plan.files) { job, _ in
                if !(try self.matches(job)) { found.withLock { $0.append(job.path) } }
            }
            mismatches = found.withLock { $0 }.sorted()
        }
        progress.phase = "done"
        return RestoreResult(
            files: plan.files.count + plan.hardlinks.count, bytes: bytes,
            seconds: Timestamp.now().timeInterval - started.timeInterval, mismatches: mismatches)
    }

    /// Makes `path` an empty-or-existing directory, replacing a non-directory in the way.
    private func prepareDirectory(_ path: String) throws {
        var st = stat()
        if lstat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            guard unlink(path) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "remove") }
        }
        guard mkdir(path, 0o700) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "mkdir") }
    }

    private func makePlan(tree: BlobID, at path: String, relative: String, reader: BlobReader, plan: inout Plan) throws {
        let t = try reader.readTree(tree, path: relative)
        for node in t.nodes {
            let child = path + "/" + node.name
            switch node.kind {
            case .directory:
                try prepareDirectory(child)
                plan.directories.append((child, node))
                try self.makePlan(tree: node.subtree!, at: child, relative: relative + "/" + node.name, reader: reader, plan: &plan)
            case .file:
                if node.links > 1 {
                    let key = "\(node.device):\(node.inode)"
                    if let first = plan.firstOfInode[key] {
                        plan.hardlinks.append((child, first))
                        continue
                    }
                    plan.firstOfInode[key] = child
                }
                for id in node.content where repository.index.location(of: id) == nil {
                    throw RepositoryError.missingBlob(id: id, context: "content of \(relative)/\(node.name)")
                }
                for id in node.content { plan.uses[id, default: 0] += 1 }
                plan.files.append(FileJob(path: child, node: node))
            case .symlink:
                try removeIfPresent(child)
                guard symlink(node.linkTarget, child) == 0 else { throw RepositoryError.fromErrno(path: child, operation: "symlink") }
                try applyMetadata(path: child, node: node, fd: nil)
            case .fifo:
                try removeIfPresent(child)
                guard mkfifo(child, mode_t(node.mode)) == 0 else { throw RepositoryError.fromErrno(path: child, operation: "mkfifo") }
                try applyMetadata(path: child, node: node, fd: nil)
            case .charDevice, .blockDevice:
                guard isRoot else { continue }
                try removeIfPresent(child)
                let type = node.kind == .charDevice ? S_IFCHR : S_IFBLK
                guard mknod(child, type | mode_t(node.mode), dev_t(node.rdev)) == 0 else { throw RepositoryError.fromErrno(path: child, operation: "mknod") }
                try applyMetadata(path: child, node: node, fd: nil)
            case .socket:
                continue
            }
        }
    }

    private func removeIfPresent(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            try POSIX.removeTree(path)
        } else if unlink(path) != 0 {
            throw RepositoryError.fromErrno(path: path, operation: "remove")
        }
    }

    /// Runs `body` over `jobs` on the worker threads, each with its own blob reader.
    private func runParallel(_ jobs: [FileJob], _ body: @escaping @Sendable (FileJob, BlobReader) throws -> Void) throws {
        let next = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
        let repository = self.repository
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, jobs.count))) { _ in
            let reader = BlobReader(repository: repository)
            while failure.withLock({ $0 == nil }) {
                if cancellation.isCancelled {
                    failure.withLock { if $0 == nil { $0 = EngineError.cancelled } }
                    break
                }
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < jobs.count else { break }
                do {
                    try body(jobs[i], reader)
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Where blobs used by several files were first written: later uses copy those bytes
    /// with `copy_file_range` instead of reading, decompressing and hashing them again.
    final class SharedBlobs: Sendable {
        let uses: [BlobID: Int]
        private let written = Mutex<[BlobID: (path: String, offset: Int)]>([:])

        init(uses: [BlobID: Int]) { self.uses = uses }

        func location(of id: BlobID) -> (path: String, offset: Int)? {
            uses[id] == nil ? nil : written.withLock { $0[id] }
        }

        func record(_ id: BlobID, path: String, offset: Int) {
            guard uses[id] != nil else { return }
            written.withLock { if $0[id] == nil { $0[id] = (path, offset) } }
        }
    }

    /// Copies `length` bytes from an already restored (and verified) file; false when the
    /// kernel cannot, and the caller reads the blob instead.
    private func copyRestored(from source: (path: String, offset: Int), length: Int, to fd: Int32, at offset: Int) -> Bool {
        let src = open(source.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard src >= 0 else { return false }
        defer { close(src) }
        var inOffset = off_t(source.offset), outOffset = off_t(offset)
        var left = length
        while left > 0 {
            let n = systemCopyFileRange(src, &inOffset, fd, &outOffset, left, 0)
            if n <= 0 { return false }
            left -= n
        }
        return true
    }

    private func write(_ job: FileJob, reader: BlobReader, shared: SharedBlobs) throws {
        var fd = open(job.path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ETXTBSY) {
            try removeIfPresent(job.path)
            fd = open(job.path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: job.path, operation: "create") }
        defer { close(fd) }
        var offset = 0
        for id in job.node.content {
            if !job.node.sparse, let source = shared.location(of: id), let length = repository.index.location(of: id).map({ Int($0.rawLength) }),
                copyRestored(from: source, length: length, to: fd, at: offset)
            {
                offset += length
                progress.bytesDone.add(length, ordering: .relaxed)
                continue
            }
            let data = try reader.read(id)
            if !(job.node.sparse && Self.isZero(data)) {
                try data.withUnsafeBytes { raw in
                    var done = 0
                    while done < raw.count {
                        let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                        if n < 0 {
                            if errno == EINTR { continue }
                            throw RepositoryError.fromErrno(path: job.path, operation: "write")
                        }
                        done += n
                    }
                }
            }
            shared.record(id, path: job.path, offset: offset)
            offset += data.count
            progress.bytesDone.add(data.count, ordering: .relaxed)
        }
        guard ftruncate(fd, off_t(offset)) == 0 else { throw RepositoryError.fromErrno(path: job.path, operation: "truncate") }
        try applyMetadata(path: job.path, node: job.node, fd: fd)
        progress.filesDone.add(1, ordering: .relaxed)
    }

    static func isZero(_ data: [UInt8]) -> Bool {
        data.withUnsafeBytes { raw in
            let words = raw.count / 8
            let p = raw.baseAddress!
            var acc: UInt64 = 0
            var i = 0
            while i < words {
                acc |= p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
                if acc != 0 { return false }
                i += 1
            }
            for j in (words * 8)..<raw.count where raw[j] != 0 { return false }
            return true
        }
    }

    /// Owner (as root), permission bits and timestamps; symlinks get owner and mtime only.
    private func applyMetadata(path: String, node: Node, fd: Int32?) throws {
        if isRoot {
            let r = fd.map { fchown($0, node.uid, node.gid) } ?? lchown(path, node.uid, node.gid)
            if r != 0 { throw RepositoryError.fromErrno(path: path, operation: "chown") }
        }
        if node.kind != .symlink {
            let r = fd.map { fchmod($0, mode_t(node.mode)) } ?? chmod(path, mode_t(node.mode))
            if r != 0 { throw RepositoryError.fromErrno(path: path, operation: "chmod") }
        }
        var times = [
            timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
            timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
        ]
        let r = fd.map { futimens($0, &times) } ?? utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
        if r != 0 { throw RepositoryError.fromErrno(path: path, operation: "set times of") }
    }

    /// Re-reads a restored file and compares each chunk's hash with the snapshot.
    private func matches(_ job: FileJob) throws -> Bool {
        let fd = open(job.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var offset = 0
        for id in job.node.content {
            guard let loc = repository.index.location(of: id) else { return false }
            let bytes = try POSIX.pread(fd, count: Int(loc.rawLength), offset: offset, path: job.path)
            if BlobID.hash(bytes) != id { return false }
            offset += bytes.count
        }
        var st = stat()
        return fstat(fd, &st) == 0 && Int(st.st_size) == offset
    }
}

/// glibc's copy_file_range(2); Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("copy_file_range")
private func systemCopyFileRange(_ fdIn: Int32, _ offIn: UnsafeMutablePointer<off_t>?, _ fdOut: Int32, _ offOut: UnsafeMutablePointer<off_t>?, _ length: Int, _ flags: UInt32) -> Int
