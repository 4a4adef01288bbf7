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
    public var chunking: ChunkingPolicy
    public var workers: Int
    /// The name gets `-<the new snapshot's id>` appended (pre-restore snapshots).
    public var appendIDToName = false

    public init(
        type: SnapshotType, name: String = "", auto: Bool = false, time: Timestamp? = nil, tags: [String: String] = [:],
        sources: [FileSource], generated: [GeneratedSource] = [], compressionLevel: Int = 3, chunking: ChunkingPolicy = .standard,
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

    final class FileJob: @unchecked Sendable {
        let path: String
        var node: Node
        var failure: String?
        /// Another name of the same inode that is read instead of this one.
        var sameAs: FileJob?
        init(path: String, node: Node) {
            self.path = path
            self.node = node
        }
    }

    final class ScanDir {
        var node: Node
        var entries: [Entry] = []
        init(node: Node) { self.node = node }
    }

    enum Entry {
        case node(Node)
        case job(FileJob)
        case dir(ScanDir)
    }

    struct ScanState {
        var jobs: [FileJob] = []
        var skipped: [String] = []
        /// Entries left out by an exclude pattern (for `--debug`; never stored).
        var excluded: [String] = []
        var files = 0
        var bytes: UInt64 = 0
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

    private func scan(
        directory path: String, relative: String, node: Node, parent: Tree?, excludes: ExcludeMatcher,
        reader: BlobReader, state: inout ScanState, partial: PartialScan? = nil
    ) throws -> ScanDir {
        partial?.listed.insert(relative)
        let dir = ScanDir(node: node)
        let names: [String]
        do {
            names = try POSIX.listDirectory(path)
        } catch let e as RepositoryError {
            state.skipped.append("\(relative.isEmpty ? "." : relative): \(e.systemReason)")
            return dir
        }
        var parentNodes: [String: Node] = [:]
        if let parent {
            for n in parent.nodes { parentNodes[n.name] = n }
        }
        for name in names.sorted() {
            if cancellation.isCancelled { throw EngineError.cancelled }
            let childPath = path + "/" + name
            let childRel = relative.isEmpty ? name : relative + "/" + name
            if excludes.excludes(name: name, relativePath: childRel) {
                if progress.isTracing { state.excluded.append(childRel) }
                continue
            }
            var st = stat()
            guard lstat(childPath, &st) == 0 else {
                state.skipped.append("\(childRel): \(POSIX.errorText(errno))")
                continue
            }
            guard var child = FileStat.node(name: name, st) else { continue }
            if child.kind == .file || child.kind == .directory { child.xattrs = FileStat.xattrs(childPath) }
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
                    repository.index.location(of: oldSub) != nil
                {
                    // Nothing changed below: the parent's tree stands.
                    child.subtree = oldSub
                    dir.entries.append(.node(child))
                    continue
                }
                var oldTree: Tree?
                if let oldSub { oldTree = try? reader.readTree(oldSub, path: childRel) }
                // New, moved in, or listed again since something below it changed.
                let whole = partial != nil && (oldSub == nil || renamed || partial!.changes.rescan.contains(childRel))
                if whole { partial?.scannedWhole.append(childRel) }
                let sub = try scan(
                    directory: childPath, relative: childRel, node: child, parent: oldTree,
                    excludes: excludes, reader: reader, state: &state, partial: whole ? nil : partial)
                dir.entries.append(.dir(sub))
            case .file:
                state.files += 1
                state.bytes += child.size
                progress.bytesTotal.add(Int(child.size), ordering: .relaxed)
                progress.filesTotal.add(1, ordering: .relaxed)
                if let old, old.kind == .file, old.size == child.size, old.mtime == child.mtime,
                    old.ctime == child.ctime || renamed, old.inode == child.inode, old.sparse == child.sparse,
                    old.content.allSatisfy({ repository.index.location(of: $0) != nil })
                {
                    child.content = old.content
                    dir.entries.append(.node(child))
                    progress.bytesDone.add(Int(child.size), ordering: .relaxed)
                    progress.filesDone.add(1, ordering: .relaxed)
                } else {
                    let job = FileJob(path: childPath, node: child)
                    state.jobs.append(job)
                    dir.entries.append(.job(job))
                }
            case .symlink:
                guard let target = FileStat.readLink(childPath) else {
                    state.skipped.append("\(childRel): \(POSIX.errorText(errno))")
                    continue
                }
                child.linkTarget = target
                dir.entries.append(.node(child))
            default:
                dir.entries.append(.node(child))
            }
        }
        return dir
    }

    // MARK: read

    /// Per-thread reading state.
    final class Worker {
        let writer: BlobWriter
        let buffer: UnsafeMutableRawBufferPointer
        init(writer: BlobWriter, bufferSize: Int) {
            self.writer = writer
            buffer = .allocate(byteCount: bufferSize, alignment: 4096)
        }
        deinit { buffer.deallocate() }
    }

    /// Two maximum-size chunks (the chunker's minimum), so that four workers stay small.
    static let readBufferSize = 4 << 20

    /// Reads one file, storing its new chunks; fills `job.node.content` or `job.failure`.
    private func read(_ job: FileJob, worker: Worker, policy: ChunkingPolicy, seed: UInt64, chunkers: inout [ChunkingScheme: Chunker]) throws {
        let fdOpen = open(job.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fdOpen >= 0 else {
            job.failure = POSIX.errorText(errno)
            return
        }
        defer { close(fdOpen) }
        _ = posix_fadvise(fdOpen, 0, 0, POSIX_FADV_SEQUENTIAL)
        let scheme = policy.scheme(forFileNamed: job.node.name)
        let chunker: Chunker
        if let c = chunkers[scheme] {
            chunker = c
        } else {
            chunker = Chunker(scheme: scheme, seed: seed)
            chunkers[scheme] = chunker
        }
        var total: UInt64 = 0
        var content: [BlobID] = []
        content.reserveCapacity(Int(job.node.size) / 65536 + 1)
        // Compression is retried per file until it fails on 4 chunks in a row: incompressible
        // files (vectors, weights) then skip the attempt, which costs more than hashing.
        var incompressibleRun = 0
        do {
            try chunker.chunks(of: fdOpen, path: job.path, buffer: worker.buffer) { data in
                if cancellation.isCancelled { throw EngineError.cancelled }
                let id = repository.blobID(data)
                if worker.writer.reserve(id) {
                    let compressed = try worker.writer.storeNew(id: id, data: data, type: .data, compress: incompressibleRun < 4)
                    incompressibleRun = compressed ? 0 : incompressibleRun + 1
                }
                content.append(id)
                total += UInt64(data.count)
                progress.bytesDone.add(data.count, ordering: .relaxed)
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

    private func readAll(_ jobs: [FileJob], request: CreateRequest) throws -> (raw: Int, stored: Int) {
        // Hard links: read each inode once.
        var firstOfInode: [String: FileJob] = [:]
        var toRead: [FileJob] = []
        for job in jobs {
            if job.node.links > 1 {
                let key = "\(job.node.device):\(job.node.inode)"
                if let first = firstOfInode[key] {
                    job.sameAs = first
                    continue
                }
                firstOfInode[key] = job
            }
            toRead.append(job)
        }
        toRead.sort { $0.node.size > $1.node.size }
        let totals = Mutex((raw: 0, stored: 0))
        let seed = repository.config.chunkerSeed
        let repository = self.repository
        let level = request.compressionLevel
        let policy = request.chunking
        try WorkerThreads.forEach(
            toRead, threads: request.workers,
            state: { (worker: Worker(writer: repository.makeBlobWriter(compressionLevel: level), bufferSize: Self.readBufferSize), chunkers: [ChunkingScheme: Chunker]()) },
            finish: { state in
                try state.worker.writer.flush()
                let writer = state.worker.writer
                totals.withLock { $0.raw += writer.newRawBytes; $0.stored += writer.newStoredBytes }
            }
        ) { job, state in
            try self.read(job, worker: state.worker, policy: policy, seed: seed, chunkers: &state.chunkers)
            self.progress.filesDone.add(1, ordering: .relaxed)
        }
        for job in jobs {
            if let first = job.sameAs {
                job.node.content = first.node.content
                job.node.size = first.node.size
                job.failure = first.failure
                progress.filesDone.add(1, ordering: .relaxed)
                progress.bytesDone.add(Int(job.node.size), ordering: .relaxed)
            }
        }
        return totals.withLock { $0 }
    }

    // MARK: trees

    private func buildTree(_ dir: ScanDir, relative: String, writer: BlobWriter, trees: inout [BlobID: Tree], state: inout ScanState) throws -> BlobID {
        var nodes: [Node] = []
        nodes.reserveCapacity(dir.entries.count)
        for entry in dir.entries {
            switch entry {
            case .node(let n):
                nodes.append(n)
            case .job(let job):
                let rel = relative.isEmpty ? job.node.name : relative + "/" + job.node.name
                if let failure = job.failure {
                    state.skipped.append("\(rel): \(failure)")
                    state.files -= 1
                    state.bytes -= job.node.size
                } else {
                    nodes.append(job.node)
                }
            case .dir(let sub):
                var n = sub.node
                let rel = relative.isEmpty ? n.name : relative + "/" + n.name
                n.subtree = try buildTree(sub, relative: rel, writer: writer, trees: &trees, state: &state)
                nodes.append(n)
            }
        }
        let tree = Tree(nodes: nodes)
        let id = try writer.store(tree.encode(), type: .tree)
        trees[id] = tree
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
        var logical: UInt64 = 0

        progress.phase = "scanning"
        var scans: [(source: FileSource, root: ScanDir, state: ScanState, isFile: Bool, partial: PartialScan?, parentSkipped: [String])] = []
        for source in request.sources {
            var st = stat()
            guard stat(source.path, &st) == 0 else { throw EngineError.sourceMissing(component: source.name, path: source.path) }
            let excludes = ExcludeMatcher(source.excludes)
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
            var state = ScanState()
            let root: ScanDir
            var partial: PartialScan?
            if (st.st_mode & S_IFMT) == S_IFDIR {
                let node = FileStat.node(name: source.name, st)!
                if plan != nil, !change.whole, let parentTree {
                    partial = PartialScan(changes: change, parentRoot: parentTree, reader: reader)
                }
                root = try scan(directory: source.path, relative: "", node: node, parent: parentTree, excludes: excludes, reader: reader, state: &state, partial: partial)
            } else {
                // A single file: the component holds one entry, named like the file.
                let fileName = POSIX.lastComponent(source.path)
                root = ScanDir(node: Node(name: source.name, kind: .directory))
                var lst = stat()
                lstat(source.path, &lst)
                guard var node = FileStat.node(name: fileName, (lst.st_mode & S_IFMT) == S_IFLNK ? st : lst) else {
                    throw EngineError.sourceMissing(component: source.name, path: source.path)
                }
                node.xattrs = FileStat.xattrs(source.path)
                state.files = 1
                state.bytes = node.size
                progress.bytesTotal.add(Int(node.size), ordering: .relaxed)
                progress.filesTotal.add(1, ordering: .relaxed)
                if let old = parentTree?.nodes.first(where: { $0.name == fileName }), old.size == node.size,
                    old.mtime == node.mtime, old.ctime == node.ctime, old.inode == node.inode
                {
                    node.content = old.content
                    root.entries.append(.node(node))
                    progress.bytesDone.add(Int(node.size), ordering: .relaxed)
                } else {
                    let job = FileJob(path: source.path, node: node)
                    state.jobs.append(job)
                    root.entries.append(.job(job))
                }
            }
            let parentSkipped = partial.map { p in (known?.record.metadata.components[source.name]?.skipped ?? []).filter { entry in
                let path = entry.range(of: ": ").map { String(entry[..<$0.lowerBound]) } ?? entry
                return p.isUntouched(path)
            } } ?? []
            scans.append((source, root, state, (st.st_mode & S_IFMT) != S_IFDIR, partial, parentSkipped))
            if progress.isTracing {
                let toRead = state.jobs.reduce(0) { $0 + Int($1.node.size) }
                if let partial {
                    progress.note("component \(source.name) (\(source.path)): \(change.paths.count) changed paths; listed \(partial.listed.count) directories again, \(partial.scannedWhole.count) whole; reading \(state.jobs.count) files, \(toRead) bytes; the rest as in \(parent!.record.type)/\(parent!.record.id)")
                } else {
                    let basis = parent.map { "\(state.files - state.jobs.count) unchanged since \($0.record.type)/\($0.record.id) (same size, mtime, ctime and inode) not read" }
                        ?? (request.type == .full ? "type full reads every file" : "no earlier snapshot of this component to compare with")
                    progress.note("component \(source.name) (\(source.path)): \(state.files) files, \(state.bytes) bytes; reading \(state.jobs.count) files, \(toRead) bytes; \(basis)")
                }
                for e in state.excluded.prefix(50) { progress.note("  excluded \(source.name)/\(e) (matches one of \(source.excludes.joined(separator: ", ")))") }
                if state.excluded.count > 50 { progress.note("  … and \(state.excluded.count - 50) more excluded") }
                for s in state.skipped { progress.note("  skipped \(source.name)/\(s)") }
            }
        }

        progress.phase = "reading"
        let allJobs = scans.flatMap { $0.state.jobs }
        readCounts.withLock { $0 = (allJobs.count, allJobs.reduce(0) { $0 + Int($1.node.size) }) }
        let totals = try readAll(allJobs, request: request)
        raw += totals.raw
        stored += totals.stored

        progress.phase = "writing trees"
        for (source, root, scanState, isFile, partial, parentSkipped) in scans {
            var state = scanState
            var trees: [BlobID: Tree] = [:]
            let rootID = try buildTree(root, relative: "", writer: treeWriter, trees: &trees, state: &state)
            let summary = try ComponentDigest.summarize(root: rootID, cache: digestCache) { id, path in
                if let t = trees[id] { return t }
                return try reader.readTree(id, path: path)
            }
            if partial != nil {
                // Only part of the tree was scanned: the counts come from the whole of it.
                state.files = summary.files
                state.bytes = summary.bytes
                state.skipped = parentSkipped + state.skipped
            }
            summaries[source.name] = ComponentSummary(kind: source.kind, source: source.label, files: state.files, bytes: state.bytes, skipped: state.skipped)
            checksums[source.name] = summary.digest
            var mc = ManifestComponent(kind: source.kind, source: source.label, tree: rootID)
            if isFile {
                mc.rootIsFile = true
            } else {
                mc.rootMode = root.node.mode
                mc.rootMtime = root.node.mtime
            }
            manifestComponents[source.name] = mc
            logical += state.bytes
        }
        for source in request.generated {
            var nodes: [Node] = []
            var bytes: UInt64 = 0
            let chunker = Chunker(scheme: request.chunking.defaultScheme, seed: repository.config.chunkerSeed)
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
