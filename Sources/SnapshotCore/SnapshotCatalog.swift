import Foundation

/// One committed snapshot: where its directory is and what its metadata says.
public struct SnapshotRecord: Sendable {
    public var type: SnapshotType
    public var id: String
    public var directory: String
    public var metadata: SnapshotMetadata

    public init(type: SnapshotType, id: String, directory: String, metadata: SnapshotMetadata) {
        self.type = type
        self.id = id
        self.directory = directory
        self.metadata = metadata
    }
}

/// A snapshot directory whose metadata.json cannot be read. It is isolated: listed as
/// damaged, counted by verify and monitor, deletable, and never used as a parent or a
/// reference's target; everything else keeps working.
public struct DamagedSnapshot: Sendable, Equatable {
    public var type: SnapshotType
    public var id: String
    public var directory: String
    /// What is wrong, naming the file.
    public var problem: String
    /// The file that is damaged and what is wrong with it (`problem` without the file).
    public var file: String
    public var detail: String

    /// The error for a reference to this snapshot: what is wrong and how to mend it.
    func error(_ context: String = "") -> RepositoryError {
        let ref = "\(type)/\(id)"
        return .corrupt(file: file, detail: "\(detail)\(context); `snapshot rebuild-metadata --snapshot \(ref)` rewrites its metadata.json from the manifest, `snapshot delete --snapshot \(ref)` removes it")
    }
}

/// The visible part of the repository: `<repo>/<type>/<id>/{metadata.json,manifest.json}` and
/// `<repo>/<type>/latest`. Committing a snapshot is one directory rename, so a snapshot is
/// either wholly visible or not at all.
///
/// On an object store there are no directories to rename: a snapshot is committed by saving
/// its manifest.json and then its metadata.json, the commit point (a snapshot without
/// metadata.json is not listed), and `<type>/latest` is not kept (the newest is found by
/// listing).
public struct SnapshotCatalog: Sendable {
    public let repositoryPath: String
    public let storage: any RepositoryStorage
    /// The keys of an encrypted repository, whose snapshot files are sealed.
    public let keyring: Keyring?

    public init(repositoryPath: String, keyring: Keyring? = nil) {
        self.repositoryPath = repositoryPath
        self.storage = keyring.flatMap { $0.repositoryPath == repositoryPath ? $0.storage : nil } ?? LocalStorage(root: repositoryPath)
        self.keyring = keyring
    }

    public init(storage: any RepositoryStorage, keyring: Keyring? = nil) {
        self.repositoryPath = storage.location
        self.storage = storage
        self.keyring = keyring
    }

    /// The catalog of an open repository, with the keys that opened it.
    public init(repository: Repository) {
        self.init(storage: repository.storage, keyring: repository.keyring)
    }

    var isLocal: Bool { storage is LocalStorage }

    /// The storage key of a path under the repository (remote repositories).
    private func key(_ path: String) -> String {
        path.hasPrefix(repositoryPath + "/") ? String(path.dropFirst(repositoryPath.count + 1)) : path
    }

    /// Reads a snapshot file by its path (or URL).
    private func readFile(_ path: String) throws -> [UInt8] {
        isLocal ? try POSIX.readFile(path) : try storage.load(key(path))
    }

    private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        if isLocal {
            try POSIX.writeFileAtomically(path, bytes, mode: RepositoryModes.snapshotFile)
        } else {
            try storage.save(key(path), bytes)
        }
    }

    /// In an encrypted repository, metadata.json holds in the clear only what is no secret
    /// (ids, times, sizes, type, counts) and the whole of it sealed under `sealed`;
    /// manifest.json holds only `sealed`.
    struct Sealed: Decodable { var sealed: String? }

    private func keys() throws -> MasterKeys? {
        try (keyring ?? Keyring(storage: storage, password: nil)).keysIfEncrypted()
    }

    /// Whether `"sealed"` occurs in `bytes`.
    static func mentionsSealed(_ bytes: [UInt8]) -> Bool {
        bytes.offset(of: Array("\"sealed\"".utf8)) != nil
    }

    /// The plaintext of a snapshot file: opened when sealed; refused unsealed in an
    /// encrypted repository.
    func plaintext(_ bytes: [UInt8], path: String, context: String) throws -> [UInt8] {
        let keys = try keys()
        // A plain repository's file without the key is read as it is (one JSON parse, not two).
        if keys == nil && !Self.mentionsSealed(bytes) { return bytes }
        let sealed = (try? JSONDecoder().decode(Sealed.self, from: Data(bytes)))?.sealed
        guard let sealed else {
            if keys != nil { throw RepositoryError.corrupt(file: path, detail: "not sealed, in an encrypted repository") }
            return bytes
        }
        guard let keys else { throw RepositoryError.corrupt(file: path, detail: "sealed, in an unencrypted repository") }
        guard let data = Data(base64Encoded: sealed), let plain = Crypto.open(Array(data), key: keys.encryption, context: context) else {
            throw RepositoryError.corrupt(file: path, detail: "does not decrypt with this repository's key")
        }
        return plain
    }

    /// The bytes written to metadata.json.
    public func metadataBytes(_ metadata: SnapshotMetadata) throws -> [UInt8] {
        let full = try metadata.jsonBytes()
        guard let keys = try keys() else { return full + [0x0a] }
        var visible = metadata
        visible.components = metadata.components.mapValues { ComponentSummary(kind: $0.kind, source: "", files: $0.files, bytes: $0.bytes) }
        visible.checksums = [:]
        visible.hostname = ""
        visible.tags = [:]
        visible.lost = nil
        visible.healed = nil
        var object = try JSONSerialization.jsonObject(with: Data(try visible.jsonBytes())) as? [String: Any] ?? [:]
        object["sealed"] = Data(Crypto.seal(full, key: keys.encryption, context: "metadata")).base64EncodedString()
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) + [0x0a]
    }

    /// The bytes written to manifest.json.
    public func manifestBytes(_ manifest: SnapshotManifest) throws -> [UInt8] {
        try manifestBytes(plain: Array(try JSONEncoder.snapshot.encode(manifest)))
    }

    public func manifestBytes(plain: [UInt8]) throws -> [UInt8] {
        guard let keys = try keys() else { return plain + [0x0a] }
        let object: [String: Any] = ["format": 1, "sealed": Data(Crypto.seal(plain, key: keys.encryption, context: "manifest")).base64EncodedString()]
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) + [0x0a]
    }

    /// The manifest's plaintext JSON as stored in its blob (no trailing newline).
    public func manifestPlaintext(directory: String) throws -> [UInt8] {
        let path = directory + "/manifest.json"
        let plain = try plaintext(try readFile(path), path: path, context: "manifest")
        return plain.last == 0x0a ? Array(plain.dropLast()) : plain
    }

    /// The types that have a directory in the repository (built-in or user-defined), by name.
    public func types() throws -> [SnapshotType] {
        if !isLocal { return try storage.names(under: "").compactMap { SnapshotType($0) }.sorted() }
        guard POSIX.isDirectory(repositoryPath) else { return [] }
        return try POSIX.listDirectory(repositoryPath).compactMap { name in
            SnapshotType(name).flatMap { POSIX.isDirectory(repositoryPath + "/" + name) ? $0 : nil }
        }.sorted()
    }

    /// Every readable snapshot, newest first (by timestamp, then id). Snapshots whose
    /// metadata.json cannot be read are left out: see `damaged`.
    public func all(type: SnapshotType? = nil) throws -> [SnapshotRecord] {
        try scan(type: type).records
    }

    /// The snapshot directories whose metadata.json cannot be read, by id.
    public func damaged(type: SnapshotType? = nil) throws -> [DamagedSnapshot] {
        try scan(type: type).damaged
    }

    /// Reads every snapshot directory once; a damaged one never stops the others.
    public func scan(type: SnapshotType? = nil) throws -> (records: [SnapshotRecord], damaged: [DamagedSnapshot]) {
        var out: [SnapshotRecord] = []
        var damaged: [DamagedSnapshot] = []
        for t in try type.map({ [$0] }) ?? types() {
            let dir = repositoryPath + "/" + t.name
            let names: [String]
            if isLocal {
                guard POSIX.isDirectory(dir) else { continue }
                names = try POSIX.listDirectory(dir).filter { POSIX.isDirectory(dir + "/" + $0) }
            } else {
                // Committed: those with a metadata.json (a manifest alone is a create that
                // did not reach its commit point).
                names = try storage.list(prefix: t.name + "/").compactMap { o in
                    o.key.hasSuffix("/metadata.json") ? o.key.split(separator: "/").dropFirst().first.map(String.init) : nil
                }
            }
            for name in names where !name.hasPrefix(".") && name != "latest" {
                let snapDir = dir + "/" + name
                do {
                    out.append(SnapshotRecord(type: t, id: name, directory: snapDir, metadata: try readMetadata(snapDir + "/metadata.json")))
                } catch let e as RepositoryError {
                    // Malformed or missing is damage; a resource error (EACCES, EMFILE, EIO)
                    // is not, and stops the command.
                    let file: String, detail: String
                    switch e {
                    case .corrupt(let f, let d): (file, detail) = (f, d)
                    case .io(_, _, let code) where code == ENOENT: (file, detail) = (snapDir + "/metadata.json", "missing")
                    default: throw e
                    }
                    damaged.append(DamagedSnapshot(type: t, id: name, directory: snapDir, problem: "\(e)", file: file, detail: detail))
                }
            }
        }
        return (Self.newestFirst(out), damaged.sorted { Self.idOrder($0.id, $1.id) })
    }

    static func newestFirst(_ out: [SnapshotRecord]) -> [SnapshotRecord] {
        out.sorted { a, b in
            a.metadata.timestamp != b.metadata.timestamp ? a.metadata.timestamp > b.metadata.timestamp : Self.idOrder(a.id, b.id)
        }
    }

    /// A snapshot id: `YYYY-MM-DD_HH-MM-SS`, optionally `-N`. Ids become directory names, so
    /// one read from a repository file is checked with this before it is used as a path.
    public static func isValidID(_ id: String) -> Bool {
        let b = Array(id.utf8)
        guard b.count >= 19, b.count <= 30, time(ofID: id) != nil else { return false }
        guard b.count > 19 else { return true }
        return b[19] == UInt8(ascii: "-") && b.count > 20 && b[20...].allSatisfy { (0x30...0x39).contains($0) }
    }

    /// The UTC time an id names (its first 19 characters).
    public static func time(ofID id: String) -> Timestamp? {
        let b = Array(id.utf8.prefix(19))
        guard b.count == 19 else { return nil }
        for (i, c) in b.enumerated() {
            let expected: UInt8? = [4: 0x2D, 7: 0x2D, 10: 0x5F, 13: 0x2D, 16: 0x2D][i]
            if let expected { guard c == expected else { return nil } } else { guard (0x30...0x39).contains(c) else { return nil } }
        }
        let s = String(decoding: b, as: UTF8.self)
        let iso = s.prefix(10) + "T" + s.dropFirst(11).replacingOccurrences(of: "-", with: ":") + "Z"
        return Timestamp(iso8601: String(iso))
    }

    /// Orders ids newest first, treating `-10` after `-9`.
    public static func idOrder(_ a: String, _ b: String) -> Bool {
        func split(_ s: String) -> (String, Int) {
            let base = String(s.prefix(19))
            let suffix = s.count > 20 ? Int(s.dropFirst(20)) ?? 0 : 0
            return (base, suffix)
        }
        let (ab, an) = split(a), (bb, bn) = split(b)
        return ab != bb ? ab > bb : an > bn
    }

    public func readMetadata(_ path: String) throws -> SnapshotMetadata {
        let bytes = try plaintext(try readFile(path), path: path, context: "metadata")
        do {
            return try JSONDecoder().decode(SnapshotMetadata.self, from: Data(bytes))
        } catch {
            throw RepositoryError.corrupt(file: path, detail: "not valid snapshot metadata (\(Self.describe(error)))")
        }
    }

    public func readManifest(_ record: SnapshotRecord) throws -> SnapshotManifest {
        try readManifest(directory: record.directory)
    }

    /// The manifest.json of a snapshot directory (also of a damaged one).
    public func readManifest(directory: String) throws -> SnapshotManifest {
        let path = directory + "/manifest.json"
        let raw: [UInt8]
        do {
            raw = try readFile(path)
        } catch RepositoryError.io(_, _, let code) where code == ENOENT {
            throw RepositoryError.corrupt(file: path, detail: "manifest missing")
        }
        let bytes = try plaintext(raw, path: path, context: "manifest")
        do {
            // A component whose tree is not a valid id does not decode (ManifestComponent).
            return try JSONDecoder().decode(SnapshotManifest.self, from: Data(bytes))
        } catch let e as RepositoryError {
            throw e
        } catch {
            throw RepositoryError.corrupt(file: path, detail: "not a valid manifest (\(Self.describe(error)))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        case DecodingError.keyNotFound(let k, _): return "missing key \(k.stringValue)"
        case DecodingError.typeMismatch(_, let c): return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.valueNotFound(_, let c): return "null at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        default: return "\(error)"
        }
    }

    /// Resolves a reference: an id, `latest` (newest of any type except pre-restore),
    /// `TYPE/latest`, `TYPE/ID`, `TYPE@ISO8601` (the newest of the type at or before that
    /// time), or a unique snapshot name. With `type` (the seed's
    /// `--snapshot ID --type T`), only snapshots of that type are considered.
    public func resolve(_ reference: String, type narrowed: SnapshotType? = nil) throws -> SnapshotRecord {
        if let at = reference.firstIndex(of: "@") {
            // TYPE@ISO8601: the newest of the type at or before that time.
            let typeName = String(reference[..<at]), when = String(reference[reference.index(after: at)...])
            guard let type = SnapshotType(typeName) else {
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "\(typeName) is not a snapshot type (\(SnapshotType.nameRule))")
            }
            guard let time = Timestamp(iso8601: when) else {
                // A snapshot name may hold '@' too.
                let named = try all(type: narrowed).filter { $0.metadata.name == reference }
                if named.count == 1 { return named[0] }
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "\(when) is not an ISO 8601 time such as 2026-11-28T10:15:00Z")
            }
            if let narrowed, narrowed != type {
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "it names a \(type) snapshot, but --type is \(narrowed)")
            }
            let candidates = try all(type: type)
            guard let r = candidates.first(where: { Timestamp(iso8601: $0.metadata.timestamp).map { $0.timeInterval <= time.timeInterval } ?? false }) else {
                let oldest = candidates.last.map { "; the oldest is \($0.id) (\($0.metadata.timestamp))" } ?? ""
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "no \(type) snapshot at or before \(time.iso8601)\(oldest)")
            }
            return r
        }
        if let slash = reference.firstIndex(of: "/") {
            let typeName = String(reference[..<slash]), rest = String(reference[reference.index(after: slash)...])
            guard let type = SnapshotType(typeName) else {
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "\(typeName) is not a snapshot type (\(SnapshotType.nameRule))")
            }
            if let narrowed, narrowed != type {
                throw RepositoryError.snapshotNotFound(reference: reference, detail: "it names a \(type) snapshot, but --type is \(narrowed)")
            }
            return try resolve(rest, type: type)
        }
        let (all, damaged) = try scan(type: narrowed)
        let what = narrowed.map { "\($0) snapshots" } ?? "snapshots"
        if reference == "latest" {
            // A pre-restore or sanitized copy is only `latest` of its own type.
            func counts(_ type: SnapshotType) -> Bool { (type != .preRestore && type != .sanitized) || narrowed != nil }
            let r = all.first(where: { counts($0.type) })
            // A damaged snapshot newer than every readable one is what `latest` means: an
            // older snapshot is never put in its place without a word.
            if let d = damaged.first(where: { counts($0.type) }), r.map({ Self.idOrder(d.id, $0.id) }) ?? true {
                let older = r.map { "; the newest readable one is \($0.type)/\($0.id)" } ?? ""
                throw d.error(" (\(d.type)/\(d.id) is the newest of the \(what), so `latest` names it\(older))")
            }
            guard let r else {
                throw RepositoryError.snapshotNotFound(reference: narrowed.map { "\($0)/latest" } ?? reference, detail: "the repository has no \(what)")
            }
            return r
        }
        if let r = all.first(where: { $0.id == reference }) { return r }
        if let d = damaged.first(where: { $0.id == reference }) { throw d.error() }
        let named = all.filter { !$0.metadata.name.isEmpty && $0.metadata.name == reference }
        if named.count == 1 { return named[0] }
        if named.count > 1 {
            throw RepositoryError.snapshotNotFound(reference: reference, detail: "name is not unique (\(named.map(\.id).joined(separator: ", "))); use an id")
        }
        throw RepositoryError.snapshotNotFound(reference: reference, detail: narrowed.map { "no \($0) snapshot has this id or name (see `snapshot list --type \($0)`)" } ?? "no snapshot has this id or name (see `snapshot list`)")
    }

    /// A new id for a snapshot taken at `time`: its UTC second, with `-2`, `-3`… appended
    /// when that id is taken in any type.
    public func allocateID(at time: Timestamp) throws -> String {
        let base = time.snapshotID
        var taken = Set<String>()
        for t in try types() {
            taken.formUnion(isLocal ? try POSIX.listDirectory(repositoryPath + "/" + t.name) : try storage.names(under: t.name + "/"))
        }
        if !taken.contains(base) { return base }
        var n = 2
        while taken.contains("\(base)-\(n)") { n += 1 }
        return "\(base)-\(n)"
    }

    /// Makes a snapshot visible: writes metadata.json and manifest.json into a hidden
    /// directory, fsyncs them, renames the directory to `<type>/<id>` (the commit point) and
    /// then points `<type>/latest` at it. The caller must have committed the index first.
    public func commit(metadata: SnapshotMetadata, manifest: SnapshotManifest) throws -> SnapshotRecord {
        guard let type = SnapshotType(metadata.type) else {
            throw RepositoryError.corrupt(file: repositoryPath + "/" + metadata.type, detail: "not a snapshot type name (\(SnapshotType.nameRule))")
        }
        let typeDir = repositoryPath + "/" + type.name
        if !isLocal {
            let dir = type.name + "/" + metadata.snapshotID
            try storage.save(dir + "/manifest.json", try manifestBytes(manifest))
            try storage.save(dir + "/metadata.json", try metadataBytes(metadata))
            return SnapshotRecord(type: type, id: metadata.snapshotID, directory: typeDir + "/" + metadata.snapshotID, metadata: metadata)
        }
        try POSIX.makeDirectories(typeDir, mode: RepositoryModes.directory)
        let staging = typeDir + "/.tmp-" + metadata.snapshotID
        try POSIX.removeTree(staging)
        try POSIX.makeDirectories(staging, mode: RepositoryModes.directory)
        try POSIX.writeFileAtomically(staging + "/manifest.json", try manifestBytes(manifest), mode: RepositoryModes.snapshotFile)
        try POSIX.writeFileAtomically(staging + "/metadata.json", try metadataBytes(metadata), mode: RepositoryModes.snapshotFile)
        let final = typeDir + "/" + metadata.snapshotID
        guard rename(staging, final) == 0 else { throw RepositoryError.fromErrno(path: final, operation: "rename") }
        try POSIX.syncDirectory(typeDir)
        if try !latestIsNewer(type: type, than: metadata) { try pointLatest(typeDir: typeDir, at: metadata.snapshotID) }
        return SnapshotRecord(type: type, id: metadata.snapshotID, directory: final, metadata: metadata)
    }

    /// Whether `<type>/latest` names a snapshot newer than `metadata`'s (then it stays). Reads
    /// one metadata.json, not every one of the type (continuous snapshots come by the
    /// thousand); with no readable link it points the link at the newest of the type itself
    /// and answers true.
    private func latestIsNewer(type: SnapshotType, than metadata: SnapshotMetadata) throws -> Bool {
        let typeDir = repositoryPath + "/" + type.name
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = readlink(typeDir + "/latest", &buffer, buffer.count)
        guard n > 0, let current = String(validating: buffer[..<n], as: UTF8.self), Self.isValidID(current),
            let m = try? readMetadata(typeDir + "/" + current + "/metadata.json")
        else {
            // No readable link: point it at the newest of the type, whichever that is.
            try updateLatest(type: type)
            return true
        }
        if current == metadata.snapshotID { return false }
        return m.timestamp != metadata.timestamp ? m.timestamp > metadata.timestamp : Self.idOrder(current, metadata.snapshotID)
    }

    private func pointLatest(typeDir: String, at id: String) throws {
        let link = typeDir + "/latest"
        let tmp = typeDir + "/.latest.tmp"
        unlink(tmp)
        guard symlink(id, tmp) == 0 else { throw RepositoryError.fromErrno(path: tmp, operation: "symlink") }
        guard rename(tmp, link) == 0 else { throw RepositoryError.fromErrno(path: link, operation: "rename") }
        try POSIX.syncDirectory(typeDir)
    }

    /// Points `<type>/latest` at the newest snapshot of the type (or removes it when none).
    public func updateLatest(type: SnapshotType) throws {
        guard isLocal else { return }
        let typeDir = repositoryPath + "/" + type.name
        let link = typeDir + "/latest"
        guard let newest = try all(type: type).first else {
            unlink(link)
            return
        }
        try pointLatest(typeDir: typeDir, at: newest.id)
    }

    /// Rewrites a committed snapshot's metadata.json atomically (verification results).
    public func rewriteMetadata(_ record: SnapshotRecord, _ metadata: SnapshotMetadata) throws {
        try writeFile(record.directory + "/metadata.json", try metadataBytes(metadata))
    }

    /// Runs `body` holding the commit lock (`.store/locks/commit`): naming a snapshot and
    /// committing it, which concurrent creates must not interleave (two could otherwise take
    /// the same id). Held for milliseconds; others wait up to five minutes for it.
    public func withCommitLock<T>(_ body: () throws -> T) throws -> T {
        // An object store's writers hold its exclusive lock object instead.
        guard isLocal else { return try body() }
        let locks = repositoryPath + "/.store/locks"
        try POSIX.makeDirectories(locks, mode: RepositoryModes.storeDirectory)
        let lock = try RepositoryLock(path: locks + "/commit", mode: .exclusive, purpose: "commit", wait: 300, repository: repositoryPath)
        defer { lock.release() }
        return try body()
    }

    /// On an object store: removes the files of snapshots that never reached their commit
    /// point (a manifest.json without metadata.json, left by a create or copy that died).
    /// Call it holding the exclusive lock (no create or copy is between its two saves).
    /// Returns what it removed.
    @discardableResult
    public func removeUncommitted() throws -> [String] {
        guard !isLocal else { return [] }
        var removed: [String] = []
        for t in try types() {
            var files: [String: [String]] = [:]
            for o in try storage.list(prefix: t.name + "/") {
                let parts = o.key.split(separator: "/", maxSplits: 2)
                guard parts.count == 3 else { continue }
                files["\(parts[0])/\(parts[1])", default: []].append(o.key)
            }
            for (dir, keys) in files.sorted(by: { $0.key < $1.key }) where !keys.contains(dir + "/metadata.json") {
                for k in keys { try storage.remove(k) }
                removed.append(dir)
            }
        }
        return removed
    }

    /// Removes hidden staging directories left by a killed create (call it holding the
    /// commit lock: a running create stages only inside it).
    public func removeStaleStaging() {
        guard isLocal else { return }
        for t in (try? types()) ?? [] {
            let dir = repositoryPath + "/" + t.name
            guard let names = try? POSIX.listDirectory(dir) else { continue }
            for name in names where name.hasPrefix(".tmp-") || name == ".latest.tmp" {
                try? POSIX.removeTree(dir + "/" + name)
            }
        }
    }
}
