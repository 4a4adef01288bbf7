#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
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
/// trees whose decoder rejects `/`, `.`, `..` and names listed twice or out of order, and
/// every change goes through a `ConfinedDirectory` of the target: no symlink is followed on
/// the way to any entry, the last component included, so nothing is written, chmod'ed,
/// chown'ed or linked outside the target even if an entry is swapped for a symlink while the
/// restore runs; existing symlinks in the way are replaced, never followed. Files are written on
/// `workers` threads; holes of sparse files stay holes; modes, owners (as root), mtimes
/// and hard links are restored, directories' mtimes last.
public final class Restorer: Sendable {
    let repository: Repository
    public let progress: WorkProgress
    let workers: Int
    let cancellation: CancellationFlag
    private let isRoot = geteuid() == 0

    public init(repository: Repository, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag(), workers: Int = Restorer.defaultWorkers) {
        self.repository = repository
        self.cancellation = cancellation
        self.progress = progress
        self.workers = workers
    }

    public func cancel() { cancellation.cancel() }

    /// Two threads per core: direct writes block on the device, and the other thread of the
    /// pair decompresses and hashes meanwhile.
    public static var defaultWorkers: Int { WorkerThreads.defaultCount }

    struct FileJob: Sendable {
        let path: String
        let node: Node
        let dir: ConfinedDirectory
    }

    /// What the walk of the trees has found: the files of the batch being gathered, and
    /// what is done once every file is written.
    struct Plan {
        var files: [FileJob] = []
        var hardlinks: [(path: String, first: String, size: UInt64)] = []
        var directories: [(path: String, node: Node)] = []
        var firstOfInode: [String: String] = [:]
        /// Files written and their bytes (hard links not counted).
        var written = 0
        var bytes: UInt64 = 0
    }

    /// Files written in batches of this many, each as the walk of the trees gathers it: memory
    /// follows the batch, not the tree.
    static let batchFiles = 8192

    /// Restores `components` (all when empty) of a snapshot under `target`.
    public func restore(_ record: SnapshotRecord, manifest: SnapshotManifest, components: [String], target: String, verify: Bool) throws -> RestoreResult {
        let started = Timestamp.now()
        let names = components.isEmpty ? manifest.components.keys.sorted() : components
        for name in names where manifest.components[name] == nil {
            throw EngineError.unknownComponent(name, known: Array(manifest.components.keys))
        }
        let reader = BlobReader(repository: repository)
        var plan = Plan()
        progress.phase = "restoring"
        // The totals from the snapshot's counts (every name of a file, its size each time).
        for name in names {
            guard let c = record.metadata.components[name] else { continue }
            progress.bytesTotal.add(Int(c.bytes), ordering: .relaxed)
            progress.filesTotal.add(c.files, ordering: .relaxed)
        }
        try checkPresence(manifest, components: names, reader: reader)
        try POSIX.makeDirectories(target)
        let dir = try ConfinedDirectory(target)
        for name in names {
            let c = manifest.components[name]!
            let dest = target + "/" + name
            try prepareDirectory(dest, in: dir)
            var rootNode = Node(name: name, kind: .directory)
            rootNode.mode = c.rootMode ?? 0o755
            rootNode.mtime = c.rootMtime ?? Timestamp(seconds: 0)
            try makePlan(tree: c.treeID, at: dest, relative: name, reader: reader, dir: dir, plan: &plan)
            if c.rootMtime != nil { plan.directories.append((dest, rootNode)) }
        }
        try writeBatch(&plan)
        for (path, first, size) in plan.hardlinks {
            try dir.link(first, at: path)
            progress.filesDone.add(1, ordering: .relaxed)
            progress.bytesDone.add(Int(size), ordering: .relaxed)
        }
        // Deepest first, so that setting a child's mtime does not disturb its parent's.
        for (path, node) in plan.directories.reversed() {
            try applyMetadata(path: path, node: node, fd: nil, dir: dir)
        }
        let mismatches = verify ? try verifyRestored(manifest: manifest, components: names, target: target) : []
        progress.phase = "done"
        return RestoreResult(
            files: plan.written + plan.hardlinks.count, bytes: plan.bytes,
            seconds: Timestamp.now().timeInterval - started.timeInterval, mismatches: mismatches)
    }

    /// Every chunk the components need is in the index: files are written batch by batch, so
    /// a missing one is looked for first, before anything is written (a walk of the trees and
    /// an index lookup per chunk: ~0.1 s for 200,000 files).
    private func checkPresence(_ manifest: SnapshotManifest, components: [String], reader: BlobReader) throws {
        for name in components {
            guard let c = manifest.components[name] else { continue }
            try ComponentDigest.walk(c.treeID, prefix: name, loadTree: { id, p in try reader.readTree(id, path: p) }) { path, node in
                guard node.kind == .file else { return }
                for id in node.content where repository.location(of: id) == nil {
                    throw RepositoryError.missingBlob(id: id, context: "content of \(path)")
                }
            }
        }
    }

    /// Writes the files gathered so far, largest first, on the worker threads.
    private func writeBatch(_ plan: inout Plan) throws {
        guard !plan.files.isEmpty else { return }
        plan.written += plan.files.count
        plan.bytes += plan.files.reduce(UInt64(0)) { $0 + $1.node.size }
        try runParallel(plan.files.sorted { $0.node.size > $1.node.size }) { job, worker in
            try self.write(job, worker: worker)
        }
        plan.files.removeAll(keepingCapacity: true)
    }

    /// Re-reads what a restore into `target` wrote and returns the files that differ from the
    /// snapshot (content by chunk hashes, and size), a batch of files at a time.
    public func verifyRestored(manifest: SnapshotManifest, components: [String], target: String) throws -> [String] {
        let reader = BlobReader(repository: repository)
        let dir = try ConfinedDirectory(target)
        progress.phase = "verifying"
        let found = Mutex<[String]>([])
        var jobs: [FileJob] = []
        func check() throws {
            try runParallel(jobs) { job, _ in
                if !(try self.matches(job)) { found.withLock { $0.append(job.path) } }
            }
            jobs.removeAll(keepingCapacity: true)
        }
        for name in components.isEmpty ? manifest.components.keys.sorted() : components {
            guard let c = manifest.components[name] else { continue }
            try ComponentDigest.walk(c.treeID, prefix: "", loadTree: { id, p in try reader.readTree(id, path: p) }) { path, node in
                guard node.kind == .file else { return }
                jobs.append(FileJob(path: target + "/" + name + "/" + path, node: node, dir: dir))
                if jobs.count >= Self.batchFiles { try check() }
            }
        }
        try check()
        return found.withLock { $0 }.sorted()
    }

    /// Makes `path` an empty-or-existing directory, replacing a non-directory in the way.
    private func prepareDirectory(_ path: String, in dir: ConfinedDirectory) throws {
        if let st = try dir.lstat(path) {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            try dir.removeTree(path)
        }
        try dir.mkdir(path, mode: 0o700)
    }

    private func makePlan(tree: BlobID, at path: String, relative: String, reader: BlobReader, dir: ConfinedDirectory, plan: inout Plan) throws {
        let t = try reader.readTree(tree, path: relative)
        for node in t.nodes {
            let child = path + "/" + node.name
            switch node.kind {
            case .directory:
                try prepareDirectory(child, in: dir)
                plan.directories.append((child, node))
                try self.makePlan(tree: node.subtree!, at: child, relative: relative + "/" + node.name, reader: reader, dir: dir, plan: &plan)
            case .file:
                if node.links > 1 {
                    let key = "\(node.device):\(node.inode)"
                    if let first = plan.firstOfInode[key] {
                        plan.hardlinks.append((child, first, node.size))
                        continue
                    }
                    plan.firstOfInode[key] = child
                }
                plan.files.append(FileJob(path: child, node: node, dir: dir))
                if plan.files.count >= Self.batchFiles { try writeBatch(&plan) }
            case .symlink:
                try dir.removeTree(child)
                try dir.symlink(node.linkTarget, at: child)
                try applyMetadata(path: child, node: node, fd: nil, dir: dir)
            case .fifo:
                try dir.removeTree(child)
                try dir.mknod(child, mode: S_IFIFO | mode_t(node.mode & 0o777), device: 0)
                try applyMetadata(path: child, node: node, fd: nil, dir: dir)
            case .charDevice, .blockDevice:
                guard isRoot else { continue }
                try dir.removeTree(child)
                let type = node.kind == .charDevice ? S_IFCHR : S_IFBLK
                try dir.mknod(child, mode: type | mode_t(node.mode & 0o777), device: dev_t(node.rdev))
                try applyMetadata(path: child, node: node, fd: nil, dir: dir)
            case .socket:
                continue
            }
        }
    }

    /// Runs `body` over `jobs` on the worker threads, each with its own blob reader.
    private func runParallel(_ jobs: [FileJob], _ body: @escaping @Sendable (FileJob, Worker) throws -> Void) throws {
        let repository = self.repository
        try WorkerThreads.forEach(jobs, threads: workers, cancellation: cancellation, state: { Worker(repository: repository) }) { job, worker in
            try body(job, worker)
        }
    }

    /// Per-thread restore state: a blob reader and the direct-write buffer.
    final class Worker {
        let reader: BlobReader
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: DirectFileWriter.bufferSize, alignment: 4096)
        init(repository: Repository) { reader = BlobReader(repository: repository) }
        deinit { buffer.deallocate() }
    }

    private func write(_ job: FileJob, worker: Worker) throws {
        // Sparse files, and small ones, through the page cache: a direct write of a few KiB
        // waits for the device (20,000 files of 1–4 KiB: 0.46 s buffered, 1.7 s direct).
        if job.node.sparse || job.node.size < Self.directWriteMinimum {
            try writeSparse(job, reader: worker.reader)
            return
        }
        let file: DirectFileWriter
        let opener = { (flags: Int32) in job.dir.openOrFail(job.path, flags: flags, mode: 0o600) }
        do {
            file = try DirectFileWriter(path: job.path, buffer: worker.buffer, opener: opener)
        } catch {
            // A symlink or directory in the way is replaced, never followed.
            try job.dir.removeTree(job.path)
            file = try DirectFileWriter(path: job.path, buffer: worker.buffer, opener: opener)
        }
        // Blobs are decoded into the write buffer itself (no copy of every byte) and checked
        // against their ids in pairs (BlobID.hashPair): one decoded blob waits for the next,
        // or for the buffer's next write, which checks it first.
        let reader = worker.reader
        var waiting: (data: UnsafeRawBufferPointer, id: BlobID, location: BlobLocation)?
        file.beforeWrite = {
            if let w = waiting {
                waiting = nil
                try reader.check(w.data, id: w.id, at: w.location)
            }
        }
        var trail = PackReadTrail(repository: repository)
        for id in job.node.content {
            guard let location = repository.location(of: id) else {
                throw RepositoryError.missingBlob(id: id, context: "not in any index")
            }
            trail.reading(location)
            let count = Int(location.rawLength)
            if count <= DirectFileWriter.bufferSize - 4096 {
                try file.append(count: count) { space in
                    try reader.read(id, at: location, into: space, check: false)
                    if let w = waiting {
                        waiting = nil
                        try reader.check(w.data, id: w.id, at: w.location, and: UnsafeRawBufferPointer(space), id: id, at: location)
                    } else {
                        waiting = (UnsafeRawBufferPointer(space), id, location)
                    }
                }
            } else {
                let data = try reader.read(id, at: location)
                try data.withUnsafeBytes { try file.append($0) }
            }
            progress.bytesDone.add(count, ordering: .relaxed)
        }
        trail.release()
        try file.finish()
        try applyMetadata(path: job.path, node: job.node, fd: file.fd, dir: job.dir)
        progress.filesDone.add(1, ordering: .relaxed)
    }

    /// Files below this size are written through the page cache, larger ones with O_DIRECT.
    static let directWriteMinimum: UInt64 = 1 << 20

    /// Sparse files go through the page cache so that all-zero chunks can be skipped and
    /// stay holes (and small files, whose direct writes would each wait for the device).
    private func writeSparse(_ job: FileJob, reader: BlobReader) throws {
        var fd = job.dir.openOrFail(job.path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        if fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ETXTBSY) {
            try job.dir.removeTree(job.path)
            fd = job.dir.openOrFail(job.path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        }
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: job.path, operation: "create") }
        defer { close(fd) }
        var offset = 0
        var end = 0
        // A hole's chunks are known by their ids (zeros of a zero run's length): not read.
        let holes = job.node.sparse ? zeroRunIDs() : [:]
        for id in job.node.content {
            if let length = holes[id] {
                offset += length
                progress.bytesDone.add(length, ordering: .relaxed)
                continue
            }
            let data = try reader.read(id)
            if !data.withUnsafeBytes({ Chunker.isZero($0) }) {
                end = offset + data.count
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
            offset += data.count
            progress.bytesDone.add(data.count, ordering: .relaxed)
        }
        // The file (created empty) ends where the last write did, unless zeros at its end were
        // skipped: only then is it extended (a hole), which for a new small file would cost a
        // tenth of the restore.
        if end != offset {
            guard ftruncate(fd, off_t(offset)) == 0 else { throw RepositoryError.fromErrno(path: job.path, operation: "truncate") }
        }
        try applyMetadata(path: job.path, node: job.node, fd: fd, dir: job.dir)
        progress.filesDone.add(1, ordering: .relaxed)
    }

    /// The ids of the all-zero chunks that runs of zeros are cut into (one length per
    /// chunking scheme of the repository), with their lengths.
    private func zeroRunIDs() -> [BlobID: Int] {
        let policy = repository.config.chunkingPolicy, seed = repository.config.chunkerSeed
        var out: [BlobID: Int] = [:]
        for scheme in [policy.defaultScheme, policy.fixedScheme] {
            let length = Chunker(scheme: scheme, seed: seed).zeroRunLength
            out[repository.zeroBlobID(length: length)] = length
        }
        return out
    }

    /// Owner (as root), permission bits and timestamps; symlinks get owner and mtime only.
    /// Through the open descriptor of a file just written, or else relative to its parent
    /// directory's descriptor, never following a symlink.
    private func applyMetadata(path: String, node: Node, fd: Int32?, dir: ConfinedDirectory) throws {
        guard let fd else {
            // Directories: attributes first, as setting them may touch the times.
            if node.kind == .directory { _ = try dir.setXattrs(node.xattrs, directory: path) }
            try dir.setMetadata(path, uid: node.uid, gid: node.gid, mode: node.mode, mtime: node.mtime, isSymlink: node.kind == .symlink, chown: isRoot)
            return
        }
        if isRoot && fchown(fd, node.uid, node.gid) != 0 { throw RepositoryError.fromErrno(path: path, operation: "chown") }
        if fchmod(fd, mode_t(node.mode)) != 0 { throw RepositoryError.fromErrno(path: path, operation: "chmod") }
        // After chown, which clears file capabilities (security.capability).
        _ = try ConfinedDirectory.setXattrs(node.xattrs, fd: fd, path: path)
        var times = [
            timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
            timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
        ]
        if futimens(fd, &times) != 0 { throw RepositoryError.fromErrno(path: path, operation: "set times of") }
    }

    /// Re-reads a restored file and compares each chunk's hash with the snapshot.
    private func matches(_ job: FileJob) throws -> Bool {
        let fd = job.dir.openOrFail(job.path, flags: O_RDONLY, mode: 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var offset = 0
        for id in job.node.content {
            guard let loc = repository.location(of: id) else { return false }
            let bytes = try POSIX.pread(fd, count: Int(loc.rawLength), offset: offset, path: job.path)
            if repository.blobID(bytes) != id { return false }
            offset += bytes.count
        }
        var st = stat()
        return fstat(fd, &st) == 0 && Int(st.st_size) == offset
    }
}
