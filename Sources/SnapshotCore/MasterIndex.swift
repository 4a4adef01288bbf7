import Synchronization

/// The in-memory map from blob id to location, built from all index files, plus the blobs
/// being written by the current session. Thread-safe.
///
/// Compact, because a repository of small files has hundreds of thousands of blobs and a
/// long-running process (a continuous watch) keeps it for hours: what the index files list
/// is one sorted array of 56-byte entries naming packs by number (binary searched), not a
/// hash table of 80-byte entries at a load factor of at most 3/4 (200,000 blobs: 11 MiB
/// instead of 42). Blobs packed by this process sit in a small table until there are enough
/// of them to merge.
public final class MasterIndex: Sendable {
    struct Entry {
        var id: BlobID
        var pack: UInt32
        var offset: UInt32
        var length: UInt32
        var rawLength: UInt32
        var type: BlobType

        static func before(_ a: Entry, _ b: Entry) -> Bool { a.id.wordsPrecede(b.id) }
    }

    private struct State {
        var packs: [BlobID] = []
        var packNumbers: [BlobID: UInt32] = [:]
        /// Sorted by id (duplicates allowed: the same blob in two packs).
        var sorted: [Entry] = []
        /// `buckets[k]`: the first entry of `sorted` whose id's top 16 bits (of its first
        /// word) are at least k, so that a lookup searches a few entries, not all of them
        /// (ids are hashes: uniformly spread).
        var buckets: [UInt32] = []
        /// Added since the last lookup; merged into `sorted` by the next one.
        var unsorted: [Entry] = []
        /// Finished by this process, not yet merged.
        var recent: [BlobID: BlobLocation] = [:]
        /// Blobs reserved by a writer in this session but not yet in a finished pack.
        var pending: Set<BlobID> = []
        /// Packs finished in this session, not yet recorded in an index file.
        var newPacks: [(pack: BlobID, entries: [PackEntry])] = []

        mutating func number(of pack: BlobID) -> UInt32 {
            if let n = packNumbers[pack] { return n }
            let n = UInt32(packs.count)
            packs.append(pack)
            packNumbers[pack] = n
            return n
        }

        mutating func append(_ e: PackEntry, pack: UInt32) {
            unsorted.append(Entry(id: e.id, pack: pack, offset: e.offset, length: e.length, rawLength: e.rawLength, type: e.type))
        }

        mutating func merge() {
            guard !unsorted.isEmpty else { return }
            defer { indexBuckets() }
            unsorted.sort(by: Entry.before)
            if sorted.isEmpty {
                swap(&sorted, &unsorted)
                return
            }
            // In place, from the back: `sorted` grows by doubling, so most merges need no
            // second copy of the whole index (a 200,000-blob create peaked 11 MiB higher).
            var i = sorted.count - 1, j = unsorted.count - 1
            sorted.append(contentsOf: unsorted)
            var k = sorted.count - 1
            while j >= 0 {
                if i >= 0 && Entry.before(unsorted[j], sorted[i]) {
                    sorted[k] = sorted[i]
                    i -= 1
                } else {
                    sorted[k] = unsorted[j]
                    j -= 1
                }
                k -= 1
            }
            unsorted = []
        }

        mutating func indexBuckets() {
            buckets = [UInt32](repeating: 0, count: 65537)
            var k = 0
            for (i, e) in sorted.enumerated() {
                let top = Int(e.id.w0 >> 48)
                while k <= top {
                    buckets[k] = UInt32(i)
                    k += 1
                }
            }
            while k <= 65536 {
                buckets[k] = UInt32(sorted.count)
                k += 1
            }
        }

        mutating func location(of id: BlobID) -> BlobLocation? {
            if let l = recent[id] { return l }
            merge()
            guard !sorted.isEmpty else { return nil }
            let top = Int(id.w0 >> 48)
            var lo = Int(buckets[top]), hi = Int(buckets[top + 1])
            while lo < hi {
                let mid = (lo + hi) / 2
                if sorted[mid].id.wordsPrecede(id) { lo = mid + 1 } else { hi = mid }
            }
            guard lo < sorted.count, sorted[lo].id == id else { return nil }
            let e = sorted[lo]
            return BlobLocation(pack: packs[Int(e.pack)], type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
        }

        /// Moves this session's finished blobs into the compact entries once they are many.
        mutating func foldRecent() {
            guard recent.count >= max(4096, sorted.count / 8) else { return }
            for (id, l) in recent {
                unsorted.append(Entry(id: id, pack: number(of: l.pack), offset: l.offset, length: l.length, rawLength: l.rawLength, type: l.type))
            }
            recent = [:]
        }
    }
    private let state = Mutex(State())

    public init() {}

    /// Adds the contents of a decoded index file.
    func add(_ packs: [(pack: BlobID, entries: [PackEntry])]) {
        state.withLock { s in
            // Once for the whole file: reserving per pack grew the array to an exact size
            // each time, copying it once per pack (a third of opening a 600-pack index).
            s.unsorted.reserveCapacity(s.unsorted.count + packs.reduce(0) { $0 + $1.entries.count })
            for (pack, entries) in packs {
                let n = s.number(of: pack)
                for e in entries { s.append(e, pack: n) }
            }
        }
    }

    /// The location of a blob, if a finished pack holds it.
    public func location(of id: BlobID) -> BlobLocation? {
        state.withLock { $0.location(of: id) }
    }

    /// Claims a blob for writing: true when nobody has stored or claimed it yet, so exactly
    /// one writer stores each new blob.
    func reserve(_ id: BlobID) -> Bool {
        state.withLock { s in
            if s.location(of: id) != nil { return false }
            return s.pending.insert(id).inserted
        }
    }

    /// Records a finished pack: its blobs become readable.
    func packFinished(_ pack: BlobID, entries: [PackEntry]) {
        state.withLock { s in
            for e in entries {
                s.pending.remove(e.id)
                s.recent[e.id] = BlobLocation(pack: pack, type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
            }
            s.newPacks.append((pack, entries))
            s.foldRecent()
        }
    }

    /// Blobs in packs finished since the last `takeNewPacks()`.
    public var unrecordedBlobs: Int { state.withLock { $0.newPacks.reduce(0) { $0 + $1.entries.count } } }

    /// Takes the packs finished since the last call, for writing into an index file.
    public func takeNewPacks() -> [(pack: BlobID, entries: [PackEntry])] {
        state.withLock { s in
            defer { s.newPacks = [] }
            return s.newPacks
        }
    }

    /// Every blob with its location (one of them for a blob stored twice).
    public func allLocations() -> [BlobID: BlobLocation] {
        state.withLock { s in
            s.merge()
            var out: [BlobID: BlobLocation] = [:]
            out.reserveCapacity(s.sorted.count + s.recent.count)
            for e in s.sorted {
                out[e.id] = BlobLocation(pack: s.packs[Int(e.pack)], type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
            }
            for (id, l) in s.recent { out[id] = l }
            return out
        }
    }

    /// Blobs known (a blob stored in two packs counts twice).
    public var count: Int { state.withLock { $0.sorted.count + $0.unsorted.count + $0.recent.count } }
}

extension BlobID {
    /// A total order on the four words (cheaper than comparing hex; not the byte order).
    @inline(__always)
    func wordsPrecede(_ b: BlobID) -> Bool {
        if w0 != b.w0 { return w0 < b.w0 }
        if w1 != b.w1 { return w1 < b.w1 }
        if w2 != b.w2 { return w2 < b.w2 }
        return w3 < b.w3
    }
}
