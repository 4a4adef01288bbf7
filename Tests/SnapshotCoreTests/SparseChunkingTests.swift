#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
import Testing
import TestSupport

/// A sparse file's holes are not read, not searched for cuts and not hashed one by one,
/// and yet it is cut into exactly the chunks, with exactly the ids, that reading every byte
/// gives.
@Suite struct SparseChunkingTests {
    /// A 24 MiB file: a hole first, 3 MiB of random data at an odd offset (cut by the search
    /// in several places), 3 MiB of zeros written as data, a hole, a few bytes, and a hole to
    /// the end.
    func sparseFile(_ dir: TemporaryDirectory) -> String {
        let path = dir.sub("image")
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        func put(_ bytes: [UInt8], at offset: Int) {
            _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        }
        put(Fixture.bytes(3 << 20, seed: 3), at: (2 << 20) + 123)
        put([UInt8](repeating: 0, count: 3 << 20), at: 6 << 20)
        put(Array("a few bytes".utf8), at: (15 << 20) + 7)
        #expect(ftruncate(fd, 24 << 20) == 0)
        return path
    }

    /// Every chunk of `path` (bytes), cut as a create cuts a file: in batches, or one at a
    /// time (as a changed file is cut against its parent's cuts).
    func chunks(_ path: String, _ chunker: Chunker, sparse: Bool, oneByOne: Bool = false) throws -> [[UInt8]] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * chunker.scheme.maxSize, alignment: 4096)
        defer { buffer.deallocate() }
        var out: [[UInt8]] = []
        if oneByOne {
            try chunker.chunks(of: fd, path: path, buffer: buffer, sparse: sparse) { out.append(Array($0)) }
        } else {
            try chunker.chunkBatches(of: fd, path: path, buffer: buffer, sparse: sparse) { batch in out += batch.map { Array($0) } }
        }
        return out
    }

    @Test func holesAreCutAndHashedAsIfEveryByteWereRead() throws {
        let dir = TemporaryDirectory("snapshot-holes")
        let path = sparseFile(dir)
        var st = stat()
        #expect(stat(path, &st) == 0 && Int(st.st_blocks) * 512 < 8 << 20, "the file system keeps no holes here")
        let policy = ChunkingPolicy.standard
        let repositories = try TestRepository.plainAndEncrypted(in: dir)
        for scheme in [policy.defaultScheme, policy.fixedScheme] {
            let chunker = Chunker(scheme: scheme, seed: 0x5EED)
            let plain = try chunks(path, chunker, sparse: false), sparse = try chunks(path, chunker, sparse: true)
            #expect(plain.count == sparse.count && plain == sparse, "\(scheme): \(plain.map(\.count)) against \(sparse.map(\.count))")
            #expect(plain.reduce(0) { $0 + $1.count } == 24 << 20)
            #expect(try chunks(path, chunker, sparse: true, oneByOne: true) == plain)
            // The length every chunk inside a run of zeros gets is the one a cut finds.
            let zeros = [UInt8](repeating: 0, count: scheme.maxSize)
            #expect(zeros.withUnsafeBytes { chunker.cut($0) } == chunker.zeroRunLength)
            #expect(plain.filter { $0.count == chunker.zeroRunLength && $0.allSatisfy { $0 == 0 } }.count >= 3)
            for t in repositories {
                let ids = { (pieces: [[UInt8]], sparse: Bool) -> [BlobID] in
                    let buffers = pieces.map { p in UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer.allocate(byteCount: p.count, alignment: 1).initialized(from: p)) }
                    defer { buffers.forEach { $0.deallocate() } }
                    return sparse ? t.repository.blobIDs(ofSparse: buffers) : t.repository.blobIDs(of: buffers)
                }
                #expect(ids(plain, false) == ids(sparse, true), "encrypted: \(t.encrypted)")
                // A zero chunk beside a data chunk of another length, either way round.
                let zeros = [UInt8](repeating: 0, count: 1000), data = Fixture.bytes(3000, seed: 9)
                zeros.withUnsafeBytes { z in data.withUnsafeBytes { d in
                    #expect(t.repository.blobIDs(sparse: z, d) == (t.repository.blobID(z), t.repository.blobID(d)))
                    #expect(t.repository.blobIDs(sparse: d, z) == (t.repository.blobID(d), t.repository.blobID(z)))
                    #expect(t.repository.blobIDs(ofSparse: [z, d, z]) == [t.repository.blobID(z), t.repository.blobID(d), t.repository.blobID(z)])
                } }
                // One or two at a time, as a changed file's chunks are hashed.
                for i in stride(from: 0, to: plain.count - 1, by: 2) {
                    plain[i].withUnsafeBytes { a in plain[i + 1].withUnsafeBytes { b in
                        let (x, y) = t.repository.blobIDs(sparse: a, b)
                        #expect(x == t.repository.blobID(a) && y == t.repository.blobID(b))
                        #expect(t.repository.blobID(sparse: a) == t.repository.blobID(a))
                    } }
                }
                #expect(t.repository.zeroBlobID(length: 4096) == t.repository.blobID([UInt8](repeating: 0, count: 4096)))
            }
        }
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Copies `bytes` in and returns self.
    fileprivate func initialized(from bytes: [UInt8]) -> UnsafeMutableRawBufferPointer {
        bytes.withUnsafeBytes { copyMemory(from: $0) }
        return self
    }
}
