import SnapshotCore
import Testing
import TestSupport

@Suite struct ChunkerTests {
    let scheme = ChunkingScheme.contentDefined(min: 16 << 10, average: 64 << 10, max: 256 << 10)

    func chunks(_ data: [UInt8], _ chunker: Chunker) -> [[UInt8]] {
        var out: [[UInt8]] = []
        data.withUnsafeBytes { raw in
            var start = 0
            while start < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[start...]))
                out.append(Array(raw[start..<start + n]))
                start += n
            }
        }
        return out
    }

    @Test func sizesStayWithinBoundsAndCoverTheInput() {
        let data = Fixture.bytes(4 << 20, seed: 7)
        let c = chunks(data, Chunker(scheme: scheme, seed: 1))
        #expect(c.flatMap { $0 } == data)
        for chunk in c.dropLast() {
            #expect(chunk.count >= 16 << 10 && chunk.count <= 256 << 10)
        }
        let average = data.count / c.count
        #expect(average > 32 << 10 && average < 128 << 10, "average \(average)")
    }

    @Test func anInsertionChangesOnlyNearbyChunks() {
        let data = Fixture.bytes(4 << 20, seed: 9)
        var edited = data
        edited.insert(contentsOf: [1, 2, 3, 4, 5], at: 2 << 20)
        let chunker = Chunker(scheme: scheme, seed: 3)
        let before = Set(chunks(data, chunker).map { BlobID.hash($0) })
        let after = chunks(edited, chunker).map { BlobID.hash($0) }
        let changed = after.filter { !before.contains($0) }.count
        #expect(changed <= 2, "\(changed) of \(after.count) chunks changed")
    }

    @Test func theSeedMovesBoundaries() {
        let data = Fixture.bytes(2 << 20, seed: 11)
        let a = chunks(data, Chunker(scheme: scheme, seed: 1)).map(\.count)
        let b = chunks(data, Chunker(scheme: scheme, seed: 2)).map(\.count)
        #expect(a != b)
        #expect(a == chunks(data, Chunker(scheme: scheme, seed: 1)).map(\.count))
    }

    @Test func fixedBlocksCutAtTheBlockSize() {
        let data = Fixture.bytes(200_000, seed: 1)
        let c = chunks(data, Chunker(scheme: .fixed(size: 65536), seed: 0)).map(\.count)
        #expect(c == [65536, 65536, 65536, 200_000 - 3 * 65536])
    }

    @Test func policyPicksFixedBlocksForVectorStorage() {
        #expect(ChunkingPolicy.standard.scheme(forFileNamed: "chunk_0.mmap") == .fixed(size: 32 << 10))
        #expect(ChunkingPolicy.standard.scheme(forFileNamed: "system.log") == ChunkingPolicy.standard.defaultScheme)
        #expect(ChunkingPolicy.version1.scheme(forFileNamed: "chunk_0.mmap") == .fixed(size: 64 << 10))
        #expect(ChunkingPolicy.version(1) == .version1 && ChunkingPolicy.version(2) == .standard)
    }
}
