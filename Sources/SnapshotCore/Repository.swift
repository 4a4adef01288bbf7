import Foundation
import Synchronization

/// The repository's own configuration, `.store/config` (JSON, written once by init).
public struct RepositoryConfig: Codable, Sendable {
    public var version: Int
    public var id: String
    /// Selects the chunker's gear table.
    public var chunkerSeed: UInt64
    /// `none`, or `aes-256-gcm`: blobs, index files and snapshot files sealed with the
    /// master keys of `.store/keys` (the chunker seed is then derived from them and this
    /// field holds 0).
    public var encryption: String
    public var created: String
    /// The chunking policy's version (`ChunkingPolicy.version(_:)`); absent in repositories
    /// made before version 2, which keep version 1 so that their chunks still deduplicate.
    public var chunking: Int? = nil

    enum CodingKeys: String, CodingKey {
        case version, id, encryption, created, chunking
        case chunkerSeed = "chunker_seed"
    }

    /// How this repository's files are cut into chunks.
    public var chunkingPolicy: ChunkingPolicy { ChunkingPolicy.version(chunking ?? 1) }
}

/// A snapshot repository: `<type>/<id>/` snapshot directories and the content-addressed store
/// under `.store/`, in a local directory or on an object store (`storage`).
///
/// Thread-safe for concurrent blob reads and for concurrent `BlobWriter`s; the caller holds a
/// `RepositoryLock` for the duration of its work.
public final class Repository: Sendable {
    /// The newest store format this build reads and writes.
    /// 2: entries may be float planes (`PackFormat.compressionPlanes`); 3: half planes too
    /// (`PackFormat.compressionHalfPlanes`). A build that reads only older versions refuses
    /// such a repository instead of calling its blobs damaged; a repository keeps the
    /// version it was made with, and never gets entries its version does not allow.
    public static let formatVersion = 3

    /// The directory, or the URL of a repository on an object store.
    public let path: String
    /// Where its files are. A local repository's packs are also read through cached
    /// descriptors and written with O_DIRECT; everything else goes through the storage.
    public let storage: any RepositoryStorage
    /// True for a repository in a local directory.
    public var isLocal: Bool { storage is LocalStorage }
    public let config: RepositoryConfig
    public let index = MasterIndex()
    /// The master keys of an encrypted repository; nil when it is not encrypted.
    public let keys: MasterKeys?
    /// What opened it: snapshot files are sealed and opened with the same keys.
    public let keyring: Keyring?
    /// The id key prepared for hashing blobs in pairs (encrypted, on CPUs that can).
    private let pairedIDKey: PairedMACKey?
    /// Open pack descriptors, least recently used first out, bounded by `maxOpenPacks` so
    /// that hundreds of packs work under a small `ulimit -n`; an entry in use is never closed.
    private let packFiles = Mutex(PackCache())

    struct PackCache {
        var entries: [BlobID: (fd: Int32, users: Int, lastUse: UInt64)] = [:]
        var clock: UInt64 = 0
    }

    /// Half of what the descriptor limit leaves after 32 for everything else, 2 to 256.
    static let maxOpenPacks: Int = {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 64 }
        let soft = Int(min(limit.rlim_cur, 1 << 20))  // RLIM_INFINITY is the largest value
        return max(2, min(256, (soft - 32) / 2))
    }()
    private let damagedIndex = Mutex<[String]>([])
    /// On an object store: the packs' sizes, listed once (see `packSize`).
    private let remotePacks = Mutex<[BlobID: Int]?>(nil)
    /// On an object store: windows of packs read ahead (see `readRemoteEntry`).
    private let windows = Mutex(WindowCache())
    /// Ids of all-zero blobs by length: a sparse file's holes are cut into chunks of a few
    /// lengths (`Chunker.zeroRunLength`), each hashed once.
    private let zeroIDs = Mutex<[Int: BlobID]>([:])

    struct WindowCache {
        var windows: [(pack: BlobID, start: Int, bytes: [UInt8], lastUse: UInt64)] = []
        var clock: UInt64 = 0
        /// Where each pack's blobs end (its trailer follows), from the index.
        var extents: [BlobID: Int] = [:]
    }

    /// Bytes read ahead from a pack on an object store: one request then serves the blobs
    /// that follow (a restore or a verify reads a pack's blobs in order).
    static let windowSize = 4 << 20
    /// Windows kept: one per reading thread and some.
    static let windowCount = 12
    /// Index files read so far (by name): a reader that meets a blob it cannot place reads
    /// the ones written since it opened — by a create that ran beside it.
    private let loadedIndexFiles = Mutex<Set<String>>([])

    /// Index files that could not be read when the repository was opened, each with what is
    /// wrong. The rest of the index is loaded: the blobs only they named read as missing
    /// until `rebuild-metadata` rebuilds the index from the packs.
    public var damagedIndexFiles: [String] { damagedIndex.withLock { $0 } }

    public var storePath: String { path + "/.store" }
    var dataPath: String { storePath + "/data" }
    var indexPath: String { storePath + "/index" }

    private init(storage: any RepositoryStorage, config: RepositoryConfig, keys: MasterKeys? = nil, keyring: Keyring? = nil) {
        self.storage = storage
        self.path = storage.location
        var c = config
        if let keys { c.chunkerSeed = keys.chunkerSeed }
        self.config = c
        self.keys = keys
        self.keyring = keyring
        pairedIDKey = keys.flatMap { PairedMACKey($0.ids) }
    }

    /// A blob's id: the SHA-256 of its plaintext, or, in an encrypted repository, its
    /// HMAC-SHA256 under the id key.
    public func blobID(_ data: UnsafeRawBufferPointer) -> BlobID {
        guard let keys else { return BlobID.hash(data) }
        return Crypto.hmac(data, key: keys.ids)
    }

    public func blobID(_ bytes: [UInt8]) -> BlobID {
        bytes.withUnsafeBytes { blobID($0) }
    }

    /// The ids of `blobs`, in order, hashed two at a time (`blobIDs(_:_:)`).
    public func blobIDs(of blobs: [UnsafeRawBufferPointer]) -> [BlobID] {
        var ids: [BlobID] = []
        ids.reserveCapacity(blobs.count)
        var i = 0
        while i + 1 < blobs.count {
            let (a, b) = blobIDs(blobs[i], blobs[i + 1])
            ids.append(a)
            ids.append(b)
            i += 2
        }
        if i < blobs.count { ids.append(blobID(blobs[i])) }
        return ids
    }

    /// The id of `length` zero bytes.
    public func zeroBlobID(length: Int) -> BlobID {
        if let id = zeroIDs.withLock({ $0[length] }) { return id }
        let id = blobID([UInt8](repeating: 0, count: length))
        zeroIDs.withLock {
            if $0.count >= 64 { $0.removeAll() }
            $0[length] = id
        }
        return id
    }

    /// `blobIDs(of:)` for the chunks of a sparse file: all-zero ones (its holes) take the id
    /// known for their length, the others are hashed in pairs.
    public func blobIDs(ofSparse blobs: [UnsafeRawBufferPointer]) -> [BlobID] {
        var ids = [BlobID?](repeating: nil, count: blobs.count)
        var data: [UnsafeRawBufferPointer] = [], at: [Int] = []
        for (i, b) in blobs.enumerated() {
            if b.count > 0 && Chunker.isZero(b) { ids[i] = zeroBlobID(length: b.count) } else { data.append(b); at.append(i) }
        }
        for (i, id) in zip(at, blobIDs(of: data)) { ids[i] = id }
        return ids.map { $0! }
    }

    /// `blobIDs(_:_:)` for two chunks of a sparse file: all-zero ones take the id known for
    /// their length.
    public func blobIDs(sparse a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> (BlobID, BlobID) {
        let za = a.count > 0 && Chunker.isZero(a), zb = b.count > 0 && Chunker.isZero(b)
        if !za && !zb { return blobIDs(a, b) }
        return (za ? zeroBlobID(length: a.count) : blobID(a), zb ? zeroBlobID(length: b.count) : blobID(b))
    }

    /// `blobID` for a chunk of a sparse file (an all-zero one takes the id known for its length).
    public func blobID(sparse data: UnsafeRawBufferPointer) -> BlobID {
        data.count > 0 && Chunker.isZero(data) ? zeroBlobID(length: data.count) : blobID(data)
    }

    /// The ids of two blobs, hashed at once where the CPU can (`BlobID.hashPair`).
    public func blobIDs(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> (BlobID, BlobID) {
        guard let keys else { return BlobID.hashPair(a, b) }
        guard let pairedIDKey, a.count > 0, b.count > 0 else { return (Crypto.hmac(a, key: keys.ids), Crypto.hmac(b, key: keys.ids)) }
        return Crypto.hmacPair(a, b, key: pairedIDKey)
    }

    /// Seals a repository file's bytes (encrypted repositories; others unchanged).
    func sealFile(_ bytes: [UInt8], context: String) -> [UInt8] {
        guard let keys else { return bytes }
        return Crypto.seal(bytes, key: keys.encryption, context: context)
    }

    func openFile(_ bytes: [UInt8], context: String, file: String) throws -> [UInt8] {
        guard let keys else { return bytes }
        guard let plain = Crypto.open(bytes, key: keys.encryption, context: context) else {
            throw RepositoryError.corrupt(file: file, detail: "does not decrypt with this repository's key (damaged or not of this repository)")
        }
        return plain
    }

    deinit {
        packFiles.withLock { cache in
            for e in cache.entries.values { close(e.fd) }
        }
    }

    /// True when `path` holds a repository (also one whose config file is damaged or gone:
    /// that is damage to report, not a place to start a new repository).
    public static func exists(at path: String) -> Bool {
        POSIX.exists(path + "/.store/config") || POSIX.exists(path + "/.store/config.copy") || POSIX.isDirectory(path + "/.store/index")
    }

    /// The same for any storage.
    public static func exists(in storage: any RepositoryStorage) throws -> Bool {
        if let local = storage as? LocalStorage { return exists(at: local.root) }
        return try storage.exists(".store/config") || storage.exists(".store/config.copy") || !storage.list(prefix: ".store/index/").isEmpty
    }

    /// Problems with the config file or its copy (`verify` reports them; `rebuild-metadata`
    /// rewrites whichever is damaged from the other).
    public var configProblems: [String] { configTrouble.withLock { $0 } }
    private let configTrouble = Mutex<[String]>([])

    static func readConfig(_ storage: any RepositoryStorage, _ key: String) throws -> RepositoryConfig {
        let file = storage.describe(key)
        let bytes: [UInt8]
        do {
            bytes = try storage.load(key)
        } catch RepositoryError.io(_, _, let code) where code == ENOENT {
            throw RepositoryError.corrupt(file: file, detail: "missing")
        }
        do {
            return try JSONDecoder().decode(RepositoryConfig.self, from: Data(bytes))
        } catch {
            throw RepositoryError.corrupt(file: file, detail: "not a valid repository config (\(error))")
        }
    }

    static func configBytes(_ config: RepositoryConfig) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array(try encoder.encode(config)) + [0x0a]
    }

    /// Writes the config file and its copy (`config.copy`, the same bytes) where either is
    /// missing or unreadable; returns what it wrote. Needs the exclusive lock.
    @discardableResult
    public func rewriteConfigFiles() throws -> [String] {
        let bytes = try Self.configBytes(config)
        var written: [String] = []
        for key in [".store/config", ".store/config.copy"] where (try? Self.readConfig(storage, key)) == nil {
            try storage.save(key, bytes)
            written.append(storage.describe(key))
        }
        return written
    }

    /// Writes the config's copy into a repository made before there was one.
    public func ensureConfigCopy() throws {
        let copy = storePath + "/config.copy"
        guard isLocal, !POSIX.exists(copy), configProblems.isEmpty else { return }
        try POSIX.writeFileAtomically(copy, try POSIX.readFile(storePath + "/config"))
    }

    /// A new config for a repository whose config and copy are both lost: its data is all
    /// still readable (blobs are found by their hashes), but the chunker seed is new, so new
    /// content-defined chunks no longer deduplicate against the old ones.
    public static func replaceLostConfig(at path: String) throws -> RepositoryConfig {
        let store = path + "/.store"
        let config = RepositoryConfig(
            version: formatVersion, id: BlobID.random().hex, chunkerSeed: randomSeed(), encryption: "none", created: Timestamp.now().iso8601,
            chunking: ChunkingPolicy.currentVersion)
        let bytes = try configBytes(config)
        try POSIX.writeFileAtomically(store + "/config.copy", bytes)
        try POSIX.writeFileAtomically(store + "/config", bytes)
        return config
    }

    static func randomSeed() -> UInt64 {
        var seed: UInt64 = 0
        withUnsafeMutableBytes(of: &seed) { raw in
            let id = BlobID.random()
            raw.copyBytes(from: id.bytes[0..<8])
        }
        return seed
    }

    /// Creates a new, empty repository. Throws when one already exists there.
    @discardableResult
    public static func initialize(at path: String, encryption: String = "none", password: [UInt8]? = nil) throws -> Repository {
        try initialize(in: LocalStorage(root: path), encryption: encryption, password: password)
    }

    /// Creates a new, empty repository in any storage. `like` makes it a sibling of another
    /// repository (`copy` to a new one): the same chunker seed and, when encrypted, the same
    /// master keys, so that the same data has the same blob ids in both.
    @discardableResult
    public static func initialize(in storage: any RepositoryStorage, encryption: String = "none", password: [UInt8]? = nil, like sibling: Repository? = nil) throws -> Repository {
        let path = storage.location
        if try exists(in: storage) {
            throw RepositoryError.corrupt(file: storage.describe(".store/config"), detail: "a repository already exists here")
        }
        guard encryption == "none" || encryption == "aes-256-gcm" else {
            throw RepositoryError.corrupt(file: storage.describe(".store/config"), detail: "unknown encryption \(encryption) (aes-256-gcm or none)")
        }
        if encryption != "none" && password == nil {
            throw RepositoryError.key(path: path, detail: "an encrypted repository needs a password: give one with --password-file, SNAPSHOT_PASSWORD_FILE or SNAPSHOT_PASSWORD")
        }
        if let local = storage as? LocalStorage {
            try POSIX.makeDirectories(local.root, mode: RepositoryModes.directory)
            for dir in ["data", "index", "tmp"] {
                try POSIX.makeDirectories(local.root + "/.store/" + dir, mode: RepositoryModes.storeDirectory)
            }
        }
        let seed = sibling.map { $0.keys == nil ? $0.config.chunkerSeed : 0 } ?? (encryption == "none" ? randomSeed() : 0)
        // A sibling cuts files as its source does, so that the same file gives the same chunks.
        let chunking = sibling.map { $0.config.chunking } ?? ChunkingPolicy.currentVersion
        let config = RepositoryConfig(
            version: formatVersion, id: BlobID.random().hex, chunkerSeed: seed, encryption: encryption, created: Timestamp.now().iso8601,
            chunking: chunking)
        var keys: MasterKeys?
        if let password, encryption != "none" {
            if let siblingKeys = sibling?.keys {
                keys = siblingKeys
                _ = try Keyring.writeKeyFile(keys: siblingKeys, password: password, in: storage)
            } else {
                keys = try Keyring.create(in: storage, password: password)
            }
        }
        let bytes = try configBytes(config)
        // The copy first: `exists` is true from the first file on, and then both are there.
        try storage.save(".store/config.copy", bytes)
        try storage.save(".store/config", bytes)
        return Repository(storage: storage, config: config, keys: keys, keyring: password.map { Keyring(storage: storage, password: $0) })
    }

    /// Opens a repository and loads its index.
    public static func open(at path: String, keyring: Keyring? = nil) throws -> Repository {
        try open(storage: LocalStorage(root: path), keyring: keyring)
    }

    /// Opens a repository in any storage and loads its index.
    public static func open(storage: any RepositoryStorage, keyring: Keyring? = nil) throws -> Repository {
        let path = storage.location
        let configPath = storage.describe(".store/config")
        guard try exists(in: storage) else { throw RepositoryError.notFound(path: path) }
        // The config, or its copy when the config is damaged: either opens the repository,
        // and what is wrong with the other is reported by verify.
        var problems: [String] = []
        let config: RepositoryConfig
        do {
            config = try readConfig(storage, ".store/config")
            do {
                if try storage.exists(".store/config.copy") { _ = try readConfig(storage, ".store/config.copy") }
            } catch {
                problems.append("\(error); `snapshot rebuild-metadata` rewrites it from the config")
            }
        } catch let primary as RepositoryError {
            guard case .corrupt(_, let detail) = primary else { throw primary }
            guard let copy = try? readConfig(storage, ".store/config.copy") else {
                throw RepositoryError.corrupt(file: configPath, detail: "\(detail), and there is no intact copy (config.copy); `snapshot rebuild-metadata` writes a new config")
            }
            config = copy
            problems.append("\(primary); opened with its copy config.copy; `snapshot rebuild-metadata` rewrites it")
        }
        guard config.version <= formatVersion else {
            throw RepositoryError.unsupportedVersion(path: path, version: config.version)
        }
        var keys: MasterKeys?
        switch config.encryption {
        case "none":
            break
        case "aes-256-gcm":
            keys = try (keyring ?? Keyring(storage: storage, password: nil)).unlock().keys
        default:
            throw RepositoryError.corrupt(file: configPath, detail: "encryption \(config.encryption) is not supported by this build")
        }
        let repo = Repository(storage: storage, config: config, keys: keys, keyring: keyring)
        repo.configTrouble.withLock { $0 = problems }
        try repo.loadIndex()
        return repo
    }

    /// Reads every index file into `index`; a damaged one is set aside (see
    /// `damagedIndexFiles`), a resource error stops the open.
    func loadIndex() throws {
        for name in try indexFileNames() {
            guard loadedIndexFiles.withLock({ $0.insert(name).inserted }) else { continue }
            let file = storage.describe(".store/index/" + name)
            do {
                index.add(try IndexFile.decode(try openFile(try storage.load(".store/index/" + name), context: "index", file: file), file: file))
            } catch let e as RepositoryError {
                guard case .corrupt = e else { throw e }
                damagedIndex.withLock { $0.append("\(e)") }
            }
        }
    }

    /// Where a blob is: from the index as loaded, or else after reading the index files that
    /// appeared since (a snapshot committed by a create running beside this reader has its
    /// index file written before its directory appears).
    public func location(of id: BlobID) -> BlobLocation? {
        if let l = index.location(of: id) { return l }
        let present = (try? indexFileNames()) ?? []
        guard loadedIndexFiles.withLock({ !Set(present).isSubset(of: $0) }) else { return nil }
        try? loadIndex()
        return index.location(of: id)
    }

    /// The index files present, by name.
    public func indexFileNames() throws -> [String] {
        if isLocal { return try POSIX.listDirectory(indexPath).filter { !$0.contains(".tmp") }.sorted() }
        return try storage.list(prefix: ".store/index/").map { String($0.key.dropFirst(".store/index/".count)) }.filter { !$0.contains("/") && !$0.contains(".tmp") }
    }

    /// A writer for new blobs; give each thread its own.
    public func makeBlobWriter(compressionLevel: Int) -> BlobWriter {
        BlobWriter(repository: self, compressionLevel: compressionLevel)
    }

    /// Makes the packs finished so far durable and readable by later commands: fsyncs the
    /// data directories and writes one new index file (atomically) that lists them. Must be
    /// called after every `BlobWriter.flush()` and before any snapshot that refers to the
    /// blobs is committed.
    public func commitIndex() throws {
        let packs = index.takeNewPacks()
        guard !packs.isEmpty else { return }
        if isLocal {
            var dirs = Set<String>()
            for (pack, _) in packs { dirs.insert(dataPath + "/" + pack.hex.prefix(2)) }
            for dir in dirs { try POSIX.syncDirectory(dir) }
        }
        let name = BlobID.random().hex
        try storage.save(".store/index/" + name, sealFile(IndexFile.encode(packs), context: "index"))
        // Its entries are in `index` already: a later miss need not read it back.
        loadedIndexFiles.withLock { _ = $0.insert(name) }
    }

    /// Whether an index file read by this process is gone: prune or rebuild-metadata
    /// rewrote the index (and may have moved or removed blobs) since. A process that keeps
    /// the repository open across commands (a continuous watch) opens it again then.
    public var indexWasRewritten: Bool {
        let present = Set((try? indexFileNames()) ?? [])
        return loadedIndexFiles.withLock { !$0.isSubset(of: present) }
    }

    /// Writes one index file (atomically) for the given packs; used by prune to replace all
    /// others. The packs must be complete and fsynced.
    public func writeIndex(_ packs: [(pack: BlobID, entries: [PackEntry])]) throws {
        if isLocal {
            var dirs = Set<String>()
            for (pack, _) in packs { dirs.insert(dataPath + "/" + pack.hex.prefix(2)) }
            for dir in dirs where POSIX.isDirectory(dir) { try POSIX.syncDirectory(dir) }
        }
        try storage.save(".store/index/" + BlobID.random().hex, sealFile(IndexFile.encode(packs), context: "index"))
    }

    /// Deletes an index file by name.
    public func removeIndexFile(_ name: String) throws {
        try storage.remove(".store/index/" + name)
    }

    /// Deletes a pack file, closing a cached descriptor first.
    public func removePack(_ pack: BlobID) throws {
        // In use elsewhere, the descriptor is closed by its last user (it is no longer listed).
        if let e = packFiles.withLock({ $0.entries.removeValue(forKey: pack) }), e.users == 0 { close(e.fd) }
        try storage.remove(Self.packKey(pack))
    }

    /// The key of a pack: `.store/data/<xx>/<id>`.
    public static func packKey(_ pack: BlobID) -> String {
        let hex = pack.hex
        return ".store/data/" + hex.prefix(2) + "/" + hex
    }

    /// Path (or URL) of a pack file.
    public func packPath(_ pack: BlobID) -> String {
        storage.describe(Self.packKey(pack))
    }

    /// Whether a pack exists.
    public func packExists(_ pack: BlobID) throws -> Bool {
        if isLocal { return POSIX.exists(packPath(pack)) }
        return try packSize(pack) != nil
    }

    /// A pack's size, or nil when it does not exist. On an object store the packs are listed
    /// once (a thousand per request) rather than asked about one by one; a pack written since
    /// is asked about.
    public func packSize(_ pack: BlobID) throws -> Int? {
        if isLocal {
            var st = stat()
            return stat(packPath(pack), &st) == 0 ? Int(st.st_size) : nil
        }
        if let known = try remotePacks.withLock({ cache -> Int?? in
            if cache == nil {
                var sizes: [BlobID: Int] = [:]
                for o in try storage.list(prefix: ".store/data/") {
                    if let id = BlobID(hex: o.key.split(separator: "/").last ?? "") { sizes[id] = o.size }
                }
                cache = sizes
            }
            return cache?[pack].map { .some($0) }
        }) {
            return known
        }
        return try storage.size(Self.packKey(pack))
    }

    /// The blobs a pack's trailer lists (checked against its checksum). From an object store
    /// with one request for its last 64 KiB (more only for a pack of more than ~1,400 blobs).
    public func readTrailer(_ pack: BlobID) throws -> [PackEntry] {
        if isLocal { return try PackFormat.readTrailer(path: packPath(pack)) }
        let key = Self.packKey(pack)
        guard let size = try packSize(pack) else { throw RepositoryError.io(path: packPath(pack), operation: "read", errno: ENOENT) }
        let tailStart = max(0, size - (64 << 10))
        let tail = try storage.load(key, offset: tailStart, length: size - tailStart)
        return try PackFormat.readTrailer(size: size, file: packPath(pack)) { offset, count in
            offset >= tailStart ? Array(tail[(offset - tailStart)..<(offset - tailStart + count)]) : try storage.load(key, offset: offset, length: count)
        }
    }

    /// Runs `body` with an open descriptor of `pack`, kept open for later calls while the
    /// cache has room (the least recently used idle ones are closed to make it).
    func withPackDescriptor<T>(_ pack: BlobID, _ body: (Int32) throws -> T) throws -> T {
        let cached: Int32? = packFiles.withLock { c in
            guard var e = c.entries[pack] else { return nil }
            c.clock += 1
            e.users += 1
            e.lastUse = c.clock
            c.entries[pack] = e
            return e.fd
        }
        var fd: Int32
        if let cached {
            fd = cached
        } else {
            let path = packPath(pack)
            fd = Foundation.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ENOENT { throw RepositoryError.corrupt(file: path, detail: "pack file missing") }
                throw RepositoryError.fromErrno(path: path, operation: "open")
            }
            let opened = fd
            fd = packFiles.withLock { c -> Int32 in
                c.clock += 1
                if var e = c.entries[pack] {  // another thread opened it meanwhile
                    close(opened)
                    e.users += 1
                    e.lastUse = c.clock
                    c.entries[pack] = e
                    return e.fd
                }
                while c.entries.count >= Self.maxOpenPacks, let idle = c.entries.filter({ $0.value.users == 0 }).min(by: { $0.value.lastUse < $1.value.lastUse }) {
                    close(idle.value.fd)
                    c.entries.removeValue(forKey: idle.key)
                }
                if c.entries.count < Self.maxOpenPacks { c.entries[pack] = (opened, 1, c.clock) }
                return opened
            }
        }
        defer {
            packFiles.withLock { c in
                if var e = c.entries[pack], e.fd == fd {
                    e.users -= 1
                    c.entries[pack] = e
                } else {
                    close(fd)  // not cached (the cache was full of busy ones), or removed meanwhile
                }
            }
        }
        return try body(fd)
    }

    /// An entry from an object store: from a window read before, or by reading a new window
    /// from the entry on (up to `windowSize`, never past the pack's last blob).
    func readRemoteEntry(_ location: BlobLocation) throws -> [UInt8] {
        let start = Int(location.offset), end = start + Int(location.length)
        let hit = windows.withLock { c -> [UInt8]? in
            c.clock += 1
            guard let i = c.windows.firstIndex(where: { $0.pack == location.pack && $0.start <= start && $0.start + $0.bytes.count >= end }) else { return nil }
            c.windows[i].lastUse = c.clock
            let w = c.windows[i]
            return Array(w.bytes[(start - w.start)..<(end - w.start)])
        }
        if let hit { return hit }
        var extent = windows.withLock { $0.extents[location.pack] }
        if extent == nil {
            var ends: [BlobID: Int] = [:]
            for loc in index.allLocations().values { ends[loc.pack] = max(ends[loc.pack] ?? 0, Int(loc.offset) + Int(loc.length)) }
            windows.withLock { $0.extents = ends }
            extent = ends[location.pack]
        }
        let length = max(end, min(start + Self.windowSize, extent ?? end)) - start
        let bytes = try storage.load(Self.packKey(location.pack), offset: start, length: length)
        if length > end - start {
            windows.withLock { c in
                if c.windows.count >= Self.windowCount, let oldest = c.windows.indices.min(by: { c.windows[$0].lastUse < c.windows[$1].lastUse }) {
                    c.windows.remove(at: oldest)
                }
                c.clock += 1
                c.windows.append((location.pack, start, bytes, c.clock))
            }
        }
        return Array(bytes[0..<(end - start)])
    }

    /// Drops `length` bytes of `pack` from `offset` out of the page cache: a restore reads
    /// each pack once, and the pages it frees are the ones its next reads then fill, instead
    /// of new ones (on the virtual machines measured, a new page-cache page costs more than
    /// the copy out of it). Local repositories only; best effort.
    public func dropCachedPages(of pack: BlobID, offset: Int, length: Int) {
        guard isLocal, length > 0 else { return }
        _ = try? withPackDescriptor(pack) { fd in posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_DONTNEED) }
    }

    /// Reads the stored entry of a blob (header byte and payload), undecoded.
    public func readEntry(_ location: BlobLocation) throws -> [UInt8] {
        if !isLocal { return try readRemoteEntry(location) }
        return try withPackDescriptor(location.pack) { fd in
            try POSIX.pread(fd, count: Int(location.length), offset: Int(location.offset), path: packPath(location.pack))
        }
    }
}

/// Reads and decodes blobs. Not thread-safe: one per thread (it owns a zstd context).
public final class BlobReader {
    let repository: Repository
    static let maxBlobSize = 1 << 30
    private let compressor = Compressor(level: 1)

    public init(repository: Repository) {
        self.repository = repository
    }

    /// Reused buffers for stored entries and, in an encrypted repository, their opened
    /// payloads.
    private var scratch: [UInt8] = []
    private var plain: [UInt8] = []

    /// The plaintext of a blob. With `check`, its SHA-256 is recomputed and compared with its
    /// id, so corrupted data is never returned.
    public func read(_ id: BlobID, check: Bool = true) throws -> [UInt8] {
        guard let location = repository.location(of: id) else {
            throw RepositoryError.missingBlob(id: id, context: "not in any index")
        }
        return try read(id, at: location, check: check)
    }

    /// The plaintext of a blob at a given location (another copy than the index names:
    /// `repair` heals from those).
    public func read(_ id: BlobID, at location: BlobLocation, check: Bool = true) throws -> [UInt8] {
        try checkLengths(location)
        return try [UInt8](unsafeUninitializedCapacity: Int(location.rawLength)) { out, count in
            try read(id, at: location, into: UnsafeMutableRawBufferPointer(out), check: check)
            count = out.count
        }
    }

    /// The plaintext of a blob written into `out`, which must be exactly `location.rawLength`
    /// bytes: a restore decodes straight into its write buffer. On an error `out` holds
    /// garbage.
    public func read(_ id: BlobID, at location: BlobLocation, into out: UnsafeMutableRawBufferPointer, check: Bool = true) throws {
        precondition(out.count == Int(location.rawLength))
        try decode(location, into: out)
        if check { try self.check(UnsafeRawBufferPointer(out), id: id, at: location) }
    }

    /// Throws unless `data`, read from `location`, has the id `id`.
    public func check(_ data: UnsafeRawBufferPointer, id: BlobID, at location: BlobLocation) throws {
        if repository.blobID(data) != id { throw mismatch(id, at: location) }
    }

    /// `check` for two blobs at once, hashed together where the CPU can (`BlobID.hashPair`).
    public func check(_ a: UnsafeRawBufferPointer, id idA: BlobID, at locationA: BlobLocation, and b: UnsafeRawBufferPointer, id idB: BlobID, at locationB: BlobLocation) throws {
        let (hashA, hashB) = repository.blobIDs(a, b)
        if hashA != idA { throw mismatch(idA, at: locationA) }
        if hashB != idB { throw mismatch(idB, at: locationB) }
    }

    /// The error for a blob at `location` whose bytes do not hash to `id`.
    public func mismatch(_ id: BlobID, at location: BlobLocation) -> RepositoryError {
        .corrupt(file: repository.packPath(location.pack), detail: "blob \(id.short) at offset \(location.offset) does not match its hash")
    }

    /// No blob is near this size (chunks are at most 2 MiB, trees tens of MiB): a larger
    /// length in an index is damage, not a reason to allocate gigabytes.
    private func checkLengths(_ location: BlobLocation) throws {
        let length = Int(location.length)
        guard length <= Self.maxBlobSize, Int(location.rawLength) <= Self.maxBlobSize else {
            throw RepositoryError.corrupt(file: repository.packPath(location.pack), detail: "entry at \(location.offset) claims \(max(length, Int(location.rawLength))) bytes, more than any blob")
        }
    }

    /// Reads an entry through one reused scratch buffer and decodes it into `out`: restore
    /// and verify read every byte, so copies matter.
    private func decode(_ location: BlobLocation, into out: UnsafeMutableRawBufferPointer) throws {
        let file = repository.packPath(location.pack)
        let length = Int(location.length)
        guard length >= 1 else { throw RepositoryError.corrupt(file: file, detail: "empty entry at \(location.offset)") }
        try checkLengths(location)
        if scratch.count < length { scratch = [UInt8](repeating: 0, count: max(length, 1 << 20)) }
        if repository.isLocal {
            try repository.withPackDescriptor(location.pack) { fd in
                try scratch.withUnsafeMutableBytes { buf in
                    try POSIX.preadExactly(fd, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<length]), offset: Int(location.offset), path: file)
                }
            }
        } else {
            let entry = try repository.readEntry(location)
            scratch.withUnsafeMutableBytes { buf in entry.withUnsafeBytes { buf.copyMemory(from: $0) } }
        }
        let header = scratch[0]
        let sealed = header & PackFormat.encrypted != 0
        let keys = repository.keys
        if sealed && keys == nil {
            throw RepositoryError.corrupt(file: file, detail: "encrypted entry at offset \(location.offset) in an unencrypted repository")
        }
        if !sealed && keys != nil {
            throw RepositoryError.corrupt(file: file, detail: "unencrypted entry at offset \(location.offset) in an encrypted repository")
        }
        // The payload: opened when sealed (whose header's low bits name the codec), else the
        // entry's bytes after the header (whose header is the codec and nothing else).
        let codec = sealed ? header & 0x03 : header
        var opened = 0
        if let keys {
            let plainLength = max(0, length - 1 - Crypto.overhead)
            func damaged() -> RepositoryError { .corrupt(file: file, detail: "blob at offset \(location.offset) does not decrypt (damaged)") }
            if codec == PackFormat.compressionRaw && plainLength == out.count {
                // Stored as it is: opened straight into `out`, no copy.
                guard scratch.withUnsafeBytes({ Crypto.open(UnsafeRawBufferPointer(rebasing: $0[1..<length]), key: keys.encryption, context: "blob", into: out) }) else {
                    throw damaged()
                }
                return
            }
            if plain.count < plainLength { plain = [UInt8](repeating: 0, count: max(plainLength, 1 << 20)) }
            let ok = scratch.withUnsafeBytes { s in
                plain.withUnsafeMutableBytes { p in
                    Crypto.open(UnsafeRawBufferPointer(rebasing: s[1..<length]), key: keys.encryption, context: "blob", into: UnsafeMutableRawBufferPointer(rebasing: p[0..<plainLength]))
                }
            }
            guard ok else { throw damaged() }
            opened = plainLength
        }
        try (sealed ? plain : scratch).withUnsafeBytes { bytes in
            let payload = UnsafeRawBufferPointer(rebasing: sealed ? bytes[0..<opened] : bytes[1..<length])
            switch codec {
            case PackFormat.compressionRaw:
                guard payload.count == Int(location.rawLength) else {
                    throw RepositoryError.corrupt(file: file, detail: "raw blob at \(location.offset) has the wrong length")
                }
                out.copyMemory(from: payload)
            case PackFormat.compressionZstd, PackFormat.compressionPlanes, PackFormat.compressionHalfPlanes:
                do {
                    try decompress(payload, codec: codec, into: out)
                } catch CoreError.corrupt(let detail) {
                    throw RepositoryError.corrupt(file: file, detail: "blob at offset \(location.offset): \(detail)")
                }
            default:
                throw RepositoryError.corrupt(file: file, detail: "unknown entry header \(header) at offset \(location.offset)")
            }
        }
    }

    private func decompress(_ payload: UnsafeRawBufferPointer, codec: UInt8, into out: UnsafeMutableRawBufferPointer) throws {
        let version = repository.config.version
        switch codec {
        case PackFormat.compressionPlanes:
            guard version >= PackFormat.formatVersion(allowing: codec) else { throw CoreError.corrupt("float planes in a repository of format version \(version)") }
            try compressor.decompressPlanes(payload, into: out)
        case PackFormat.compressionHalfPlanes:
            guard version >= PackFormat.formatVersion(allowing: codec) else { throw CoreError.corrupt("half planes in a repository of format version \(version)") }
            try compressor.decompressHalfPlanes(payload, into: out)
        default:
            try compressor.decompress(payload, into: out)
        }
    }
}

/// Stores new blobs into packs. Not thread-safe: one per thread. Deduplicates against the
/// whole repository and against other writers of the same session.
public final class BlobWriter {
    public let repository: Repository
    private let compressor: Compressor
    private var pack: PackWriter?
    /// Packs are closed at about this size.
    static let packTarget = 16 << 20

    /// Bytes of new plaintext and of stored entries written by this writer.
    public private(set) var newRawBytes: Int = 0
    public private(set) var newStoredBytes: Int = 0

    /// The pack file's write buffer, reused for every pack of this writer: 1 MiB, a quarter
    /// of a restore's, since a create has a writer per reading thread besides the trees'
    /// (the same create speed; 12 MiB less memory with four threads).
    private let packBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: BlobWriter.packBufferSize, alignment: 4096)
    static let packBufferSize = 1 << 20

    init(repository: Repository, compressionLevel: Int) {
        self.repository = repository
        compressor = Compressor(level: compressionLevel)
    }

    deinit {
        pack?.discard()
        packBuffer.deallocate()
    }

    /// Stores `data` unless the repository already has it; returns its id.
    /// - Parameter compress: false skips the compression attempt (known-incompressible data).
    @discardableResult
    public func store(_ data: UnsafeRawBufferPointer, type: BlobType, compress: Bool = true) throws -> (id: BlobID, compressed: Bool?) {
        let id = repository.blobID(data)
        guard repository.index.reserve(id) else { return (id, nil) }
        return (id, try storeNew(id: id, data: data, type: type, compress: compress))
    }

    /// Stores a blob whose id the caller computed and reserved through `reserve(_:)`.
    /// Returns whether it was compressed.
    public func storeNew(id: BlobID, data: UnsafeRawBufferPointer, type: BlobType, compress: Bool) throws -> Bool {
        try storeNew(id: id, data: data, type: type, compression: compress ? .zstd : .none) != PackFormat.compressionRaw
    }

    /// The same with a choice of codec; returns the codec used (`PackFormat.compression…`).
    public func storeNew(id: BlobID, data: UnsafeRawBufferPointer, type: BlobType, compression: BlobCompression) throws -> UInt8 {
        if pack == nil { pack = try makePackWriter() }
        var codec = PackFormat.compressionRaw
        // A trial's smallest payload, when the codec was tried rather than given.
        var packed: [UInt8]?
        if data.count >= 64 {
            // Planes codecs only where the format allows them (older repositories: zstd).
            let version = repository.config.version
            let planesAllowed = version >= PackFormat.formatVersion(allowing: PackFormat.compressionPlanes)
            let halfAllowed = version >= PackFormat.formatVersion(allowing: PackFormat.compressionHalfPlanes)
            switch compression {
            case .none:
                break
            case .zstd:
                codec = PackFormat.compressionZstd
            case .floatPlanes where planesAllowed:
                codec = PackFormat.compressionPlanes
            case .halfPlanes where halfAllowed:
                codec = PackFormat.compressionHalfPlanes
            case .floatPlanes, .halfPlanes, .smaller:
                (packed, codec) = (compressor.compress(data), PackFormat.compressionZstd)
                if planesAllowed, let planes = compressor.compressPlanes(data), planes.count <= packed?.count ?? Int.max {
                    (packed, codec) = (planes, PackFormat.compressionPlanes)
                }
                if halfAllowed, let half = compressor.compressHalfPlanes(data), half.count <= packed?.count ?? Int.max {
                    (packed, codec) = (half, PackFormat.compressionHalfPlanes)
                }
                if packed == nil { codec = PackFormat.compressionRaw }
            }
        }
        func store(_ payload: UnsafeRawBufferPointer) throws {
            if let keys = repository.keys {
                // Compressed (when it pays) then sealed: the header says both.
                let sealed = Crypto.seal(payload, key: keys.encryption, context: "blob")
                try sealed.withUnsafeBytes { try pack!.add(id: id, type: type, compression: codec | PackFormat.encrypted, payload: $0, rawLength: data.count) }
                newStoredBytes += sealed.count + 1
            } else {
                try pack!.add(id: id, type: type, compression: codec, payload: payload, rawLength: data.count)
                newStoredBytes += payload.count + 1
            }
        }
        if let packed {
            try packed.withUnsafeBytes { try store($0) }
        } else if codec != PackFormat.compressionRaw {
            // Encoded straight into the pack's write buffer where it can be (a plain local
            // repository), else into the compressor's buffer; raw when it does not pay.
            let bound = Compressor.bound(codec: codec, count: data.count)
            var stored = false
            if repository.keys == nil && pack!.encodesInPlace(upTo: bound) {
                let before = pack!.size
                stored = try pack!.add(id: id, type: type, compression: codec, rawLength: data.count, encodingUpTo: bound) {
                    compressor.encode(data, codec: codec, into: $0)
                }
                if stored { newStoredBytes += pack!.size - before }
            } else if let payload = compressor.encoded(data, codec: codec) {
                try store(payload)
                stored = true
            }
            if !stored {
                codec = PackFormat.compressionRaw
                try store(data)
            }
        } else {
            try store(data)
        }
        newRawBytes += data.count
        if pack!.size >= Self.packTarget { try finishPack() }
        return codec
    }

    /// Copies a stored entry (header byte and payload) unchanged into this writer's pack:
    /// prune's repacking, which needs no recompression.
    public func storeCopy(id: BlobID, type: BlobType, entry: [UInt8], rawLength: Int) throws {
        if pack == nil { pack = try makePackWriter() }
        try entry.withUnsafeBytes { raw in
            try pack!.add(id: id, type: type, compression: raw[0], payload: UnsafeRawBufferPointer(rebasing: raw[1...]), rawLength: rawLength)
        }
        newStoredBytes += entry.count
        if pack!.size >= Self.packTarget { try finishPack() }
    }

    private func makePackWriter() throws -> PackWriter {
        if repository.isLocal { return try PackWriter(dataDirectory: repository.dataPath, buffer: packBuffer) }
        return PackWriter(storage: repository.storage)
    }

    /// Claims `id` for this writer: true when it must be stored.
    public func reserve(_ id: BlobID) -> Bool {
        repository.index.reserve(id)
    }

    @discardableResult
    public func store(_ bytes: [UInt8], type: BlobType) throws -> BlobID {
        try bytes.withUnsafeBytes { try store($0, type: type).id }
    }

    private func finishPack() throws {
        guard let p = pack else { return }
        pack = nil
        do {
            try p.finish()
        } catch {
            // Its last writes (a full disk), its fsync or its rename failed: nothing of it is
            // kept (it was no longer `pack`, which the deinit would discard).
            p.discard()
            throw error
        }
        repository.index.packFinished(p.id, entries: p.entries)
    }

    /// Closes the open pack so that its blobs can be committed by `Repository.commitIndex()`.
    public func flush() throws {
        try finishPack()
    }
}
