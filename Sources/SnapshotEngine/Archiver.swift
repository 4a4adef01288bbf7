#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization
import SnapshotCore

/// A files component to capture: a file or directory tree stored under `<name>/`.
public struct FileSource: Sendable, Equatable {
    public var name: String
    /// Absolute path of the file or directory.
    public var path: String
    public var excludes: [String]
    /// What metadata calls the component (`files`; `qdrant` for downloaded collection snapshots).
    public var kind: ComponentKind
    /// What metadata names as the source (the path; the server URL for `qdrant`).
    public var label: String

    public init(name: String, path: String, excludes: [String] = [], kind: ComponentKind = .files, label: String? = nil) {
        self.name = name
        self.path = path
        self.excludes = excludes
        self.kind = kind
        self.label = label ?? path
    }
}

/// Everything `create` needs; the CLI and the MQTT agent both build one of these.
public struct CreateRequest: Sendable {
    public var type: SnapshotType
    public var name: String
    public var auto: Bool
    public var time: Timestamp?
    public var tags: [String: String]
    public var sources: [FileSource]
    /// Components produced at capture time (command output, environment, MQTT messages).
    public var generated: [GeneratedSource]
    /// Scratch directories holding downloaded sources (Qdrant snapshots), removed once the
    /// snapshot is committed or has failed.
    public var temporaryDirectories: [String] = []
    public var compressionLevel: Int
    /// How files are cut into chunks; nil: as the repository's config says.
    public var chunking: ChunkingPolicy?
    public var workers: Int
    /// The name gets `-<the new snapshot's id>` appended (pre-restore snapshots).
    public var appendIDToName = false

    public init(
        type: SnapshotType, name: String = "", auto: Bool = false, time: Timestamp? = nil, tags: [String: String] = [:],
        sources: [FileSource], generated: [GeneratedSource] = [], compressionLevel: Int = 3, chunking: ChunkingPolicy? = nil,
        workers: Int = WorkerThreads.defaultCount
    ) {
        self.type = type
        self.name = name
        self.auto = auto
        self.time = time
        self.tags = tags
        self.sources = sources
        self.generated = generated
        self.compressionLevel = compressionLevel
        self.chunking = chunking
        self.workers = workers
    }
}

/// Takes snapshots: scans the sources, reads only files that changed since the parent
/// snapshot, chunks, hashes, compresses and packs new data on `workers` threads, then writes
/// trees, the index and the snapshot (in that order; see docs/design.md "Commit point").
///
/// The caller holds the repository's exclusive lock.
public final class Archiver: Sendable {
    let repository: Repository
    let catalog: SnapshotCatalog
    public let progress: WorkProgress
    let cancellation: CancellationFlag
    private let readCounts = Mutex((files: 0, bytes: 0))

    /// Files and bytes the last `create` actually read (the rest were unchanged since the
    /// parent snapshot).
    public var lastRead: (files: Int, bytes: Int) { readCounts.withLock { $0 } }

    /// Tree digests kept by the caller across snapshots (a continuous watch): the checksum
    /// of a component then costs the directories that changed.
    public let digestCache: DigestCache?

    public init(repository: Repository, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag(), digestCache: DigestCache? = nil) {
        self.digestCache = digestCache
        self.repository = repository
        self.catalog = SnapshotCatalog(repository: repository)
        self.progress = progress
        self.cancellation = cancellation
    }

    /// Stops the running `create` at the next file or chunk; nothing is committed.
    public func cancel() { cancellation.cancel() }

    // MARK: scan

    /// A file to read: filled in by a reading thread, then handed back to the scanning
    /// thread, which puts its node in its directory.
    final class FileJob: @unchecked Sendable {
        let path: String
        var node: Node
        var failure: String?
        /// The chunks of the file's version in the parent snapshot, when it had more than one
        /// (see `PreviousCuts`; a single chunk was cut by the end of the file).
        var previous: [BlobID] = []
        /// Put in its place (read, or failed).
        var placed = false
        /// The directory that lists it, and its place among the directory's entries (unowned:
        /// the directory holds the job until it is placed, and a failed create drops both).
        unowned let dir: ScanDir
        let slot: Int
        init(path: String, node: Node, dir: ScanDir, slot: Int) {
            self.path = path
            self.node = node
            self.dir = dir
            self.slot = slot
        }
    }

    /// A directory being listed, or listed and waiting for some of its files to be read or
    /// its subdirectories to be stored. Its tree is stored, and its entries freed, the moment
    /// the last one is final, so memory follows the files in flight and not the tree.
    final class ScanDir {
        var node: Node
        /// Path relative to the component root ("" for the root).
        let relative: String
        var entries: [Entry] = []
        /// The directory that lists it, and its place there (-1: the component root).
        weak var parent: ScanDir?
        let slot: Int
        /// Entries not final yet.
        var waiting = 0
        /// Every entry is in `entries` (the listing is over).
        var listed = false

        init(node: Node, relative: String, parent: ScanDir?, slot: Int) {
            self.node = node
            self.relative = relative
            self.parent = parent
            self.slot = slot
        }

        func path(of name: String) -> String { relative.isEmpty ? name : relative + "/" + name }
    }

    enum Entry {
        /// Final: a file read or unchanged, a directory whose tree is stored, anything else.
        case node(Node)
        /// A file being read.
        case job(FileJob)
        /// A subdirectory waiting for its files.
        case dir(ScanDir)
        /// A file that could not be read (recorded as skipped), or a place being filled.
        case none
    }

    struct ScanState {
        /// Digests and counts of the trees stored by this create (version 2), by id.
        var digests: [BlobID: DigestCache.Entry] = [:]
        /// The component root's node and tree, once stored.
        var root: Node?
        var skipped: [String] = []
        /// Entries left out by an exclude pattern (for `--debug`; never stored).
        var excluded: [String] = []
        var files = 0
        var bytes: UInt64 = 0
        /// Files (and their bytes) that were read rather than taken from the parent.
        var readFiles = 0
        var readBytes = 0
    }

    /// What a continuous snapshot re-reads of one component: the directories on the way to a
    /// changed path are listed again; every other directory keeps the parent's tree as is.
    final class PartialScan {
        let changes: ComponentChanges
        /// Every directory that holds a changed path, up to the root (`""`).
        let onPath: Set<String>
        let parentRoot: Tree
        let reader: BlobReader
        /// Directories listed again, and those scanned whole (new or moved in).
        var listed: Set<String> = []
        var scannedWhole: [String] = []
        private var trees: [String: Tree] = [:]

        init(changes: ComponentChanges, parentRoot: Tree, reader: BlobReader) {
            self.changes = changes
            self.parentRoot = parentRoot
            self.reader = reader
            var dirs: Set<String> = [""]
            for p in changes.paths.union(changes.moved.values) {
                var d = p
                while let slash = d.lastIndex(of: "/") {
                    d = String(d[..<slash])
                    if !dirs.insert(d).inserted { break }
                }
            }
            onPath = dirs
        }

        /// The parent's node at a relative path (where a moved entry came from).
        func oldNode(at path: String) -> Node? {
            var tree = parentRoot
            var prefix = ""
            let parts = path.split(separator: "/").map(String.init)
            for (i, part) in parts.enumerated() {
                guard let n = tree.nodes.first(where: { $0.name == part }) else { return nil }
                if i == parts.count - 1 { return n }
                prefix = prefix.isEmpty ? part : prefix + "/" + part
                guard n.kind == .directory, let sub = n.subtree else { return nil }
                if let t = trees[prefix] {
                    tree = t
                } else {
                    guard let t = try? reader.readTree(sub, path: prefix) else { return nil }
                    trees[prefix] = t
                    tree = t
                }
            }
            return nil
        }

        /// Whether an entry the parent lists here under `relative/…` was left as it was.
        func isUntouched(_ relative: String) -> Bool {
            let parent = relative.lastIndex(of: "/").map { String(relative[..<$0]) } ?? ""
            if listed.contains(parent) { return false }
            return !scannedWhole.contains { relative == $0 || relative.hasPrefix($0 + "/") }
        }
    }

    /// What the scan of every component shares: where trees are stored, files read, and
    /// hard links remembered. Used by the scanning thread only.
    final class ScanContext {
        var excludes = ExcludeMatcher([])
        let reader: BlobReader
        let treeWriter: BlobWriter
        let pipeline: ReadPipeline
        /// Digests of trees this create did not store (kept from a parent), by id.
        let digestCache: DigestCache
        /// Hard links: the first name seen of each inode with several (read once), and the
        /// other names waiting for it to be read.
        var firstOfInode: [String: FileJob] = [:]
        var sameInode: [ObjectIdentifier: [FileJob]] = [:]
        /// The repository's own directory, when a component's tree holds it: left out, or
        /// every snapshot would hold a copy of all the packs before it.
        var repositoryRoot: FileIdentity?

        init(reader: BlobReader, treeWriter: BlobWriter, pipeline: ReadPipeline, digestCache: DigestCache) {
            self.reader = reader
            self.treeWriter = treeWriter
            self.pipeline = pipeline
            self.digestCache = digestCache
        }
    }

    /// One entry of a directory as listed: its lstat, and a symlink's target.
    struct Listed {
        var name: String
        var st: stat
        var link: String?
    }

    /// Lists a directory through its descriptor (`lstat` of each entry relative to it, the
    /// targets of symlinks, the directory's own extended attributes), then closes it, so a
    /// deep tree holds one descriptor at a time. Below the root a symlink swapped in for the
    /// directory is not followed.
    private func list(_ path: String, relative: String, context: ScanContext, state: inout ScanState) throws -> (entries: [Listed], xattrs: [Xattr]) {
        let fd = POSIX.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (relative.isEmpty ? 0 : O_NOFOLLOW))
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open directory") }
        defer { close(fd) }
        let names = try POSIX.listDirectory(descriptor: fd, path: path)
        var entries: [Listed] = []
        entries.reserveCapacity(names.count)
        for name in names.sorted() {
            if cancellation.isCancelled { throw EngineError.cancelled }
            let childRel = relative.isEmpty ? name : relative + "/" + name
            if context.excludes.excludes(name: name, relativePath: childRel) {
                if progress.isTracing { state.excluded.append(childRel) }
                continue
            }
            var st = stat()
            guard POSIX.fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                state.skipped.append("\(childRel): \(POSIX.errorText(errno))")
                continue
            }
            if (st.st_mode & S_IFMT) == S_IFDIR, FileIdentity(st) == context.repositoryRoot {
                progress.note("\(childRel): the repository itself, left out")
                if progress.isTracing { state.excluded.append(childRel) }
                continue
            }
            var link: String?
            if (st.st_mode & S_IFMT) == S_IFLNK {
                guard let target = FileStat.readLink(at: fd, name) else {
                    state.skipped.append("\(childRel): \(POSIX.errorText(errno))")
                    continue
                }
                link = target
            }
            entries.append(Listed(name: name, st: st, link: link))
        }
        return (entries, POSIX.xattrs(descriptor: fd))
    }

    /// Scans a directory: unchanged files keep the parent's chunks, changed ones go to the
    /// reading threads. Returns the directory as a final node (its tree stored) when every
    /// entry is final by the end of its listing, else as a `ScanDir` that completes later.
    private func scan(
        directory path: String, relative: String, node: Node, parent: Tree?, in up: ScanDir?, slot: Int,
        context: ScanContext, state: inout ScanState, partial: PartialScan? = nil
    ) throws -> Entry {
        partial?.listed.insert(relative)
        let dir = ScanDir(node: node, relative: relative, parent: up, slot: slot)
        let listed: [Listed]
        do {
            (listed, dir.node.xattrs) = try list(path, relative: relative, context: context, state: &state)
        } catch let e as RepositoryError {
            state.skipped.append("\(relative.isEmpty ? "." : relative): \(e.systemReason)")
            listed = []
        }
        var parentNodes: [String: Node] = [:]
        if let parent {
            parentNodes.reserveCapacity(parent.nodes.count)
            for n in parent.nodes { parentNodes[n.name] = n }
        }
        let index = repository.index
        dir.entries.reserveCapacity(listed.count)
        for item in listed {
            if cancellation.isCancelled { throw EngineError.cancelled }
            let name = item.name
            let childPath = path + "/" + name
            let childRel = dir.path(of: name)
            guard var child = FileStat.node(name: name, item.st) else { continue }
            var old = parentNodes[name]
            // A rename seen whole: compare with what the entry was at its old path (its ctime
            // changed with the rename, nothing else).
            var renamed = false
            if let partial, let from = partial.changes.moved[childRel], let n = partial.oldNode(at: from), n.kind == child.kind {
                old = n
                renamed = true
            }
            switch child.kind {
            case .directory:
                let oldSub = old?.kind == .directory ? old?.subtree : nil
                if let partial, let oldSub, !renamed, !partial.changes.rescan.contains(childRel), !partial.onPath.contains(childRel),
                    index.location(of: oldSub) != nil
                {
                    // Nothing changed below: the parent's tree stands. Setting an extended
                    // attribute changes the ctime, so the same ctime means the same attributes.
                    child.xattrs = old!.ctime == child.ctime ? old!.xattrs : FileStat.xattrs(childPath)
                    child.subtree = oldSub
                    dir.entries.append(.node(child))
                    continue
                }
                var oldTree: Tree?
                if let oldSub { oldTree = try? context.reader.readTree(oldSub, path: childRel) }
                // New, moved in, or listed again since something below it changed.
                let whole = partial != nil && (oldSub == nil || renamed || partial!.changes.rescan.contains(childRel))
                if whole { partial?.scannedWhole.append(childRel) }
                let slot = dir.entries.count
                dir.entries.append(.none)
                let entry = try scan(
                    directory: childPath, relative: childRel, node: child, parent: oldTree, in: dir, slot: slot,
                    context: context, state: &state, partial: whole ? nil : partial)
                dir.entries[slot] = entry
                if case .dir = entry { dir.waiting += 1 }
            case .file:
                state.files += 1
                state.bytes += child.size
                progress.bytesTotal.add(Int(child.size), ordering: .relaxed)
                progress.filesTotal.add(1, ordering: .relaxed)
                if let old, old.kind == .file, old.size == child.size, old.mtime == child.mtime,
                    old.ctime == child.ctime || renamed, old.inode == child.inode, old.sparse == child.sparse,
                    old.content.allSatisfy({ index.location(of: $0) != nil })
                {
                    child.content = old.content
                    child.xattrs = renamed ? FileStat.xattrs(childPath) : old.xattrs
                    dir.entries.append(.node(child))
                    progress.bytesDone.add(Int(child.size), ordering: .relaxed)
                    progress.filesDone.add(1, ordering: .relaxed)
                } else {
                    // Its extended attributes are read with its content, from its descriptor.
                    let job = FileJob(path: childPath, node: child, dir: dir, slot: dir.entries.count)
                    if let old, old.kind == .file, old.content.count > 1 { job.previous = old.content }
                    try submit(job, context: context, state: &state)
                }
            case .symlink:
                child.linkTarget = item.link ?? ""
                dir.entries.append(.node(child))
            default:
                dir.entries.append(.node(child))
            }
        }
        dir.listed = true
        guard dir.waiting == 0 else { return .dir(dir) }
        var n = dir.node
        n.subtree = try buildTree(dir, context: context, state: &state)
        return .node(n)
    }

    /// Hands a changed file (in its place in its directory) to the reading threads, and
    /// puts the files read meanwhile in theirs. A second name of an inode with several waits
    /// for the first instead of being read again.
    private func submit(_ job: FileJob, context: ScanContext, state: inout ScanState) throws {
        job.dir.entries.append(.job(job))
        job.dir.waiting += 1
        state.readFiles += 1
        state.readBytes += Int(job.node.size)
        if job.node.links > 1 {
            let key = "\(job.node.device):\(job.node.inode)"
            if let first = context.firstOfInode[key] {
                if !first.placed {
                    context.sameInode[ObjectIdentifier(first), default: []].append(job)
                } else {
                    try place(job, sameAs: first, context: context, state: &state)
                }
                return
            }
            context.firstOfInode[key] = job
        }
        try place(try context.pipeline.submit(job), context: context, state: &state)
        // An index file every so many new blobs: memory stays flat on a big first snapshot,
        // and one that is killed leaves data the next run finds instead of reading it again.
        if state.readFiles % 1024 == 0 && repository.index.unrecordedBlobs >= Self.indexEvery { try repository.commitIndex() }
    }

    /// New blobs between the index files a create writes as it goes.
    static let indexEvery = 32_768

    /// Puts files read into their directories, storing every directory that is then complete.
    private func place(_ jobs: [FileJob], context: ScanContext, state: inout ScanState) throws {
        for job in jobs {
            try place(job, context: context, state: &state)
            for other in context.sameInode.removeValue(forKey: ObjectIdentifier(job)) ?? [] {
                try place(other, sameAs: job, context: context, state: &state)
            }
        }
    }

    private func place(_ other: FileJob, sameAs first: FileJob, context: ScanContext, state: inout ScanState) throws {
        other.node.content = first.node.content
        other.node.size = first.node.size
        other.node.xattrs = first.node.xattrs
        other.failure = first.failure
        progress.filesDone.add(1, ordering: .relaxed)
        progress.bytesDone.add(Int(other.node.size), ordering: .relaxed)
        try place(other, context: context, state: &state)
    }

    private func place(_ job: FileJob, context: ScanContext, state: inout ScanState) throws {
        let dir = job.dir
        job.placed = true
        if let failure = job.failure {
            state.skipped.append("\(dir.path(of: job.node.name)): \(failure)")
            state.files -= 1
            state.bytes -= job.node.size
            dir.entries[job.slot] = .none
        } else {
            dir.entries[job.slot] = .node(job.node)
        }
        dir.waiting -= 1
        try completeIfDone(dir, context: context, state: &state)
    }

    /// Stores a listed directory whose entries are all final, then its parent if that was
    /// the last one it waited for, and so on up.
    private func completeIfDone(_ dir: ScanDir, context: ScanContext, state: inout ScanState) throws {
        var dir = dir
        while dir.waiting == 0 && dir.listed {
            var n = dir.node
            n.subtree = try buildTree(dir, context: context, state: &state)
            guard dir.slot >= 0 else {
                state.root = n
                return
            }
            guard let up = dir.parent else {
                throw EngineError.componentFailed(component: dir.relative, detail: "its directory was released before it was complete")
            }
            up.entries[dir.slot] = .node(n)
            up.waiting -= 1
            dir = up
        }
    }

    // MARK: read

    /// Per-thread reading state.
    final class Worker: @unchecked Sendable {
        let writer: BlobWriter
        let buffer: UnsafeMutableRawBufferPointer
        var chunkers: [ChunkingScheme: Chunker] = [:]
        init(writer: BlobWriter, bufferSize: Int) {
            self.writer = writer
            buffer = .allocate(byteCount: bufferSize, alignment: 4096)
        }
        deinit { buffer.deallocate() }
    }

    /// Files this large try the planes codecs on their first chunks (smaller ones: zstd):
    /// the trial compresses 4 chunks two or three times, which only pays off on big files.
    static let codecTrialMinimum: UInt64 = 4 << 20

    /// Two maximum-size chunks of `policy` (the chunker's minimum), so that four workers stay
    /// small: every page of it is a fault on first use (2 MiB for chunking version 2).
    static func readBufferSize(_ policy: ChunkingPolicy) -> Int {
        2 * max(policy.defaultScheme.maxSize, policy.fixedScheme.maxSize)
    }

    /// Reads one file, storing its new chunks; fills `job.node.content` and its extended
    /// attributes, or `job.failure`.
    func read(_ job: FileJob, worker: Worker, policy: ChunkingPolicy, seed: UInt64) throws {
        let fdOpen = POSIX.open(job.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fdOpen >= 0 else {
            job.failure = POSIX.errorText(errno)
            return
        }
        defer { close(fdOpen) }
        _ = posix_fadvise(fdOpen, 0, 0, POSIX_FADV_SEQUENTIAL)
        job.node.xattrs = POSIX.xattrs(descriptor: fdOpen)
        let scheme = policy.scheme(forFileNamed: job.node.name)
        let chunker: Chunker
        if let c = worker.chunkers[scheme] {
            chunker = c
        } else {
            chunker = Chunker(scheme: scheme, seed: seed)
            worker.chunkers[scheme] = chunker
        }
        var total: UInt64 = 0
        var content: [BlobID] = []
        content.reserveCapacity(Int(job.node.size) / 65536 + 1)
        // Compression is retried per file until it fails on 4 chunks in a row: incompressible
        // files (archives, encrypted data) then skip the attempt, which costs more than
        // hashing. Fixed-block files (vector storage) and files of 4 MiB or more (model
        // weights among them) try zstd and the planes codecs on their first 4 new chunks and
        // keep a planes codec if it won every time (Compressor.compressPlanes,
        // compressHalfPlanes); the first chunk zstd wins settles it for zstd.
        var incompressibleRun = 0
        var compression: BlobCompression = scheme.isFixed || job.node.size >= Self.codecTrialMinimum ? .smaller : .zstd
        var trials = 0
        var trialWinner: UInt8?
        // A changed file cut where its previous version was, while the bytes are the same.
        var previous = PreviousCuts(job.previous, scheme: scheme, index: repository.index)
        job.previous = []
        var checked: (length: Int, id: BlobID)?
        let propose: ((UnsafeRawBufferPointer) throws -> Int?)? = previous == nil ? nil : { available in
            checked = previous!.propose(available, hash: { job.node.sparse ? self.repository.blobIDs(sparse: $0, $1) : self.repository.blobIDs($0, $1) })
            return checked?.length
        }
        /// Adds a chunk to the file, storing it if no writer has claimed its id yet.
        func take(_ data: UnsafeRawBufferPointer, id: BlobID) throws {
            if worker.writer.reserve(id) {
                let codec = try worker.writer.storeNew(id: id, data: data, type: .data, compression: incompressibleRun < 4 ? compression : .none)
                incompressibleRun = codec == PackFormat.compressionRaw ? incompressibleRun + 1 : 0
                if compression == .smaller {
                    trials += 1
                    let planes = codec == PackFormat.compressionPlanes || codec == PackFormat.compressionHalfPlanes
                    if !planes || (trialWinner ?? codec) != codec {
                        compression = .zstd
                    } else if trials == 4 {
                        compression = codec == PackFormat.compressionPlanes ? .floatPlanes : .halfPlanes
                    }
                    trialWinner = codec
                }
            }
            content.append(id)
            total += UInt64(data.count)
            progress.bytesDone.add(data.count, ordering: .relaxed)
        }
        do {
            if let propose {
                try chunker.chunks(of: fdOpen, path: job.path, buffer: worker.buffer, sparse: job.node.sparse, propose: propose) { data in
                    if cancellation.isCancelled { throw EngineError.cancelled }
                    let id: BlobID
                    if let known = checked, known.length == data.count {
                        id = known.id
                    } else {
                        id = job.node.sparse ? repository.blobID(sparse: data) : repository.blobID(data)
                        previous?.cut(id)
                    }
                    checked = nil
                    try take(data, id: id)
                }
            } else {
                // Chunks hashed in pairs where the CPU can (BlobID.hashPair).
                // A sparse file's holes are neither read nor searched for cuts nor hashed
                // chunk by chunk (Chunker.chunkBatches(sparse:), blobIDs(ofSparse:)).
                let sparse = job.node.sparse
                try chunker.chunkBatches(of: fdOpen, path: job.path, buffer: worker.buffer, sparse: sparse) { chunks in
                    if cancellation.isCancelled { throw EngineError.cancelled }
                    for (chunk, id) in zip(chunks, sparse ? repository.blobIDs(ofSparse: chunks) : repository.blobIDs(of: chunks)) { try take(chunk, id: id) }
                }
            }
        } catch let e as RepositoryError where e.isReadFailure(of: job.path) {
            job.failure = "read: \(e.systemReason)"
            return
        }
        if total != job.node.size {
            // The file changed while it was read: keep what was read, consistently.
            progress.bytesDone.add(Int(job.node.size) - Int(total), ordering: .relaxed)
            job.node.size = total
        }
        job.node.content = content
    }

    /// Where the previous version of a changed file was cut, so that reading it again need
    /// not search for the same cuts (content-defined chunking is a tenth of a first backup
    /// and most of re-reading a grown log). Each proposed chunk is hashed first and taken only
    /// if its id is the previous chunk's: the bytes are the same, so FastCDC would cut there
    /// too (its cut depends only on the bytes from the chunk's start to the cut). The
    /// previous last chunk is never proposed: it was cut by the end of the file. After a
    /// chunk that differs, the scheme cuts again until one of its chunks is a previous chunk
    /// (an edit in the middle), whose successor is proposed next.
    struct PreviousCuts {
        private var ids: [BlobID] = []
        private var lengths: [Int] = []
        private var next: Int? = 0
        private var positions: [BlobID: Int]?
        /// Whether the chunk after a proposed one is the previous version's too: checked
        /// beside it (the two hashed as a pair), used when it is proposed next.
        private var following: (k: Int, same: Bool)?

        init?(_ previous: [BlobID], scheme: ChunkingScheme, index: MasterIndex) {
            guard case .contentDefined(let minSize, _, let maxSize) = scheme, previous.count > 1 else { return nil }
            for id in previous.dropLast() {
                guard let length = index.location(of: id).map({ Int($0.rawLength) }), length > minSize, length <= maxSize else { break }
                ids.append(id)
                lengths.append(length)
            }
            if ids.isEmpty { return nil }
        }

        /// The length and id of the next chunk if `available` starts with the previous
        /// version's next chunk. `hash` gives the ids of two byte ranges (hashed as a pair):
        /// where the chunk after it is buffered too, it is checked at the same time.
        mutating func propose(_ available: UnsafeRawBufferPointer, hash: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> (BlobID, BlobID)) -> (length: Int, id: BlobID)? {
            guard let k = next, k < ids.count, lengths[k] <= available.count else { return nil }
            let same: Bool
            if let f = following, f.k == k {
                same = f.same
                following = nil
            } else {
                let first = UnsafeRawBufferPointer(rebasing: available[0..<lengths[k]])
                let secondEnd = k + 1 < ids.count ? lengths[k] + lengths[k + 1] : Int.max
                let second = secondEnd <= available.count ? UnsafeRawBufferPointer(rebasing: available[lengths[k]..<secondEnd]) : UnsafeRawBufferPointer(start: nil, count: 0)
                let (a, b) = hash(first, second)
                same = a == ids[k]
                following = second.isEmpty || !same ? nil : (k + 1, b == ids[k + 1])
            }
            guard same else {
                next = nil
                following = nil
                return nil
            }
            next = k + 1
            return (lengths[k], ids[k])
        }

        /// After a chunk the scheme cut: if the previous version had it, its successor is next.
        mutating func cut(_ id: BlobID) {
            following = nil
            if positions == nil {
                var p: [BlobID: Int] = [:]
                for (k, id) in ids.enumerated().reversed() { p[id] = k }
                positions = p
            }
            next = positions![id].map { $0 + 1 }
        }
    }

    // MARK: trees

    /// Stores the tree of a directory whose entries are all final, digesting it on the way,
    /// and frees its entries; returns the tree's id.
    private func buildTree(_ dir: ScanDir, context: ScanContext, state: inout ScanState) throws -> BlobID {
        var nodes: [Node] = []
        nodes.reserveCapacity(dir.entries.count)
        for case .node(let n) in dir.entries { nodes.append(n) }
        dir.entries = []
        let tree = Tree(nodes: nodes)
        let id = try context.treeWriter.store(tree.encode(), type: .tree)
        if state.digests[id] == nil {
            let e = try ComponentDigest.entry(of: tree, path: dir.relative) { sub, path in
                try state.digests[sub] ?? ComponentDigest.treeDigest(sub, path: path, cache: context.digestCache) { id, path in
                    try context.reader.readTree(id, path: path)
                }
            }
            state.digests[id] = e
            digestCache?[id] = e
        }
        return id
    }

    // MARK: create

    /// Finds the snapshot to compare against for a component: for `differential` the newest
    /// `full`, for `full` none, otherwise the newest snapshot that captured the same component
    /// from the same source.
    private func parent(for source: FileSource, type: SnapshotType, records: [SnapshotRecord]) -> (record: SnapshotRecord, tree: BlobID)? {
        if type == .full { return nil }
        for record in records {
            if type == .differential && record.type != .full { continue }
            guard let c = record.metadata.components[source.name], c.kind == source.kind, c.source == source.label,
                let manifest = try? catalog.readManifest(record), let mc = manifest.components[source.name],
                repository.index.location(of: mc.treeID) != nil
            else { continue }
            return (record, mc.treeID)
        }
        return nil
    }

    /// Takes a snapshot and commits it. Throws without committing anything on any error
    /// other than unreadable files, which are recorded in the component's `skipped`.
    public func create(_ request: CreateRequest) throws -> SnapshotRecord {
        try run(request, continuous: nil)!
    }

    /// A continuous snapshot: compared with `parent` (the last one this watch took; nil: the
    /// newest snapshot holding each component, as `create` finds it), reading only what
    /// `changes` names — directories on the way to a changed path are listed again, every
    /// other directory keeps the parent's tree, a component without changes keeps the
    /// parent's tree whole. Returns nil, committing nothing, when the parent is a `continuous`
    /// snapshot and nothing it holds changed.
    public func createContinuous(_ request: CreateRequest, parent: SnapshotRecord?, changes: [String: ComponentChanges]) throws -> SnapshotRecord? {
        let manifest = try parent.map { try catalog.readManifest($0) }
        return try run(request, continuous: ContinuousPlan(parent: parent, manifest: manifest, changes: changes))
    }

    struct ContinuousPlan {
        var parent: SnapshotRecord?
        var manifest: SnapshotManifest?
        var changes: [String: ComponentChanges]

        /// The parent's component of the same kind and source.
        func parentComponent(_ source: FileSource) -> (record: SnapshotRecord, component: ManifestComponent)? {
            guard let parent, let mc = manifest?.components[source.name], mc.kind == source.kind, mc.source == source.label,
                let c = parent.metadata.components[source.name], c.kind == source.kind, c.source == source.label
            else { return nil }
            return (parent, mc)
        }
    }

    private func run(_ request: CreateRequest, continuous plan: ContinuousPlan?) throws -> SnapshotRecord? {
        let started = Timestamp.now()
        // A continuous snapshot knows its parent; every other one (and a component the
        // parent lacks) looks among all snapshots.
        var loaded: [SnapshotRecord]?
        func records() throws -> [SnapshotRecord] {
            if let loaded { return loaded }
            loaded = try catalog.all()
            return loaded!
        }
        let reader = BlobReader(repository: repository)
        let treeWriter = repository.makeBlobWriter(compressionLevel: request.compressionLevel)
        var summaries: [String: ComponentSummary] = [:]
        var checksums: [String: String] = [:]
        var manifestComponents: [String: ManifestComponent] = [:]
        var parentIDs: [String] = []
        var raw = 0, stored = 0
        var readFiles = 0, readBytes = 0
        var logical: UInt64 = 0

        let context = ScanContext(
            reader: reader, treeWriter: treeWriter, pipeline: ReadPipeline(archiver: self, request: request),
            digestCache: digestCache ?? DigestCache())
        context.repositoryRoot = repository.isLocal ? FileIdentity(path: repository.path) : nil
        var pipelineClosed = false
        defer { if !pipelineClosed { context.pipeline.abandon() } }
        for source in request.sources {
            progress.phase = "scanning"
            var st = stat()
            guard stat(source.path, &st) == 0 else { throw EngineError.sourceMissing(component: source.name, path: source.path) }
            let known = plan?.parentComponent(source)
            let parent: (record: SnapshotRecord, tree: BlobID)?
            if let known, repository.index.location(of: known.component.treeID) != nil {
                parent = (known.record, known.component.treeID)
            } else {
                parent = self.parent(for: source, type: request.type, records: try records())
            }
            if let parent, !parentIDs.contains(parent.record.id) { parentIDs.append(parent.record.id) }
            let change = plan?.changes[source.name] ?? ComponentChanges()
            if plan != nil, let known, parent != nil, change.isEmpty, let summary = known.record.metadata.components[source.name],
                let checksum = known.record.metadata.checksums[source.name]
            {
                // Nothing changed here since the parent: its tree, counts and checksum stand.
                summaries[source.name] = summary
                checksums[source.name] = checksum
                manifestComponents[source.name] = known.component
                logical += summary.bytes
                continue
            }
            let parentTree = try parent.map { try reader.readTree($0.tree, path: source.name) }
            context.excludes = ExcludeMatcher(source.excludes)
            var state = ScanState()
            let root: Entry
            var partial: PartialScan?
            let isFile = (st.st_mode & S_IFMT) != S_IFDIR
            if !isFile {
                if plan != nil, !change.whole, let parentTree {
                    partial = PartialScan(changes: change, parentRoot: parentTree, reader: reader)
                }
                root = try scan(
                    directory: source.path, relative: "", node: FileStat.node(name: source.name, st)!, parent: parentTree, in: nil, slot: -1,
                    context: context, state: &state, partial: partial)
            } else {
                // A single file: the component holds one entry, named like the file.
                let fileName = POSIX.lastComponent(source.path)
                let dir = ScanDir(node: Node(name: source.name, kind: .directory), relative: "", parent: nil, slot: -1)
                var lst = stat()
                lstat(source.path, &lst)
                guard var node = FileStat.node(name: fileName, (lst.st_mode & S_IFMT) == S_IFLNK ? st : lst) else {
                    throw EngineError.sourceMissing(component: source.name, path: source.path)
                }
                state.files = 1
                state.bytes = node.size
                progress.bytesTotal.add(Int(node.size), ordering: .relaxed)
                progress.filesTotal.add(1, ordering: .relaxed)
                if let old = parentTree?.nodes.first(where: { $0.name == fileName }), old.size == node.size,
                    old.mtime == node.mtime, old.ctime == node.ctime, old.inode == node.inode
                {
                    node.content = old.content
                    node.xattrs = FileStat.xattrs(source.path)
                    dir.entries.append(.node(node))
                    progress.bytesDone.add(Int(node.size), ordering: .relaxed)
                } else {
                    // Its extended attributes are read with its content, from its descriptor.
                    let job = FileJob(path: source.path, node: node, dir: dir, slot: 0)
                    if let old = parentTree?.nodes.first(where: { $0.name == fileName }), old.kind == .file, old.content.count > 1 { job.previous = old.content }
                    try submit(job, context: context, state: &state)
                }
                dir.listed = true
                root = .dir(dir)
            }
            // The files still being read (the scan reads beside them, so this is what is left
            // once it ends); each completes its directory, and so up to the root.
            if case .node(let n) = root { state.root = n }
            progress.phase = "reading"
            try place(try context.pipeline.waitForAll(), context: context, state: &state)
            // (A single file unchanged: its directory waits for nothing.)
            if state.root == nil, case .dir(let dir) = root { try completeIfDone(dir, context: context, state: &state) }
            guard let rootNode = state.root, let rootID = rootNode.subtree else {
                throw EngineError.componentFailed(component: source.name, detail: "its tree was not completed")
            }
            readFiles += state.readFiles
            readBytes += state.readBytes
            let summary = try state.digests[rootID] ?? ComponentDigest.treeDigest(rootID, path: "", cache: context.digestCache) { id, path in
                try reader.readTree(id, path: path)
            }
            // The counts are what the snapshot holds (from its trees): a file that grew or
            // shrank while it was read counts as read, not as its size when listed, and
            // where only part of the tree was scanned they cover the whole of it.
            state.files = summary.files
            state.bytes = summary.bytes
            if let partial {
                let parentSkipped = (known?.record.metadata.components[source.name]?.skipped ?? []).filter { entry in
                    let path = entry.range(of: ": ").map { String(entry[..<$0.lowerBound]) } ?? entry
                    return partial.isUntouched(path)
                }
                state.skipped = parentSkipped + state.skipped
            }
            summaries[source.name] = ComponentSummary(kind: source.kind, source: source.label, files: state.files, bytes: state.bytes, skipped: state.skipped)
            checksums[source.name] = "sha256:" + summary.digest.hex
            var mc = ManifestComponent(kind: source.kind, source: source.label, tree: rootID)
            if isFile {
                mc.rootIsFile = true
            } else {
                mc.rootMode = rootNode.mode
                mc.rootMtime = rootNode.mtime
            }
            manifestComponents[source.name] = mc
            logical += state.bytes
            if progress.isTracing {
                if let partial {
                    progress.note("component \(source.name) (\(source.path)): \(change.paths.count) changed paths; listed \(partial.listed.count) directories again, \(partial.scannedWhole.count) whole; reading \(state.readFiles) files, \(state.readBytes) bytes; the rest as in \(parent!.record.type)/\(parent!.record.id)")
                } else {
                    let basis = parent.map { "\(state.files - state.readFiles) unchanged since \($0.record.type)/\($0.record.id) (same size, mtime, ctime and inode) not read" }
                        ?? (request.type == .full ? "type full reads every file" : "no earlier snapshot of this component to compare with")
                    progress.note("component \(source.name) (\(source.path)): \(state.files) files, \(state.bytes) bytes; reading \(state.readFiles) files, \(state.readBytes) bytes; \(basis)")
                }
                for e in state.excluded.prefix(50) { progress.note("  excluded \(source.name)/\(e) (matches one of \(source.excludes.joined(separator: ", ")))") }
                if state.excluded.count > 50 { progress.note("  … and \(state.excluded.count - 50) more excluded") }
                for s in state.skipped { progress.note("  skipped \(source.name)/\(s)") }
            }
        }
        readCounts.withLock { $0 = (readFiles, readBytes) }
        pipelineClosed = true
        let totals = try context.pipeline.close()
        raw += totals.raw
        stored += totals.stored

        progress.phase = "writing trees"
        for source in request.generated {
            var nodes: [Node] = []
            var bytes: UInt64 = 0
            let chunker = Chunker(scheme: (request.chunking ?? repository.config.chunkingPolicy).defaultScheme, seed: repository.config.chunkerSeed)
            for (fileName, content) in source.files {
                var node = Node(name: fileName, kind: .file)
                node.mode = 0o644
                node.uid = geteuid()
                node.gid = getegid()
                node.mtime = started
                node.ctime = started
                node.size = UInt64(content.count)
                node.content = try treeWriter.storeChunks(content, chunker: chunker)
                bytes += node.size
                nodes.append(node)
            }
            let tree = Tree(nodes: nodes)
            let rootID = try treeWriter.store(tree.encode(), type: .tree)
            summaries[source.name] = ComponentSummary(kind: source.kind, source: source.source, files: nodes.count, bytes: bytes, details: source.details)
            checksums[source.name] = try ComponentDigest.compute(root: rootID) { id, _ in
                guard id == rootID else { throw RepositoryError.missingBlob(id: id, context: source.name) }
                return tree
            }
            manifestComponents[source.name] = ManifestComponent(kind: source.kind, source: source.source, tree: rootID)
            logical += bytes
        }
        if cancellation.isCancelled { throw EngineError.cancelled }
        if let plan, let parent = plan.parent, parent.type == request.type, let old = plan.manifest,
            old.components == manifestComponents, request.generated.isEmpty
        {
            // The same trees as the last continuous snapshot: nothing to commit.
            try treeWriter.flush()
            try repository.commitIndex()
            progress.phase = "done"
            return nil
        }

        progress.phase = "committing"
        return try catalog.withCommitLock {
            catalog.removeStaleStaging()
            let id = try catalog.allocateID(at: request.time ?? started)
            let manifest = SnapshotManifest(snapshotID: id, type: request.type.name, components: manifestComponents)
            let manifestID = try treeWriter.store(Array(try JSONEncoder.snapshot.encode(manifest)), type: .manifest)
            try treeWriter.flush()
            raw += treeWriter.newRawBytes
            stored += treeWriter.newStoredBytes
            try repository.commitIndex()
            let duration = Timestamp.now().timeInterval - started.timeInterval
            var metadata = SnapshotMetadata(
                snapshotID: id, timestamp: (request.time ?? started).iso8601, type: request.type.name,
                name: request.appendIDToName ? request.name + "-" + id : request.name,
                components: summaries, checksums: checksums, sizeBytes: logical, storedBytes: UInt64(stored),
                compressionRatio: raw > 0 ? (Double(stored) / Double(raw) * 1000).rounded() / 1000 : 1,
                durationS: (duration * 1000).rounded() / 1000,
                parent: request.type == .full ? nil : parentIDs.first, hostname: POSIX.hostName(), tags: request.tags,
                auto: request.auto, manifest: manifestID.hex)
            metadata.summary = SystemSummary.of(sources: request.sources, generated: request.generated)
            progress.phase = "done"
            return try catalog.commit(metadata: metadata, manifest: manifest)
        }
    }
}

extension BlobWriter {
    /// Chunks bytes held in memory (generated components, sanitized files) as a file of them
    /// would be chunked, storing each new chunk; returns the chunk ids in order.
    func storeChunks(_ bytes: [UInt8], chunker: Chunker) throws -> [BlobID] {
        try bytes.withUnsafeBytes { raw in
            var ids: [BlobID] = []
            var start = 0
            while start < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[start...]))
                ids.append(try store(UnsafeRawBufferPointer(rebasing: raw[start..<start + n]), type: .data).id)
                start += n
            }
            return ids
        }
    }
}
