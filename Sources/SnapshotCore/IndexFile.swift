/// The byte format of index files: which blobs each pack holds (see docs/design.md, "Index").
public enum IndexFile {
    static let magic: [UInt8] = Array("SNIX".utf8)
    static let version: UInt32 = 1

    /// Encodes packs and their entries, followed by a SHA-256 of everything before it.
    public static func encode(_ packs: [(pack: BlobID, entries: [PackEntry])]) -> [UInt8] {
        var w = ByteWriter(capacity: 64 + packs.reduce(0) { $0 + 40 + $1.entries.count * 48 })
        w.raw(magic)
        w.u32(version)
        w.uvarint(UInt64(packs.count))
        for (pack, entries) in packs {
            w.id(pack)
            w.uvarint(UInt64(entries.count))
            for e in entries {
                w.id(e.id)
                w.u8(e.type.rawValue)
                w.uvarint(UInt64(e.offset))
                w.uvarint(UInt64(e.length))
                w.uvarint(UInt64(e.rawLength))
            }
        }
        let digest = BlobID.hash(w.bytes)
        w.id(digest)
        return w.bytes
    }

    /// Decodes an index file, checking its checksum first.
    public static func decode(_ bytes: [UInt8], file: String) throws -> [(pack: BlobID, entries: [PackEntry])] {
        guard bytes.count >= 8 + 32 else { throw RepositoryError.corrupt(file: file, detail: "truncated (\(bytes.count) bytes)") }
        let body = bytes.count - 32
        let stored = bytes[body...].withUnsafeBytes { BlobID(bytes: $0) }
        let actual = bytes.withUnsafeBytes { BlobID.hash(UnsafeRawBufferPointer(rebasing: $0[0..<body])) }
        guard stored == actual else { throw RepositoryError.corrupt(file: file, detail: "checksum mismatch (truncated or modified)") }
        var r = ByteReader(bytes)
        do {
            guard try r.raw(4) == magic else { throw CoreError.corrupt("not an index file") }
            let v = try r.u32()
            guard v == version else { throw CoreError.corrupt("index version \(v)") }
            let packCount = try r.count(max: r.remaining / 33)
            var out: [(pack: BlobID, entries: [PackEntry])] = []
            out.reserveCapacity(packCount)
            for _ in 0..<packCount {
                let pack = try r.id()
                let n = try r.count(max: r.remaining / 36)
                var entries: [PackEntry] = []
                entries.reserveCapacity(n)
                for _ in 0..<n {
                    let id = try r.id()
                    guard let type = BlobType(rawValue: try r.u8()) else { throw CoreError.corrupt("unknown blob type") }
                    let offset = try r.uvarint(), length = try r.uvarint(), raw = try r.uvarint()
                    guard offset <= UInt32.max, length <= UInt32.max, raw <= UInt32.max, length > 0 else {
                        throw CoreError.corrupt("entry \(id.short) out of range")
                    }
                    entries.append(PackEntry(id: id, type: type, offset: UInt32(offset), length: UInt32(length), rawLength: UInt32(raw)))
                }
                out.append((pack, entries))
            }
            return out
        } catch CoreError.corrupt(let detail) {
            throw RepositoryError.corrupt(file: file, detail: detail)
        }
    }
}
