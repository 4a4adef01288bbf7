#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// The keys of an encrypted repository: one random master key pair, never stored in the
/// clear. `encryption` seals blobs, index files and snapshot files (AES-256-GCM); `ids`
/// keys the blob ids (HMAC-SHA256), so that equal plaintext cannot be recognised across
/// repositories, and derives the chunker seed.
public struct MasterKeys: Sendable, Equatable {
    public let encryption: [UInt8]
    public let ids: [UInt8]

    init(_ material: [UInt8]) {
        precondition(material.count == 2 * Crypto.keySize)
        encryption = Array(material[0..<Crypto.keySize])
        ids = Array(material[Crypto.keySize...])
    }

    var material: [UInt8] { encryption + ids }

    /// The content-defined chunker's seed, derived from the id key (the config holds none).
    var chunkerSeed: UInt64 {
        Array("chunker seed".utf8).withUnsafeBytes { Crypto.hmac($0, key: ids) }.w0
    }
}

/// One password's key file, `.store/keys/<id>`: the master keys sealed with a key derived
/// from the password by scrypt (parameters and salt stored beside it).
public struct KeyFile: Codable, Sendable {
    public var id: String
    public var created: String
    public var hostname: String
    public var kdf: String
    public var n: UInt64
    public var r: UInt64
    public var p: UInt64
    public var salt: String
    public var data: String

    /// N = 2^15, r = 8, p = 3: 32 MiB of memory (it counts towards a command's peak RSS) and
    /// about 0.3 s of one core, once per command (the agent: once per process).
    public static let defaultN: UInt64 = 1 << 15
    public static let defaultR: UInt64 = 8
    public static let defaultP: UInt64 = 3

    public init(id: String, created: String, hostname: String, kdf: String, n: UInt64, r: UInt64, p: UInt64, salt: String, data: String) {
        self.id = id
        self.created = created
        self.hostname = hostname
        self.kdf = kdf
        self.n = n
        self.r = r
        self.p = p
        self.salt = salt
        self.data = data
    }
}

/// What `key list` shows.
public struct KeyInfo: Codable, Sendable, Equatable {
    public var id: String
    public var created: String
    public var hostname: String
    /// The key the given password opened.
    public var current: Bool
}

/// Opens an encrypted repository's master keys with a password, once per process (scrypt
/// is deliberately slow) — or from the kernel keyring after `key unlock` — and manages its
/// key files. Thread-safe.
public final class Keyring: Sendable {
    public let repositoryPath: String
    public let storage: any RepositoryStorage
    public let password: [UInt8]?
    /// Whether keys that `key unlock` left in the kernel keyring open the repository (not
    /// for the `key` commands: they always prove the password).
    public let usesKeyCache: Bool
    private let state = Mutex<(keys: MasterKeys, keyID: String)?>(nil)
    /// The repository's config, once one was read (not before: the repository may not exist
    /// yet): whether it is encrypted, and its id for the kernel keyring.
    private let config = Mutex<RepositoryConfig?>(nil)
    /// How the master keys were opened: by the password, or from the kernel keyring.
    private let source = Mutex<String>("")

    public convenience init(repositoryPath: String, password: [UInt8]?) {
        self.init(storage: LocalStorage(root: repositoryPath), password: password)
    }

    public init(storage: any RepositoryStorage, password: [UInt8]?, usesKeyCache: Bool = true) {
        self.storage = storage
        self.repositoryPath = storage.location
        self.password = password
        self.usesKeyCache = usesKeyCache
    }

    /// "password", "kernel keyring", or "" before the keys are opened (for `--debug`).
    public var openedBy: String { source.withLock { $0 } }

    var keysPath: String { storage.describe(".store/keys") }

    /// The key files' names.
    private func keyNames() throws -> [String] {
        try storage.list(prefix: ".store/keys/").map { String($0.key.dropFirst(".store/keys/".count)) }.filter { !$0.contains("/") && !$0.contains(".tmp") }.sorted()
    }

    private func readKeyFile(_ name: String) throws -> KeyFile {
        try JSONDecoder().decode(KeyFile.self, from: Data(try storage.load(".store/keys/" + name)))
    }

    /// The repository's config, or its copy when the config is damaged; read once.
    private func readConfig() -> RepositoryConfig? {
        if let known = config.withLock({ $0 }) { return known }
        for file in ["config", "config.copy"] {
            if let c = try? Repository.readConfig(storage, ".store/" + file) {
                config.withLock { $0 = c }
                return c
            }
        }
        return nil
    }

    /// Whether the repository's config says it is encrypted (config or its copy).
    public var repositoryIsEncrypted: Bool {
        if let c = readConfig() { return c.encryption != "none" }
        return !((try? keyNames()) ?? []).isEmpty
    }

    /// The master keys, or nil for an unencrypted repository. Throws `permission` (exit 77)
    /// when no password was given or no key file opens with it.
    public func keysIfEncrypted() throws -> MasterKeys? {
        guard repositoryIsEncrypted else { return nil }
        return try unlock().keys
    }

    /// The master keys and the id of the key file the password opened.
    public func unlock() throws -> (keys: MasterKeys, keyID: String) {
        if let done = state.withLock({ $0 }) { return done }
        let names = try keyNames()
        if usesKeyCache, let repository = readConfig()?.id {
            for name in names {
                guard let file = try? readKeyFile(name), let sealed = Data(base64Encoded: file.data),
                    let material = KeyCache.lookup(repository: repository, keyID: file.id, sealed: Array(sealed))
                else { continue }
                return opened(MasterKeys(material), file.id, by: "kernel keyring")
            }
        }
        guard let password else {
            throw RepositoryError.key(path: repositoryPath, detail: "the repository is encrypted: give its password with --password-file, SNAPSHOT_PASSWORD_FILE or SNAPSHOT_PASSWORD (or unlock it for a while with `snapshot key unlock`)")
        }
        guard !names.isEmpty else {
            throw RepositoryError.corrupt(file: keysPath, detail: "an encrypted repository without key files")
        }
        for name in names {
            guard let file = try? readKeyFile(name),
                let material = Self.open(file, password: password)
            else { continue }
            return opened(MasterKeys(material), file.id, by: "password")
        }
        throw RepositoryError.key(path: repositoryPath, detail: "wrong password: no key in .store/keys opens with it")
    }

    private func opened(_ keys: MasterKeys, _ keyID: String, by: String) -> (keys: MasterKeys, keyID: String) {
        source.withLock { $0 = by }
        state.withLock { $0 = (keys, keyID) }
        return (keys, keyID)
    }

    /// `key unlock`: the master keys this password opens, kept in the kernel keyring for
    /// `seconds` (see `KeyCache`); returns the key file's id.
    public func unlockForSession(seconds: Double) throws -> String {
        let (keys, keyID) = try unlock()
        guard let repository = readConfig()?.id, let file = try? readKeyFile(keyID), let sealed = Data(base64Encoded: file.data) else {
            throw RepositoryError.corrupt(file: keysPath + "/" + keyID, detail: "the key file changed while it was read")
        }
        try KeyCache.store(repository: repository, keyID: keyID, sealed: Array(sealed), material: keys.material, seconds: seconds, path: repositoryPath)
        return keyID
    }

    /// `key forget`: drops what `key unlock` kept for this repository (every key file's);
    /// how many there were. Needs no password.
    public func forgetSession() throws -> Int {
        guard let repository = readConfig()?.id else { throw RepositoryError.notFound(path: repositoryPath) }
        return KeyCache.forget(repository: repository, keyIDs: try keyNames())
    }

    /// Drops a removed or replaced key file's cached keys.
    private func forgetCached(_ keyID: String) {
        if let repository = readConfig()?.id { _ = KeyCache.forget(repository: repository, keyIDs: [keyID]) }
    }

    /// scrypt parameters a key file may ask for: a forged one must not make the unlock take
    /// hours or gigabytes (N a power of two from 2^10 to 2^22, r ≤ 32, p ≤ 16, ≤ 1 GiB).
    static func acceptable(_ file: KeyFile) -> Bool {
        file.n >= 1 << 10 && file.n <= 1 << 22 && file.n & (file.n - 1) == 0 && (1...32).contains(file.r) && (1...16).contains(file.p)
            && 128 * file.r * file.n <= 1 << 30
    }

    public static func open(_ file: KeyFile, password: [UInt8]) -> [UInt8]? {
        guard file.kdf == "scrypt", acceptable(file), let salt = Data(base64Encoded: file.salt), let data = Data(base64Encoded: file.data),
            let wrap = Crypto.scrypt(password: password, salt: Array(salt), n: file.n, r: file.r, p: file.p),
            let material = Crypto.open(Array(data), key: wrap, context: "key"), material.count == 2 * Crypto.keySize
        else { return nil }
        return material
    }

    /// Writes a new key file for `password` holding `keys`; returns its id.
    static func writeKeyFile(keys: MasterKeys, password: [UInt8], in storage: any RepositoryStorage) throws -> String {
        let salt = Crypto.random(32)
        guard let wrap = Crypto.scrypt(password: password, salt: salt, n: KeyFile.defaultN, r: KeyFile.defaultR, p: KeyFile.defaultP) else {
            throw RepositoryError.io(path: storage.describe(".store/keys"), operation: "derive a key (scrypt)", errno: ENOMEM)
        }
        let id = String(BlobID.random().hex.prefix(16))
        let file = KeyFile(
            id: id, created: Timestamp.now().iso8601, hostname: POSIX.hostName(), kdf: "scrypt",
            n: KeyFile.defaultN, r: KeyFile.defaultR, p: KeyFile.defaultP,
            salt: Data(salt).base64EncodedString(), data: Data(Crypto.seal(keys.material, key: wrap, context: "key")).base64EncodedString())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try storage.save(".store/keys/" + id, Array(try encoder.encode(file)) + [0x0a])
        return id
    }

    /// New master keys and the first key file (`init --encryption aes-256-gcm`).
    static func create(in storage: any RepositoryStorage, password: [UInt8]) throws -> MasterKeys {
        let keys = MasterKeys(Crypto.random(2 * Crypto.keySize))
        _ = try writeKeyFile(keys: keys, password: password, in: storage)
        return keys
    }

    /// `key list`.
    public func list() throws -> [KeyInfo] {
        let current = try unlock().keyID
        return try keyNames().compactMap { name in
            guard let f = try? readKeyFile(name) else { return nil }
            return KeyInfo(id: f.id, created: f.created, hostname: f.hostname, current: f.id == current)
        }
    }

    /// `key add`: another password that opens the same keys; returns the new key's id.
    public func add(password newPassword: [UInt8]) throws -> String {
        try Self.writeKeyFile(keys: try unlock().keys, password: newPassword, in: storage)
    }

    /// `key remove ID`: never the key this password opened, never the last one.
    public func remove(id: String) throws {
        let current = try unlock().keyID
        guard id != current else { throw RepositoryError.key(path: keysPath + "/" + id, detail: "this is the key the given password opened; remove it with another password") }
        guard !id.contains("/"), !id.hasPrefix("."), try storage.exists(".store/keys/" + id) else {
            throw RepositoryError.snapshotNotFound(reference: id, detail: "no such key (see `snapshot key list`)")
        }
        try storage.remove(".store/keys/" + id)
        forgetCached(id)
    }

    /// `key passwd`: the key this password opened is replaced by one for `newPassword`.
    public func changePassword(to newPassword: [UInt8]) throws -> String {
        let (keys, current) = try unlock()
        let id = try Self.writeKeyFile(keys: keys, password: newPassword, in: storage)
        try storage.remove(".store/keys/" + current)
        forgetCached(current)
        return id
    }

    /// The password as given: `--password-file` / SNAPSHOT_PASSWORD_FILE (owner-only, the
    /// trailing newline stripped) or SNAPSHOT_PASSWORD; nil when none.
    public static func readPassword(file: String?, environment: [String: String]) throws -> [UInt8]? {
        if let file = file ?? environment["SNAPSHOT_PASSWORD_FILE"].flatMap({ $0.isEmpty ? nil : $0 }) {
            return try POSIX.readSecret(file, what: "the password file")
        }
        if let text = environment["SNAPSHOT_PASSWORD"], !text.isEmpty { return Array(text.utf8) }
        return nil
    }
}
