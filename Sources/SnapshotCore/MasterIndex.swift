import Synchronization

/// The in-memory map from blob id to location, built from all index files, plus the blobs
/// being written by the current session. Thread-safe.
public final class MasterIndex: Sendable {
    private struct State {
        var locations: [BlobID: BlobLocation] = [:]
        /// Blobs reserved by a writer in this session but not yet in a finished pack.
        var pending: Set<BlobID> = []
        /// Packs finished in this session, not yet recorded in an index file.
        var newPacks: [(pack: BlobID, entries: [PackEntry])] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Adds the contents of a decoded index file.
    func add(_ packs: [(pack: BlobID, entries: [PackEntry])]) {
        state.withLock { s in
            for (pack, entries) in packs {
                for e in entries {
                    s.locations[e.id] = BlobLocation(pack: pack, type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
                }
            }
        }
    }

    /// The location of a blob, if a finished pack holds it.
    public func location(of id: BlobID) -> BlobLocation? {
        state.withLock { $0.locations[id] }
    }

    /// Claims a blob for writing: true when nobody has stored or claimed it yet, so exactly
    /// one writer stores each new blob.
    func reserve(_ id: BlobID) -> Bool {
        state.withLock { s in
            if s.locations[id] != nil { return false }
            return s.pending.insert(id).inserted
        }
    }

    /// Records a finished pack: its blobs become readable.
    func packFinished(_ pack: BlobID, entries: [PackEntry]) {
        state.withLock { s in
            for e in entries {
                s.pending.remove(e.id)
                s.locations[e.id] = BlobLocation(pack: pack, type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
            }
            s.newPacks.append((pack, entries))
        }
    }

    /// Takes the packs finished since the last call, for writing into an index file.
    public func takeNewPacks() -> [(pack: BlobID, entries: [PackEntry])] {
        state.withLock { s in
            defer { s.newPacks = [] }
            return s.newPacks
        }
    }

    /// Every blob with its location.
    public func allLocations() -> [BlobID: BlobLocation] {
        state.withLock { $0.locations }
    }

    public var count: Int { state.withLock { $0.locations.count } }
}
