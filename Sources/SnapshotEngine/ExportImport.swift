#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// Options of `export`.
public struct ExportOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String = ""
    public var output: String = ""
    /// age X25519 recipients (`age1…`) or files of them.
    public var recipient: [String] = []

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case snapshot, output, recipient }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public func validate() throws {
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
        guard !output.isEmpty else { throw EngineError.usage("--output FILE is required") }
        _ = try ArchiveFormat(name: output, encrypted: !recipient.isEmpty)
    }
}

/// What an archive is, by its name: `.tar.zst`, `.tar.gz` (`.tgz`) or `.tar`; with
/// recipients, a trailing `.age` is the encryption around one of those.
public enum ArchiveFormat: String, Sendable {
    case tarZstd = ".tar.zst", tarGzip = ".tar.gz", tar = ".tar"

    public init(name: String, encrypted: Bool) throws {
        var n = name.lowercased()
        if encrypted && n.hasSuffix(".age") { n.removeLast(4) }
        if n.hasSuffix(".tar.zst") || n.hasSuffix(".tzst") {
            self = .tarZstd
        } else if n.hasSuffix(".tar.gz") || n.hasSuffix(".tgz") {
            self = .tarGzip
        } else if n.hasSuffix(".tar") {
            self = .tar
        } else {
            throw EngineError.usage("\(name): the archive's name must end in .tar.zst, .tar.gz or .tar\(encrypted ? " (and may add .age)" : "")")
        }
    }
}

/// `export --json`: where the archive went and what it holds.
public struct ExportReport: Codable, Sendable, Equatable {
    public var snapshotID: String
    public var output: String
    public var format: String
    public var encrypted: Bool
    public var files: Int
    public var bytes: UInt64
    public var archiveBytes: UInt64

    enum CodingKeys: String, CodingKey {
        case output, format, encrypted, files, bytes
        case snapshotID = "snapshot_id"
        case archiveBytes = "archive_bytes"
    }
}

extension SnapshotService {
    /// Writes one snapshot as a self-contained archive anyone can open with tar: the
    /// directory `snapshot/` holding every component's files, its `metadata.json`, and
    /// `SHA256SUMS` (`sha256sum -c` format) over all of them. With recipients the archive is
    /// age-encrypted. Written under a temporary name and renamed when complete.
    public func export(_ options: ExportOptions, progress: WorkProgress = WorkProgress()) throws -> ExportReport {
        try options.validate()
        let format = try ArchiveFormat(name: options.output, encrypted: !options.recipient.isEmpty)
        let recipients = try Age.recipients(options.recipient)
        let output = POSIX.absolute(options.output, relativeTo: workingDirectory)
        // Before any work: the archive's directory is there and writable.
        guard access(POSIX.parent(of: output), W_OK) == 0 else { throw RepositoryError.fromErrno(path: output, operation: "create") }
        let (repository, lock) = try open(.shared, purpose: "export")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        let manifest = try catalog.readManifest(record)
        if repository.keys != nil && recipients.isEmpty {
            notice?("warning: \(options.output) holds the snapshot of an encrypted repository in the clear; give --recipient to encrypt it")
        }
        // Scratch inside the repository (its file system has the room the snapshot took),
        // unless it cannot be written (an object store, a read-only mount): then $TMPDIR,
        // named so that a later create removes it if this process dies.
        let inRepository = isLocal && access(repositoryPath + "/.store/tmp", W_OK) == 0
        let work = inRepository ? repositoryPath + "/.store/tmp/export-\(getpid())-\(record.id)" : POSIX.temporaryDirectory() + "/snapshot-\(getpid())-\(BlobID.random().short)"
        try POSIX.removeTree(work)
        try POSIX.makeDirectories(work, mode: RepositoryModes.storeDirectory)
        defer { try? POSIX.removeTree(work) }

        progress.phase = "restoring"
        let restored = try Restorer(repository: repository, progress: progress).restore(record, manifest: manifest, components: [], target: work + "/snapshot", verify: false)
        try POSIX.writeFileAtomically(work + "/snapshot/metadata.json", try record.metadata.jsonBytes() + [0x0a], mode: 0o644)
        progress.phase = "checksums"
        let sums = try Self.checksums(of: work + "/snapshot").flatMap { Self.checksumLine(digest: $0.digest, path: $0.path) }
        try POSIX.writeFileAtomically(work + "/snapshot/SHA256SUMS", sums, mode: 0o644)

        progress.phase = "archiving"
        let tar = work + "/snapshot.tar"
        try Self.run("tar --create --format=posix --numeric-owner --file \(Self.quote(tar)) -C \(Self.quote(work)) snapshot", what: "tar")
        var archive = tar
        switch format {
        case .tarZstd:
            archive = work + "/snapshot.tar.zst"
            try Compressor.compressFile(input: tar, output: archive, level: config.compressionLevel)
        case .tarGzip:
            archive = work + "/snapshot.tar.gz"
            try Self.run("gzip -n -c \(Self.quote(tar)) > \(Self.quote(archive))", what: "gzip")
        case .tar:
            break
        }
        let temporary = output + ".tmp-\(getpid())"
        defer { unlink(temporary) }
        if recipients.isEmpty {
            guard rename(archive, temporary) == 0 || Self.copy(archive, temporary) else { throw RepositoryError.fromErrno(path: output, operation: "create") }
        } else {
            progress.phase = "encrypting"
            try Age.encrypt(input: archive, output: temporary, recipients: recipients)
        }
        guard rename(temporary, output) == 0 else { throw RepositoryError.fromErrno(path: output, operation: "rename") }
        var st = stat()
        stat(output, &st)
        progress.phase = "done"
        return ExportReport(snapshotID: record.id, output: output, format: format.rawValue, encrypted: !recipients.isEmpty,
                            files: restored.files, bytes: restored.bytes, archiveBytes: UInt64(st.st_size))
    }

    /// Reads an archive made by `export`, checks every byte against its SHA256SUMS (and
    /// that nothing unlisted is there), and only then commits it as a new snapshot with the
    /// original's type, time, name (when still free) and tags, tagged `imported_from`.
    public func importArchive(_ file: String, progress: WorkProgress = WorkProgress()) throws -> SnapshotRecord {
        let path = POSIX.absolute(file, relativeTo: workingDirectory)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        let head = (try? POSIX.readUpTo(fd, 21, path: path)) ?? []
        close(fd)
        if head == Array("age-encryption.org/v1".utf8) {
            throw RepositoryError.corrupt(file: path, detail: "age-encrypted: decrypt it first (age -d -i KEYFILE \(file) > archive.tar.zst), then import that")
        }
        let format = try ArchiveFormat(name: path, encrypted: false)
        let (repository, lock) = try open(.exclusive, purpose: "import", createIfMissing: true)
        defer { lock.release() }
        let work = repositoryPath + "/.store/tmp/import-\(getpid())"
        try POSIX.removeTree(work)
        try POSIX.makeDirectories(work + "/x", mode: RepositoryModes.storeDirectory)
        defer { try? POSIX.removeTree(work) }

        progress.phase = "unpacking"
        var tar = path
        switch format {
        case .tarZstd:
            tar = work + "/archive.tar"
            try Compressor.decompressFile(input: path, output: tar)
        case .tarGzip:
            tar = work + "/archive.tar"
            try Self.run("gzip -d -c \(Self.quote(path)) > \(Self.quote(tar))", what: "gzip", damaged: path)
        case .tar:
            break
        }
        try Self.run("tar --extract --no-same-owner --no-overwrite-dir --file \(Self.quote(tar)) -C \(Self.quote(work + "/x"))", what: "tar", damaged: path)
        let root = work + "/x/snapshot"
        guard POSIX.isDirectory(root), try POSIX.listDirectory(work + "/x") == ["snapshot"] else {
            throw RepositoryError.corrupt(file: path, detail: "not an export: it must hold exactly one directory, snapshot/")
        }

        progress.phase = "verifying"
        let listed = try Self.parseChecksums(try POSIX.readFile(root + "/SHA256SUMS"), file: path)
        let found = try Self.checksums(of: root)
        let foundByPath = Dictionary(found.map { ($0.path, $0.digest) }, uniquingKeysWith: { a, _ in a })
        for (p, digest) in listed where foundByPath[p] != digest {
            throw RepositoryError.corrupt(file: path, detail: foundByPath[p] == nil ? "snapshot/\(p) is listed in SHA256SUMS but missing" : "snapshot/\(p) does not match its SHA-256 in SHA256SUMS")
        }
        if let extra = found.first(where: { listed[$0.path] == nil }) {
            throw RepositoryError.corrupt(file: path, detail: "snapshot/\(extra.path) is not listed in SHA256SUMS")
        }
        let metadata: SnapshotMetadata
        do {
            metadata = try JSONDecoder().decode(SnapshotMetadata.self, from: Data(try POSIX.readFile(root + "/metadata.json")))
        } catch {
            throw RepositoryError.corrupt(file: path, detail: "snapshot/metadata.json: \(error)")
        }
        guard let type = SnapshotType(metadata.type), let time = Timestamp(iso8601: metadata.timestamp) else {
            throw RepositoryError.corrupt(file: path, detail: "snapshot/metadata.json: bad type or timestamp")
        }
        let names = try POSIX.listDirectory(root).filter { POSIX.isDirectory(root + "/" + $0) }.sorted()
        guard Set(names) == Set(metadata.components.keys) else {
            throw RepositoryError.corrupt(file: path, detail: "the components in snapshot/ (\(names.joined(separator: ", "))) are not those metadata.json names")
        }
        progress.phase = "committing"
        let nameFree = metadata.name.isEmpty || ((try? catalog.all()) ?? []).allSatisfy { $0.metadata.name != metadata.name }
        var tags = metadata.tags
        tags["imported_from"] = POSIX.lastComponent(path)
        let sources = names.map { n in
            FileSource(name: n, path: root + "/" + n, kind: metadata.components[n]?.kind ?? .files, label: metadata.components[n]?.source ?? n)
        }
        var request = CreateRequest(type: type, name: nameFree ? metadata.name : "", time: time, tags: tags, sources: sources, compressionLevel: config.compressionLevel)
        request.workers = 2
        return try Archiver(repository: repository, progress: progress).create(request)
    }

    /// SHA-256 of every regular file below `root` except SHA256SUMS, by relative path.
    static func checksums(of root: String) throws -> [(path: String, digest: String)] {
        var out: [(String, String)] = []
        func walk(_ dir: String, _ rel: String) throws {
            for name in try POSIX.listDirectory(dir).sorted() {
                let p = dir + "/" + name, r = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard POSIX.lstat(p, &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: try walk(p, r)
                case S_IFREG where r != "SHA256SUMS": out.append((r, try BlobID.hashFile(p).hex))
                default: break
                }
            }
        }
        try walk(root, "")
        return out
    }

    /// One line of SHA256SUMS as `sha256sum` writes it: the name's own bytes (`FileName`),
    /// and a name holding a backslash, newline or carriage return escaped (`\\`, `\n`, `\r`)
    /// on a line that starts with a backslash.
    static func checksumLine(digest: String, path: String) -> [UInt8] {
        let name = FileName.bytes(path)
        guard name.contains(where: { $0 == 0x5C || $0 == 0x0A || $0 == 0x0D }) else { return Array("\(digest)  ".utf8) + name + [0x0A] }
        var line: [UInt8] = [0x5C] + Array("\(digest)  ".utf8)
        for b in name {
            switch b {
            case 0x5C: line += [0x5C, 0x5C]
            case 0x0A: line += [0x5C, 0x6E]
            case 0x0D: line += [0x5C, 0x72]
            default: line.append(b)
            }
        }
        return line + [0x0A]
    }

    /// SHA256SUMS read back (the format `checksumLine` writes, text or binary mode marks).
    static func parseChecksums(_ bytes: [UInt8], file: String) throws -> [String: String] {
        var out: [String: String] = [:]
        func bad() -> RepositoryError { .corrupt(file: file, detail: "snapshot/SHA256SUMS: a line is not `<sha256>  <path>`") }
        for var line in bytes.split(separator: 0x0A) {
            let escaped = line.first == 0x5C
            if escaped { line = line.dropFirst() }
            guard line.count > 66, line.prefix(64).allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
                  line.dropFirst(64).first == 0x20, [0x20, 0x2A].contains(line.dropFirst(65).first) else { throw bad() }
            var name: [UInt8] = []
            var rest = line.dropFirst(66)[...]
            while let b = rest.popFirst() {
                guard escaped && b == 0x5C else { name.append(b); continue }
                switch rest.popFirst() {
                case 0x5C: name.append(0x5C)
                case 0x6E: name.append(0x0A)
                case 0x72: name.append(0x0D)
                default: throw bad()
                }
            }
            out[FileName.decode(name)] = String(decoding: line.prefix(64), as: UTF8.self)
        }
        return out
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    static func copy(_ from: String, _ to: String) -> Bool {
        guard let bytes = try? POSIX.readFile(from) else { return false }
        return (try? POSIX.writeFileAtomically(to, bytes)) != nil
    }

    /// Runs a shell command line of tar or gzip; a failure names the tool and, when the
    /// input is what failed to read, the archive.
    static func run(_ command: String, what: String, damaged: String? = nil) throws {
        let out = try CommandCapture.run(command, timeout: 3600)
        guard out.status == 0 && !out.timedOut else {
            let text = String(decoding: out.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").first.map(String.init) ?? ""
            if let damaged { throw RepositoryError.corrupt(file: damaged, detail: "\(what): \(text)") }
            throw EngineError.componentFailed(component: what, detail: text)
        }
    }
}
