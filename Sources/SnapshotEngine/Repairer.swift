#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import SnapshotCore

/// `repair`: what was salvaged from a damaged snapshot. `snapshot` is the new snapshot
/// (nil when the original had no damage, or when all of it was healed in place and it
/// restores whole again — then there is nothing a copy would add).
public struct RepairReport: Sendable {
    public var repairedFrom: String
    public var snapshot: SnapshotRecord?
    /// `component/path` and why it could not be salvaged.
    public var lost: [(path: String, reason: String)] = []
    /// `component/path` and where its damaged content was found again.
    public var healed: [(path: String, from: String)] = []
    /// Damaged blobs written anew from another copy.
    public var healedBlobs = 0

    /// `--json`: the new snapshot's metadata.json object (with `repaired_from`, `lost` and
    /// `healed`), or, when none was made, those three keys with `"snapshot_id": null`.
    public func jsonObject() throws -> Any {
        if let snapshot {
            return try JSONSerialization.jsonObject(with: Data(try snapshot.metadata.jsonBytes()))
        }
        return [
            "snapshot_id": NSNull(), "repaired_from": repairedFrom, "lost": lost.map(\.path), "healed": healed.map(\.path),
        ] as [String: Any]
    }
}

/// Salvages a damaged snapshot into a new one (see `SnapshotService.repair`). The caller
/// holds the exclusive lock.
struct Repairer {
    let repository: Repository
    let catalog: SnapshotCatalog
    let progress: WorkProgress

    /// Where each damaged blob may be found again: copies in other packs (a pack a killed
    /// create left behind, a duplicate), the live source file at the same path with the same
    /// size, and the same path with the same size in other snapshots. Any chunk of those
    /// whose SHA-256 is a damaged blob's id is that blob: content addressing makes the
    /// match exact whatever the source.
    private struct Healing {
        var damaged: [BlobID: String]
        let writer: BlobWriter
        var written = 0

        mutating func offer(_ data: UnsafeRawBufferPointer, type: BlobType) throws -> Bool {
            let id = writer.repository.blobID(data)
            guard damaged.removeValue(forKey: id) != nil else { return false }
            // Past the index's reservation (the index still names the damaged copy): the new
            // location replaces it once the pack is finished.
            _ = try writer.storeNew(id: id, data: data, type: type, compress: true)
            written += 1
            return true
        }
    }

    /// A file whose content is damaged, as pass one found it.
    private struct DamagedFile {
        let path: String  // component/relative
        let component: String
        let relative: String
        let node: Node
    }

    func repair(type: SnapshotType, id: String, directory: String, record: SnapshotRecord?) throws -> RepairReport {
        let started = Timestamp.now()
        var report = RepairReport(repairedFrom: id)
        let reader = BlobReader(repository: repository)
        let manifest = try readManifest(directory: directory, record: record, reader: reader)
        progress.note("snapshot \(type)/\(id): \(manifest.components.count) components")

        // Pass one: every tree (a damaged one healed at once from another copy, since what
        // is below it is only known through it) and every content blob, read and re-hashed.
        progress.phase = "checking"
        var alternatives: [BlobID: [BlobLocation]]?
        func otherCopies(_ blob: BlobID) -> [BlobLocation] {
            if alternatives == nil { alternatives = packCopies() }
            let current = repository.index.location(of: blob)
            return (alternatives?[blob] ?? []).filter { $0 != current }
        }
        let treeWriter = repository.makeBlobWriter(compressionLevel: 3)
        var healing = Healing(damaged: [:], writer: treeWriter)
        var lostTrees: [BlobID: String] = [:]
        var contentBlobs = Set<BlobID>()
        var usedPacks = Set<BlobID>()
        var liveTrees: [BlobID: [UInt8]] = [:]
        /// Listings healed in this pass (not yet readable from the store): a directory stored
        /// once may sit at several paths, and is healed once.
        var healedTrees: [BlobID: Tree] = [:]
        var files: [(file: DamagedFile, blobs: [BlobID])] = []
        for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
            var stack: [(BlobID, String)] = [(c.treeID, "")]
            while let (treeID, relative) = stack.popLast() {
                if lostTrees[treeID] != nil { continue }
                let tree: Tree
                do {
                    tree = try healedTrees[treeID] ?? reader.readTree(treeID, path: relative.isEmpty ? name : name + "/" + relative)
                } catch {
                    let shown = relative.isEmpty ? name + "/" : name + "/" + relative + "/"
                    // (A healed tree is decoded from the bytes stored: it becomes readable from
                    // the store when the writer is flushed, once, before pass three.)
                    if let bytes = try healFromCopies(treeID, type: .tree, copies: otherCopies(treeID), healing: &healing, reader: reader),
                        let t = try? Tree.decode(bytes)
                    {
                        tree = t
                        healedTrees[treeID] = t
                        report.healed.append((shown, "another copy of its listing in the store"))
                    } else if let live = liveDirectory(of: c, relative: relative),
                        let bytes = try healTreeFromLive(treeID, directory: live, rootIsFile: relative.isEmpty && c.rootIsFile == true, computed: &liveTrees, healing: &healing),
                        let t = try? Tree.decode(bytes)
                    {
                        tree = t
                        healedTrees[treeID] = t
                        report.healed.append((shown, "the live directory \(live), unchanged since"))
                    } else {
                        lostTrees[treeID] = "\(error)"
                        continue
                    }
                }
                if let pack = repository.index.location(of: treeID)?.pack { usedPacks.insert(pack) }
                for node in tree.nodes {
                    let rel = relative.isEmpty ? node.name : relative + "/" + node.name
                    if let sub = node.subtree {
                        stack.append((sub, rel))  // every path: a directory stored once may sit at two
                    } else if node.kind == .file && !node.content.isEmpty {
                        contentBlobs.formUnion(node.content)
                        files.append((DamagedFile(path: name + "/" + rel, component: name, relative: rel, node: node), node.content))
                    }
                }
            }
        }
        // The manifest blob (what rebuild-metadata recreates the snapshot from) heals from
        // manifest.json, whose bytes it is.
        if let blob = record.flatMap({ BlobID(hex: $0.metadata.manifest) }), repository.index.location(of: blob) != nil, (try? reader.read(blob)) == nil,
            let bytes = try? catalog.manifestPlaintext(directory: directory)
        {
            healing.damaged[blob] = "damaged"
            if try bytes.withUnsafeBytes({ try healing.offer($0, type: .manifest) }) {
                report.healed.append(("\(type)/\(id)/manifest.json", "its copy in the snapshot directory"))
            } else {
                healing.damaged[blob] = nil
            }
        }
        if let blob = record.flatMap({ BlobID(hex: $0.metadata.manifest) }), let pack = repository.index.location(of: blob)?.pack { usedPacks.insert(pack) }
        let damagedBlobs = checkBlobs(contentBlobs)
        for blob in contentBlobs { if let pack = repository.index.location(of: blob)?.pack { usedPacks.insert(pack) } }
        progress.note("\(contentBlobs.count) content blobs read: \(damagedBlobs.count) damaged; \(lostTrees.count) directory listings unreadable")
        let damagedFiles = files.filter { $0.blobs.contains { damagedBlobs[$0] != nil } }.map(\.file)
        let byPack = Dictionary(grouping: repository.index.allLocations().map { ($0.key, $0.value) }, by: { $0.1.pack })
        let damagedPacks = try usedPacks.filter { pack in
            let path = repository.packPath(pack)
            return try POSIX.exists(path) && Verifier.checkTrailer(path, indexed: byPack[pack] ?? []) != nil
        }
        if damagedBlobs.isEmpty && lostTrees.isEmpty && healing.written == 0 && damagedPacks.isEmpty {
            return report
        }

        // Pass two: heal what can be healed.
        progress.phase = "healing"
        var damagedLocations: [BlobID: BlobLocation] = [:]
        for blob in damagedBlobs.keys { damagedLocations[blob] = repository.index.location(of: blob) }
        healing.damaged = damagedBlobs
        var healedFrom: [String: String] = [:]
        for blob in damagedBlobs.keys.sorted(by: { $0.hex < $1.hex }) {
            _ = try healFromCopies(blob, type: .data, copies: otherCopies(blob), healing: &healing, reader: reader)
        }
        for file in damagedFiles where file.node.content.contains(where: { healing.damaged[$0] != nil }) {
            if let live = livePath(of: file, manifest: manifest), try healFromLive(live, node: file.node, healing: &healing) {
                healedFrom[file.path] = "the live file \(live)"
            }
        }
        let stillDamaged = damagedFiles.filter { $0.node.content.contains { healing.damaged[$0] != nil } }
        if !stillDamaged.isEmpty {
            try healFromOtherSnapshots(stillDamaged, excluding: id, healing: &healing, reader: reader, healedFrom: &healedFrom)
        }
        for file in damagedFiles {
            if file.node.content.contains(where: { healing.damaged[$0] != nil }) {
                let reason = file.node.content.lazy.compactMap { healing.damaged[$0] }.first ?? "damaged"
                report.lost.append((file.path, reason))
            } else {
                report.healed.append((file.path, healedFrom[file.path] ?? "another copy of its content in the store"))
            }
        }
        report.healedBlobs = healing.written
        // A pack that held damage, once its damaged blobs are healed, is copied out whole
        // and retired, so that the store verifies clean again.
        let retired = try retirePacks(damagedPacks.union(damagedBlobs.keys.compactMap { damagedLocations[$0]?.pack }), writer: treeWriter)
        for (path, reason) in report.lost { progress.note("lost \(path): \(reason)") }
        for (path, from) in report.healed { progress.note("healed \(path) from \(from)") }

        // Pass three: the new snapshot's trees, without what is lost.
        progress.phase = "writing"
        var rebuilt: [BlobID: BlobID?] = [:]
        var components: [String: ManifestComponent] = [:]
        var summaries: [String: ComponentSummary] = [:]
        var checksums: [String: String] = [:]
        let lostBlobs = healing.damaged
        let treeReader = BlobReader(repository: repository)
        try treeWriter.flush()  // healed trees and blobs become readable
        func rebuild(_ treeID: BlobID, path: String) throws -> BlobID? {
            if let reason = lostTrees[treeID] {
                report.lost.append((path + "/", reason))
                return nil
            }
            if let done = rebuilt[treeID] { return done }
            let tree = try treeReader.readTree(treeID, path: path)
            var nodes: [Node] = []
            for var node in tree.nodes {
                if let sub = node.subtree {
                    guard let newSub = try rebuild(sub, path: path + "/" + node.name) else { continue }
                    node.subtree = newSub
                } else if node.content.contains(where: { lostBlobs[$0] != nil }) {
                    continue
                }
                nodes.append(node)
            }
            let id = nodes == tree.nodes ? treeID : try treeWriter.store(Tree(nodes: nodes).encode(), type: .tree)
            rebuilt[treeID] = id
            return id
        }
        var roots: [(String, BlobID, ManifestComponent)] = []
        for (name, c) in manifest.components.sorted(by: { $0.key < $1.key }) {
            if let root = try rebuild(c.treeID, path: name) { roots.append((name, root, c)) }
        }
        try treeWriter.flush()  // the new trees become readable
        var logical: UInt64 = 0
        for (name, root, c) in roots {
            var mc = c
            mc.treeID = root
            components[name] = mc
            let t = try SnapshotService.totals(of: root, component: name, reader: treeReader)
            let old = record?.metadata.components[name]
            summaries[name] = ComponentSummary(kind: c.kind, source: c.source, files: t.files, bytes: t.bytes, skipped: old?.skipped ?? [], details: old?.details ?? ComponentDetails())
            checksums[name] = t.checksum
            logical += t.bytes
        }
        report.lost.sort { $0.path < $1.path }
        report.healed.sort { $0.path < $1.path }
        if report.lost.isEmpty {
            // Everything was healed in place: the snapshot itself restores whole again.
            try commitHealedIndex(healed: healing.written > 0 || !retired.isEmpty)
            for pack in retired { try repository.removePack(pack) }
            progress.phase = "done"
            return report
        }
        guard !components.isEmpty else {
            throw RepairFailure(message: "nothing of snapshot \(type)/\(id) can be salvaged: every component's listing is lost (\(report.lost.map(\.reason).first ?? ""))")
        }

        progress.phase = "committing"
        let time = record.flatMap { Timestamp(iso8601: $0.metadata.timestamp) } ?? SnapshotCatalog.time(ofID: id) ?? started
        let newID = try catalog.allocateID(at: time)
        let newManifest = SnapshotManifest(snapshotID: newID, type: type.name, components: components)
        let manifestID = try treeWriter.store(Array(try JSONEncoder.snapshot.encode(newManifest)), type: .manifest)
        try treeWriter.flush()
        let stored = treeWriter.newStoredBytes, raw = treeWriter.newRawBytes
        try commitHealedIndex(healed: healing.written > 0 || !retired.isEmpty)
        for pack in retired { try repository.removePack(pack) }
        let old = record?.metadata
        var metadata = SnapshotMetadata(
            snapshotID: newID, timestamp: time.iso8601, type: type.name, name: "", components: summaries, checksums: checksums,
            sizeBytes: logical, storedBytes: UInt64(stored), compressionRatio: raw > 0 ? (Double(stored) / Double(raw) * 1000).rounded() / 1000 : 1,
            durationS: ((Timestamp.now().timeInterval - started.timeInterval) * 1000).rounded() / 1000,
            parent: nil, hostname: old?.hostname ?? "", tags: old?.tags ?? [:], auto: false, manifest: manifestID.hex)
        metadata.summary = old?.summary
        metadata.repairedFrom = id
        metadata.lost = report.lost.map(\.path)
        metadata.healed = report.healed.map(\.path)
        report.snapshot = try catalog.commit(metadata: metadata, manifest: newManifest)
        progress.phase = "done"
        return report
    }

    /// The manifest: manifest.json, or the manifest blob metadata.json names.
    private func readManifest(directory: String, record: SnapshotRecord?, reader: BlobReader) throws -> SnapshotManifest {
        do {
            return try catalog.readManifest(directory: directory)
        } catch {
            guard let hex = record?.metadata.manifest, let blob = BlobID(hex: hex), let bytes = try? reader.read(blob),
                let manifest = try? JSONDecoder().decode(SnapshotManifest.self, from: Data(bytes))
            else { throw error }
            progress.note("manifest.json unreadable (\(error)); using the manifest blob \(blob.short)")
            return manifest
        }
    }

    /// Reads and re-hashes each blob once, pack by pack in offset order, on two threads;
    /// returns the damaged ones (missing from the index, pack gone, or wrong bytes).
    private func checkBlobs(_ blobs: Set<BlobID>) -> [BlobID: String] {
        var byPack: [BlobID: [(BlobID, UInt32)]] = [:]
        var damaged: [BlobID: String] = [:]
        for blob in blobs {
            guard let loc = repository.index.location(of: blob) else {
                damaged[blob] = "\(RepositoryError.missingBlob(id: blob, context: "not in any index"))"
                continue
            }
            byPack[loc.pack, default: []].append((blob, loc.offset))
            progress.bytesTotal.add(Int(loc.length), ordering: .relaxed)
        }
        let found = Mutex(damaged)
        let repository = self.repository, progress = self.progress
        try? WorkerThreads.forEach(Array(byPack.values), threads: 2, state: { BlobReader(repository: repository) }) { group, reader in
            for (blob, _) in group.sorted(by: { $0.1 < $1.1 }) {
                do {
                    _ = try reader.read(blob)
                } catch {
                    found.withLock { $0[blob] = "\(error)" }
                }
                progress.bytesDone.add(Int(repository.index.location(of: blob)?.length ?? 0), ordering: .relaxed)
            }
        }
        return found.withLock { $0 }
    }

    /// Copies every blob the index places in each pack into new packs and returns the packs
    /// that can then be deleted: those whose every indexed blob reads back intact (a pack
    /// still holding an unhealed blob stays; it is all there is of that blob).
    private func retirePacks(_ packs: Set<BlobID>, writer: BlobWriter) throws -> [BlobID] {
        guard !packs.isEmpty else { return [] }
        try writer.flush()  // healed blobs first take their new places
        let byPack = Dictionary(grouping: repository.index.allLocations().filter { packs.contains($0.value.pack) }, by: { $0.value.pack })
        let reader = BlobReader(repository: repository)
        var retired: [BlobID] = []
        for pack in packs.sorted(by: { $0.hex < $1.hex }) where POSIX.exists(repository.packPath(pack)) {
            let held = (byPack[pack] ?? []).sorted { $0.value.offset < $1.value.offset }
            guard held.allSatisfy({ (try? reader.read($0.key)) != nil }) else { continue }
            for (id, loc) in held {
                try writer.storeCopy(id: id, type: loc.type, entry: try repository.readEntry(loc), rawLength: Int(loc.rawLength))
            }
            progress.note("pack \(pack.short) held damage: its \(held.count) intact blobs copied to a new pack; it is deleted")
            retired.append(pack)
        }
        try writer.flush()
        return retired
    }

    /// Every blob any pack's trailer lists, with each place it is found.
    private func packCopies() -> [BlobID: [BlobLocation]] {
        var out: [BlobID: [BlobLocation]] = [:]
        let data = repository.storePath + "/data"
        for dir in (try? POSIX.listDirectory(data)) ?? [] {
            for name in (try? POSIX.listDirectory(data + "/" + dir)) ?? [] where !name.contains(".tmp") {
                guard let pack = BlobID(hex: name), let entries = try? PackFormat.readTrailer(path: data + "/\(dir)/\(name)") else { continue }
                for e in entries {
                    out[e.id, default: []].append(BlobLocation(pack: pack, type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength))
                }
            }
        }
        return out
    }

    /// Stores the first intact other copy of `blob`; returns its bytes.
    private func healFromCopies(_ blob: BlobID, type: BlobType, copies: [BlobLocation], healing: inout Healing, reader: BlobReader) throws -> [UInt8]? {
        for copy in copies {
            guard let bytes = try? reader.read(blob, at: copy) else { continue }
            healing.damaged[blob] = "damaged"
            if try bytes.withUnsafeBytes({ try healing.offer($0, type: type) }) {
                progress.note("healed blob \(blob.short) from a copy in pack \(copy.pack.short)")
                return bytes
            }
        }
        return nil
    }

    /// The live directory a files component's directory came from (for a component of one
    /// file: that file).
    private func liveDirectory(of c: ManifestComponent, relative: String) -> String? {
        guard c.kind == .files, c.source.hasPrefix("/") else { return nil }
        return relative.isEmpty ? c.source : c.source + "/" + relative
    }

    /// Heals a lost directory listing from the live directory, when that is unchanged since
    /// the snapshot: the listing `create` would store for it now (every entry's metadata,
    /// content chunk ids by hashing the files, subdirectories likewise) is computed, and only
    /// if its hash is the lost tree's id is it stored — with its subtrees, any of which may be
    /// lost too. Trees computed on the way are kept in `computed` for those.
    private func healTreeFromLive(_ id: BlobID, directory: String, rootIsFile: Bool, computed: inout [BlobID: [UInt8]], healing: inout Healing) throws -> [UInt8]? {
        if computed[id] == nil {
            guard let top = liveTree(directory, rootIsFile: rootIsFile, into: &computed), top == id else { return nil }
        }
        guard let bytes = computed[id] else { return nil }
        healing.damaged[id] = "damaged"
        return try bytes.withUnsafeBytes({ try healing.offer($0, type: .tree) }) ? bytes : nil
    }

    /// The tree id `create` would give `directory` now, with every tree below it recorded in
    /// `trees`; nil when anything cannot be read.
    private func liveTree(_ directory: String, rootIsFile: Bool, into trees: inout [BlobID: [UInt8]]) -> BlobID? {
        func node(_ path: String, name: String) -> Node? {
            var st = stat()
            guard POSIX.lstat(path, &st) == 0, var n = FileStat.node(name: name, st) else { return nil }
            if n.kind == .file || n.kind == .directory { n.xattrs = FileStat.xattrs(path) }
            switch n.kind {
            case .directory:
                guard let sub = liveTree(path, rootIsFile: false, into: &trees) else { return nil }
                n.subtree = sub
            case .file:
                guard let ids = try? InPlaceRestorer.contentIDs(path, name: name, repository: repository) else { return nil }
                n.content = ids
            case .symlink:
                guard let target = FileStat.readLink(path) else { return nil }
                n.linkTarget = target
            default:
                break
            }
            return n
        }
        var nodes: [Node] = []
        if rootIsFile {
            guard let n = node(directory, name: POSIX.lastComponent(directory)) else { return nil }
            nodes = [n]
        } else {
            guard let names = try? POSIX.listDirectory(directory) else { return nil }
            for name in names {
                var st = stat()
                guard POSIX.lstat(directory + "/" + name, &st) == 0 else { return nil }
                guard FileStat.kind(st.st_mode) != nil else { continue }
                guard let n = node(directory + "/" + name, name: name) else { return nil }
                nodes.append(n)
            }
        }
        let bytes = Tree(nodes: nodes).encode()
        let id = repository.blobID(bytes)
        trees[id] = bytes
        return id
    }

    /// The live file a files component's entry came from, when the component was captured
    /// from a path.
    private func livePath(of file: DamagedFile, manifest: SnapshotManifest) -> String? {
        guard let c = manifest.components[file.component], c.kind == .files, c.source.hasPrefix("/") else { return nil }
        if c.rootIsFile == true {
            return file.relative == POSIX.lastComponent(c.source) ? c.source : nil
        }
        return c.source + "/" + file.relative
    }

    /// Chunks the live file, when it is a regular file of the same size, and stores every
    /// chunk that is one of the damaged blobs.
    private func healFromLive(_ path: String, node: Node, healing: inout Healing) throws -> Bool {
        var st = stat()
        guard POSIX.lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, UInt64(st.st_size) == node.size else { return false }
        let fd = POSIX.open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let chunker = Chunker(scheme: repository.config.chunkingPolicy.scheme(forFileNamed: node.name), seed: repository.config.chunkerSeed)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * chunker.scheme.maxSize, alignment: 4096)
        defer { buffer.deallocate() }
        do {
            try chunker.chunks(of: fd, path: path, buffer: buffer) { _ = try healing.offer($0, type: .data) }
        } catch let e as RepositoryError where e.isReadFailure(of: path) {
            return false
        }
        return !node.content.contains { healing.damaged[$0] != nil }
    }

    /// Looks for each damaged file at the same path with the same size in every other
    /// snapshot whose content there differs (the same content is the same damaged blobs), and
    /// re-chunks what reads back intact.
    private func healFromOtherSnapshots(_ files: [DamagedFile], excluding id: String, healing: inout Healing, reader: BlobReader, healedFrom: inout [String: String]) throws {
        var pending = Dictionary(files.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        for other in try catalog.all() where other.id != id {
            guard !pending.isEmpty else { return }
            guard let manifest = try? catalog.readManifest(other) else { continue }
            for (path, file) in pending {
                guard let c = manifest.components[file.component], let node = findNode(file.relative, in: c.treeID, component: file.component, reader: reader),
                    node.kind == .file, node.size == file.node.size, node.content != file.node.content
                else { continue }
                let chunker = Chunker(scheme: repository.config.chunkingPolicy.scheme(forFileNamed: file.node.name), seed: repository.config.chunkerSeed)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * chunker.scheme.maxSize, alignment: 4096)
                defer { buffer.deallocate() }
                var blobs = node.content.makeIterator()
                var current: [UInt8] = [], offset = 0
                do {
                    try chunker.chunks(reading: { space in
                        while offset == current.count {
                            guard let next = blobs.next() else { return 0 }
                            current = try reader.read(next)
                            offset = 0
                        }
                        let n = min(space.count, current.count - offset)
                        current.withUnsafeBytes { space.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) }
                        offset += n
                        return n
                    }, buffer: buffer) { _ = try healing.offer($0, type: .data) }
                } catch {
                    continue  // that copy is damaged too
                }
                if !file.node.content.contains(where: { healing.damaged[$0] != nil }) {
                    healedFrom[path] = "snapshot \(other.type)/\(other.id)"
                    pending[path] = nil
                }
            }
        }
    }

    private func findNode(_ relative: String, in root: BlobID, component: String, reader: BlobReader) -> Node? {
        var tree = root
        let parts = relative.split(separator: "/").map(String.init)
        for (i, part) in parts.enumerated() {
            guard let t = try? reader.readTree(tree, path: component), let node = t.nodes.first(where: { $0.name == part }) else { return nil }
            if i == parts.count - 1 { return node }
            guard let sub = node.subtree else { return nil }
            tree = sub
        }
        return nil
    }

    /// Records the new packs in the index. With `healed`, one index of every blob at its
    /// current location then replaces all index files, so that the healed copies are the
    /// ones read (a blob listed twice would be read from whichever file loads last).
    private func commitHealedIndex(healed: Bool) throws {
        guard healed else { return try repository.commitIndex() }
        guard !repository.index.takeNewPacks().isEmpty else { return }
        let old = try repository.indexFileNames()
        var byPack: [BlobID: [PackEntry]] = [:]
        for (id, loc) in repository.index.allLocations() {
            byPack[loc.pack, default: []].append(PackEntry(id: id, type: loc.type, offset: loc.offset, length: loc.length, rawLength: loc.rawLength))
        }
        try repository.writeIndex(byPack.map { ($0.key, $0.value.sorted { $0.offset < $1.offset }) })
        for name in old { try repository.removeIndexFile(name) }
    }
}

/// Nothing could be salvaged (exit 1 from the CLI).
public struct RepairFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension SnapshotService {
    /// Salvages a damaged snapshot: every blob it needs is read and re-hashed; damaged
    /// content is healed where another copy exists (another pack, the live file at the same
    /// path and size, the same path in another snapshot) and written anew, which heals every
    /// snapshot sharing it; what cannot be healed is left out of a new snapshot of the same
    /// type and time (`<id>-2`), whose metadata.json names the original (`repaired_from`)
    /// and every file lost. The original is never changed. Atomic as `create` is: a kill
    /// leaves at most unreferenced packs, which `prune` reclaims.
    public func repair(_ options: RepairOptions, progress: WorkProgress = WorkProgress()) throws -> RepairReport {
        try options.validate()
        let (repository, lock) = try open(.exclusive, purpose: "repair")
        defer { lock.release() }
        if let damagedIndex = repository.damagedIndexFiles.first {
            // Its blobs would look lost, and the healed index would replace it.
            throw RepositoryError.corrupt(file: repository.storePath + "/index", detail: "\(damagedIndex); run `snapshot rebuild-metadata` first, then repair")
        }
        let found = try locate(options.snapshot)
        return try Repairer(repository: repository, catalog: catalog, progress: progress)
            .repair(type: found.type, id: found.id, directory: found.directory, record: found.record)
    }
}
