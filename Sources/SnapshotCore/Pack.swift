#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a blob holds.
public enum BlobType: UInt8, Sendable {
    case data = 0
    case tree = 1
    case manifest = 2
}

/// Where a blob lives: which pack, where in it, and how it is encoded.
public struct BlobLocation: Sendable, Equatable {
    public var pack: BlobID
    public var type: BlobType
    /// Offset of the entry (its header byte) in the pack.
    public var offset: UInt32
    /// Length of the entry: header byte plus payload.
    public var length: UInt32
    /// Length of the plaintext after decoding.
    public var rawLength: UInt32

    public init(pack: BlobID, type: BlobType, offset: UInt32, length: UInt32, rawLength: UInt32) {
        self.pack = pack
        self.type = type
        self.offset = offset
        self.length = length
        self.rawLength = rawLength
    }
}

/// One blob entry as recorded in a pack trailer and in index files.
public struct PackEntry: Sendable, Equatable {
    public var id: BlobID
    public var type: BlobType
    public var offset: UInt32
    public var length: UInt32
    public var rawLength: UInt32

    public init(id: BlobID, type: BlobType, offset: UInt32, length: UInt32, rawLength: UInt32) {
        self.id = id
        self.type = type
        self.offset = offset
        self.length = length
        self.rawLength = rawLength
    }
}

/// The byte format of pack files (see docs/design.md, "Packs").
public enum PackFormat {
    public static let magic: [UInt8] = Array("SNPK".utf8)
    public static let version: UInt32 = 1
    /// Entry header: low two bits are the compression (0 raw, 1 zstd, 2 float planes — in
    /// repositories of format version 2 or later —, 3 half planes — version 3 or later); bit
    /// 7 set means the payload (compressed or not) is sealed with AES-256-GCM: nonce,
    /// ciphertext, tag.
    public static let compressionRaw: UInt8 = 0
    public static let compressionZstd: UInt8 = 1
    public static let compressionPlanes: UInt8 = 2
    public static let compressionHalfPlanes: UInt8 = 3

    /// The lowest repository format version whose entries may use `codec`.
    public static func formatVersion(allowing codec: UInt8) -> Int {
        switch codec {
        case compressionPlanes: return 2
        case compressionHalfPlanes: return 3
        default: return 1
        }
    }
    public static let encrypted: UInt8 = 0x80
    public static let entrySize = 45
    /// Trailer footer: entry count, version, magic.
    public static let footerSize = 12

    static func encodeTrailer(_ entries: [PackEntry]) -> [UInt8] {
        var w = ByteWriter(capacity: entries.count * entrySize + footerSize + 32)
        for e in entries {
            w.u8(e.type.rawValue)
            w.id(e.id)
            w.u32(e.offset)
            w.u32(e.length)
            w.u32(e.rawLength)
        }
        let digest = BlobID.hash(w.bytes)
        w.id(digest)
        w.u32(UInt32(entries.count))
        w.u32(version)
        w.raw(magic)
        return w.bytes
    }

    /// Reads the trailer of a pack file: the list of its blobs (for rebuild-index and checks).
    public static func readTrailer(path: String) throws -> [PackEntry] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw RepositoryError.fromErrno(path: path, operation: "stat") }
        return try readTrailer(size: Int(st.st_size), file: path) { offset, count in try POSIX.pread(fd, count: count, offset: offset, path: path) }
    }

    /// The same from a pack of `size` bytes that `read(offset, count)` reads (an object store).
    public static func readTrailer(size: Int, file path: String, read: (Int, Int) throws -> [UInt8]) throws -> [PackEntry] {
        guard size >= footerSize + 32 else { throw RepositoryError.corrupt(file: path, detail: "too short for a pack") }
        var footer = ByteReader(try read(size - footerSize, footerSize))
        let count = Int(try footer.u32())
        let ver = try footer.u32()
        guard try footer.raw(4) == magic else { throw RepositoryError.corrupt(file: path, detail: "no pack trailer magic") }
        guard ver == version else { throw RepositoryError.corrupt(file: path, detail: "pack version \(ver)") }
        let trailerSize = count * entrySize
        guard trailerSize + 32 + footerSize <= size else { throw RepositoryError.corrupt(file: path, detail: "trailer larger than the pack") }
        let bytes = try read(size - footerSize - 32 - trailerSize, trailerSize + 32)
        let body = Array(bytes[0..<trailerSize])
        let stored = bytes[trailerSize...].withUnsafeBytes { BlobID(bytes: $0) }
        guard BlobID.hash(body) == stored else { throw RepositoryError.corrupt(file: path, detail: "pack trailer checksum mismatch") }
        var r = ByteReader(body)
        var entries: [PackEntry] = []
        do {
            for _ in 0..<count {
                guard let type = BlobType(rawValue: try r.u8()) else { throw CoreError.corrupt("unknown blob type") }
                entries.append(PackEntry(id: try r.id(), type: type, offset: try r.u32(), length: try r.u32(), rawLength: try r.u32()))
            }
        } catch CoreError.corrupt(let detail) {
            throw RepositoryError.corrupt(file: path, detail: detail)
        }
        return entries
    }
}

/// Appends blob entries to one new pack file. Not thread-safe: one per worker.
///
/// The pack is written under a temporary name and renamed to `data/<xx>/<id>` only after
/// its trailer is written and fsynced, so a pack that has a final name is always complete.
final class PackWriter {
    let id: BlobID
    let finalPath: String
    private let tmpPath: String
    private let file: DirectFileWriter?
    /// On an object store the pack is built in memory and saved whole by one request: an
    /// object appears complete or not at all.
    private let storage: (any RepositoryStorage)?
    private var memory: [UInt8] = []
    private(set) var entries: [PackEntry] = []

    var size: Int { file?.size ?? memory.count }

    init(storage: any RepositoryStorage) {
        id = BlobID.random()
        finalPath = Repository.packKey(id)
        tmpPath = ""
        file = nil
        self.storage = storage
        memory.reserveCapacity(BlobWriter.packTarget + (2 << 20))
    }

    /// - Parameter buffer: a 4 KiB aligned buffer (a multiple of 4 KiB), owned by the caller
    ///   and used until `finish()` or `discard()`.
    init(dataDirectory: String, buffer: UnsafeMutableRawBufferPointer) throws {
        id = BlobID.random()
        let hex = id.hex
        let dir = dataDirectory + "/" + hex.prefix(2)
        try POSIX.makeDirectories(dir, mode: RepositoryModes.storeDirectory)
        finalPath = dir + "/" + hex
        // Whose it is, so that the next writer removes it if this process dies mid-pack.
        tmpPath = finalPath + ".tmp-\(POSIX.hostName())-\(getpid())"
        file = try DirectFileWriter(path: tmpPath, mode: RepositoryModes.storeFile, extraFlags: O_EXCL, buffer: buffer)
        storage = nil
    }

    private func append(_ bytes: UnsafeRawBufferPointer) throws {
        if let file { try file.append(bytes) } else { memory.append(contentsOf: bytes) }
    }

    /// Appends one entry; `payload` is already compressed when `compression` says so.
    func add(id: BlobID, type: BlobType, compression: UInt8, payload: UnsafeRawBufferPointer, rawLength: Int) throws {
        let offset = size
        var header = compression
        try withUnsafeBytes(of: &header) { try append($0) }
        try append(payload)
        entries.append(PackEntry(id: id, type: type, offset: UInt32(offset), length: UInt32(payload.count + 1), rawLength: UInt32(rawLength)))
    }

    /// Whether `add(…encodingUpTo:)` can take a payload of up to `bound` bytes: a pack
    /// written to a file, whose buffer has the room.
    func encodesInPlace(upTo bound: Int) -> Bool {
        guard let file else { return false }
        return bound + 1 <= file.largestAppend
    }

    /// Appends one entry whose payload `encode` writes straight into the pack's write buffer
    /// (room for `bound` bytes) and whose length it returns; nil appends nothing and returns
    /// false (the caller stores the blob otherwise). Only where `encodesInPlace(upTo:)`.
    func add(id: BlobID, type: BlobType, compression: UInt8, rawLength: Int, encodingUpTo bound: Int,
             _ encode: (UnsafeMutableRawBufferPointer) -> Int?) throws -> Bool {
        precondition(encodesInPlace(upTo: bound))
        let offset = size
        let length = try file!.append(upTo: bound + 1) { space in
            guard let n = encode(UnsafeMutableRawBufferPointer(rebasing: space[1...])) else { return 0 }
            space[0] = compression
            return n + 1
        }
        guard length > 0 else { return false }
        entries.append(PackEntry(id: id, type: type, offset: UInt32(offset), length: UInt32(length), rawLength: UInt32(rawLength)))
        return true
    }

    /// Writes the trailer, fsyncs and renames the pack into place. The directory fsync is
    /// left to the caller, once for all packs of a commit.
    func finish() throws {
        try PackFormat.encodeTrailer(entries).withUnsafeBytes { try append($0) }
        if let storage {
            try storage.save(finalPath, memory)
            memory = []
            return
        }
        try file!.finish(sync: true)
        guard rename(tmpPath, finalPath) == 0 else { throw RepositoryError.fromErrno(path: finalPath, operation: "rename") }
    }

    /// Removes the unfinished pack (on error or cancellation).
    func discard() {
        if file != nil { unlink(tmpPath) }
        memory = []
    }
}
